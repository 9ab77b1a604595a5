#!/usr/bin/env bash
# Seed-CNN training throughput, ember vs PyTorch, on the same real Fashion-MNIST batches,
# interleaved (ember, torch, ember, torch, ...) so a noisy machine hurts both alike.
#
#   bench/compare_train.sh [rounds] [batch]      (defaults: 5 rounds, batch 64)
#
# Needs a release build (tools/setup.sh) and the PyTorch reference
# (tools/setup.sh --with-pytorch). PyTorch runs with jemalloc preloaded and OpenBLAS.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${1:-5}
batch=${2:-64}
ember="$root/build/release/ember"
# shellcheck source=bench/common.sh
source "$root/bench/common.sh"
[[ -x $ember ]] || { echo "no $ember: run tools/setup.sh first" >&2; exit 1; }
[[ -f $jemalloc ]] || { echo "no $jemalloc: run tools/setup.sh --with-pytorch" >&2; exit 1; }


echo "| threads | ember img/s | PyTorch img/s | ember / PyTorch |"
echo "|---:|---:|---:|---:|"
for threads in 1 2; do
  ember_runs=() torch_runs=()
  for ((round = 0; round < rounds; ++round)); do
    ember_runs+=("$("$ember" bench --model seed-cnn --training --data fashion-mnist --batch-size "$batch" --steps 50 --warmup 5 \
      --threads "$threads" --json | field img_per_s)")
    line=$(LD_PRELOAD=$jemalloc /usr/bin/python3 "$root/bench/pytorch_train.py" --threads "$threads" --batch-size "$batch")
    torch_runs+=("$(echo "$line" | field img_per_s)")
  done
  e=$(printf '%s\n' "${ember_runs[@]}" | median)
  t=$(printf '%s\n' "${torch_runs[@]}" | median)
  printf '| %d | %.0f | %.0f | %.2f |\n' "$threads" "$e" "$t" "$(echo "$e / $t" | bc -l)"
done
echo
echo "PyTorch: $(echo "$line" | field torch), BLAS $(echo "$line" | field blas), allocator $(echo "$line" | field allocator)"
