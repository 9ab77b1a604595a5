#!/usr/bin/env bash
# Makes a Debian 12 machine ready for ember and builds it (the `release` preset).
#
#   tools/setup.sh [--with-data] [--with-fuzz] [--with-pytorch] [--with-peers[=torch]] [--no-build]
#
# It installs only what is missing. As root it runs apt-get itself; otherwise it prints
# the exact apt-get line to run and stops. Nothing is downloaded but Debian packages, except
# with --with-peers: the serving comparison's peers (bench/compare_serving.sh) come from
# PyPI, into their own virtual environment, build/peers-venv (or $EMBER_PEERS_VENV):
# onnxruntime, openvino and numpy only, never anything the build uses. It is reused when
# it is there and imports them. --with-peers=torch also installs PyPI's newest torch there
# (several GB with its CUDA libraries) as a second training peer for bench/compare.sh
# --torch-python build/peers-venv/bin/python. --with-peers implies --with-pytorch: the
# models are exported to ONNX with Debian's PyTorch.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Build and test: the C and C++ compilers (the C API is tested from C) and CMake, oneDNN 2.6
# (its CMake package needs the OpenCL headers it only recommends), xsimd 8.1, GoogleTest,
# Google Benchmark, zlib, libpng and libjpeg-turbo (image-folder datasets), nlohmann-json,
# pkg-config (the install test builds the README's embedding example with it); OpenBLAS
# (its OpenMP flavour, found with pkg-config) is gemm_bench's second reference; ccache (the
# build uses it when present) makes the four presets of tools/test.sh and repeated runs cheap. pybind11, the interpreter's headers,
# numpy and pytest: the Python module (python/) and its tests. ONNX 1.12 and protobuf give
# `ember export` / `ember import` (optional at configure time: EMBER_ONNX); python3-onnx is
# the tests' second checker of exported files. Open MPI (libopenmpi-dev, and mpirun from
# openmpi-bin) builds data-parallel training (EMBER_MPI) and runs its tests.
packages=(gcc g++ cmake make python3 libdnnl-dev ocl-icd-opencl-dev libxsimd-dev libgtest-dev libbenchmark-dev zlib1g-dev
          nlohmann-json3-dev pkgconf libopenblas-dev libopenblas-openmp-dev ccache libpng-dev libjpeg62-turbo-dev
          pybind11-dev python3-dev python3-numpy python3-pytest libonnx-dev libprotobuf-dev python3-onnx
          libopenmpi-dev openmpi-bin)
build=1
peers=""
for argument in "$@"; do
  case "$argument" in
    --with-data) packages+=(dataset-fashion-mnist) ;;
    # The fuzz preset: clang and its libFuzzer/sanitizer runtimes.
    --with-fuzz) packages+=(clang libclang-rt-14-dev) ;;
    # The PyTorch reference at its best: OpenBLAS (not netlib) and jemalloc.
    --with-pytorch) packages+=(python3 python3-torch python3-numpy libopenblas0-openmp libjemalloc2) ;;
    # The serving peers' venv needs python3-venv; the ONNX export needs the PyTorch reference.
    --with-peers | --with-peers=torch)
      packages+=(python3 python3-venv python3-torch python3-numpy libopenblas0-openmp libjemalloc2)
      peers=${argument#--with-peers}; peers=${peers#=}; peers=${peers:-onnx} ;;
    --no-build) build=0 ;;
    *) echo "setup.sh: unknown option $argument (known: --with-data --with-fuzz --with-pytorch --with-peers[=torch] --no-build)" >&2
       exit 2 ;;
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
  # `import ember` from Debian's python3 without installing: a .pth file in its site
  # directory names the build tree's package (what pip's editable installs do);
  # `cmake --install` puts a copy in the same place instead.
  if [[ -d $root/build/release/python/ember ]]; then
    site=$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    if [[ -w $site ]] || { [[ ! -e $site ]] && [[ $(id -u) -eq 0 ]]; }; then
      mkdir -p "$site"
      echo "$root/build/release/python" >"$site/ember-build-tree.pth"
      echo "python3: import ember reads $root/build/release/python ($site/ember-build-tree.pth)"
    else
      echo "python3: for import ember, export PYTHONPATH=$root/build/release/python (or run setup.sh as root)"
    fi
  fi
fi

if [[ -n $peers ]]; then
  venv=${EMBER_PEERS_VENV:-$root/build/peers-venv}
  modules=onnxruntime,openvino,numpy
  wheels=(onnxruntime openvino numpy)
  if [[ $peers == torch ]]; then modules+=,torch; wheels+=(torch); fi
  if [[ -x $venv/bin/python ]] && "$venv/bin/python" -c "import $modules" 2>/dev/null; then
    echo "peers venv: $venv (reused)"
  elif [[ ${EMBER_SETUP_DRY_RUN:-0} == 1 ]]; then
    echo "would make $venv: pip install ${wheels[*]}"
  else
    echo "peers venv: $venv (pip install ${wheels[*]} from PyPI)"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "${wheels[@]}"
    "$venv/bin/python" -c "import $modules"
  fi
fi
