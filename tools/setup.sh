#!/usr/bin/env bash
# Makes a Debian 12 machine ready for ember and builds it (the `release` preset).
#
#   tools/setup.sh [--with-data] [--with-fuzz] [--with-pytorch] [--no-build]
#
# It installs only what is missing. As root it runs apt-get itself; otherwise it prints
# the exact apt-get line to run and stops. Nothing is downloaded but Debian packages.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Build and test: the C and C++ compilers (the C API is tested from C) and CMake, oneDNN 2.6
# (its CMake package needs the OpenCL headers it only recommends), xsimd 8.1, GoogleTest,
# Google Benchmark, zlib, nlohmann-json, pkg-config (the install test builds the README's
# embedding example with it); OpenBLAS (its OpenMP flavour, found with pkg-config) is
# gemm_bench's second reference; ccache (the build uses it when present) makes the four
# presets of tools/test.sh and repeated runs cheap.
packages=(gcc g++ cmake make python3 libdnnl-dev ocl-icd-opencl-dev libxsimd-dev libgtest-dev libbenchmark-dev zlib1g-dev
          nlohmann-json3-dev pkgconf libopenblas-dev libopenblas-openmp-dev ccache)
build=1
for argument in "$@"; do
  case "$argument" in
    --with-data) packages+=(dataset-fashion-mnist) ;;
    # The fuzz preset: clang and its libFuzzer/sanitizer runtimes.
    --with-fuzz) packages+=(clang libclang-rt-14-dev) ;;
    # The PyTorch reference at its best: OpenBLAS (not netlib) and jemalloc.
    --with-pytorch) packages+=(python3 python3-torch python3-numpy libopenblas0-openmp libjemalloc2) ;;
    --no-build) build=0 ;;
    *) echo "setup.sh: unknown option $argument (known: --with-data --with-fuzz --with-pytorch --no-build)" >&2; exit 2 ;;
  esac
done

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} > 0)); then
  if [[ ${EMBER_SETUP_DRY_RUN:-0} == 1 ]]; then
    echo "would install: ${missing[*]}"
    exit 0
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "ember needs these Debian packages; run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ((build)); then
  cd "$root"
  cmake --preset release >/dev/null
  cmake --build --preset release -j"$(nproc)"
fi
