#!/usr/bin/env bash
# README command 2 (and CI's): install what is missing, build, run the whole test suite.
#
#   tools/test.sh [--sanitizers]
#
# --sanitizers also builds and runs the asan (ASan+UBSan) and tsan presets.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sanitizers=0
for argument in "$@"; do
  case "$argument" in
    --sanitizers) sanitizers=1 ;;
    *) echo "test.sh: unknown option $argument (known: --sanitizers)" >&2; exit 2 ;;
  esac
done

bash "$root/tools/setup.sh" --with-data
cd "$root"
ctest --preset release -j"$(nproc)"

if ((sanitizers)); then
  for preset in asan tsan; do
    cmake --preset "$preset" >/dev/null
    cmake --build --preset "$preset" -j"$(nproc)"
    ctest --preset "$preset" -j"$(nproc)"
  done
fi
