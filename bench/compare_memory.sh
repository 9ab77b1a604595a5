#!/usr/bin/env bash
# Peak memory of training the seed CNN (Adam, cross-entropy, synthetic batch), ember vs
# PyTorch, side by side: the peak resident memory each adds above its baseline.
#
#   bench/compare_memory.sh [batch] [steps]      (defaults: batch 256, 5 steps)
#
# Baselines (tests/memory/step_memory_probe.cpp, bench/pytorch_memory.py): the process with its
# libraries loaded and the synthetic batch made, before any model exists ("cold"); "warm"
# also after one training step of a throwaway model on one sample per thread (OpenMP
# threads started, kernels generated once), with freed memory given back. Each figure is
# the median of 3 runs. The target is ember <= 0.5x PyTorch.
# EMBER_BUILD overrides the build directory (default build/release, tools/setup.sh's).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
batch=${1:-256}
steps=${2:-5}
probe="${EMBER_BUILD:-$root/build/release}/tests/ember_step_memory_probe"
# shellcheck source=bench/common.sh
source "$root/bench/common.sh"
[[ -x $probe ]] || { echo "no $probe: run tools/setup.sh first" >&2; exit 1; }
[[ -f $jemalloc ]] || { echo "no $jemalloc: run tools/setup.sh --with-pytorch" >&2; exit 1; }


echo "| threads | baseline | ember MiB | PyTorch MiB | ember / PyTorch | ember estimate MiB |"
echo "|---:|---|---:|---:|---:|---:|"
for threads in 1 2; do
  for baseline in cold warm; do
    ember_flag=--cold torch_flag=
    [[ $baseline == warm ]] && ember_flag= torch_flag=--warm
    ember_runs=() torch_runs=()
    for round in 1 2 3; do
      line=$("$probe" --threads "$threads" --batch "$batch" --steps "$steps" --tolerance 0 --json $ember_flag)
      ember_runs+=("$(echo "$line" | field peak_above_baseline_mib)")
      estimate=$(echo "$line" | field estimate_mib)
      torch_line=$(LD_PRELOAD=$jemalloc /usr/bin/python3 "$root/bench/pytorch_memory.py" --threads "$threads" \
        --batch-size "$batch" --steps "$steps" $torch_flag)
      torch_runs+=("$(echo "$torch_line" | field peak_above_baseline_mib)")
    done
    e=$(printf '%s\n' "${ember_runs[@]}" | median)
    t=$(printf '%s\n' "${torch_runs[@]}" | median)
    printf '| %d | %s | %.1f | %.1f | %.2f | %.1f |\n' "$threads" "$baseline" "$e" "$t" \
      "$(echo "$e / $t" | bc -l)" "$estimate"
  done
done
echo
echo "seed-cnn, Adam, batch $batch, $steps steps; PyTorch $(echo "$torch_line" | field torch), BLAS $(echo "$torch_line" | field blas), allocator $(echo "$torch_line" | field allocator)"
