#!/usr/bin/env bash
# Data-parallel training over MPI (engine/distributed.h), on loopback only.
#
#   check_mpi_training.sh EMBER MPIEXEC WORK_DIR bitwise|batch-norm|resume|killed|stalled
#
# bitwise: checkpoints and printed numbers of mpirun -np 1, 2, 3 (1 and 2 threads each)
#          equal one process's, bitwise; the last batch leaves rank 2 without a lane.
# batch-norm: resnet (batch statistics: sync points inside the step) on 2 and 3 ranks.
# resume:  an epoch with 2 ranks, resumed with 3 for a second: one process's two epochs.
# killed:  a rank killed mid-run ends the run with an error, not a hang; the checkpoint
#          written before is intact.
# stalled: a rank stopped (SIGSTOP) mid-run: the others give up after --mpi-timeout with
#          a message naming it.
# Exits 77 (skipped) without Fashion-MNIST.
set -euo pipefail
ember=$1 mpiexec=$2 work=$3 check=$4
[[ -d /usr/share/datasets/fashion-mnist ]] || { echo "Fashion-MNIST not installed: skipped"; exit 77; }
rm -rf "$work" && mkdir -p "$work" && cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mpirun=("$mpiexec" --mca btl self,tcp --mca btl_tcp_if_include lo)
# 176 samples in batches of 48: three of 3 micro-batches, the last of 2 (32 = 16 + 16).
run=(train --model seed-cnn --train-limit 176 --test-limit 100 --batch-size 48 --micro-batch 16 --seed 7)

fail() { echo "FAIL: $*"; exit 1; }
# The epoch lines without the throughput and times.
numbers() { grep -o 'train loss .* | test loss [0-9.]* acc [0-9.]*%' "$1"; }

case $check in
bitwise)
  "$ember" "${run[@]}" --threads 1 --save one.st > one.txt
  for ranks in 1 2 3; do
    for threads in 1 2; do
      name=r${ranks}t$threads
      "${mpirun[@]}" -np "$ranks" "$ember" "${run[@]}" --threads "$threads" --save "$name.st" > "$name.txt" 2>&1 ||
        { cat "$name.txt"; fail "$name exited with an error"; }
      cmp one.st "$name.st" || fail "$ranks ranks x $threads threads: the checkpoint differs from one process's"
      [[ "$(numbers one.txt)" == "$(numbers "$name.txt")" ]] ||
        fail "$ranks ranks x $threads threads printed $(numbers "$name.txt"), one process $(numbers one.txt)"
      echo "$ranks ranks x $threads threads: checkpoint and printed numbers bitwise one process's"
    done
  done
  ;;
batch-norm)
  bn=(train --model resnet --train-limit 96 --test-limit 32 --batch-size 48 --micro-batch 16 --max-steps 2 --seed 7)
  "$ember" "${bn[@]}" --threads 1 --save one.st > one.txt
  for setting in "2 1" "3 2"; do
    read -r ranks threads <<< "$setting"
    "${mpirun[@]}" -np "$ranks" "$ember" "${bn[@]}" --threads "$threads" --save many.st > many.txt 2>&1 ||
      { cat many.txt; fail "resnet on $ranks ranks"; }
    cmp one.st many.st || fail "resnet on $ranks ranks x $threads threads: the checkpoint differs from one process's"
    [[ "$(numbers one.txt)" == "$(numbers many.txt)" ]] || fail "resnet on $ranks ranks printed other numbers"
    echo "resnet, $ranks ranks x $threads threads: checkpoint (running statistics included) bitwise one process's"
  done
  ;;
resume)
  "$ember" "${run[@]}" --epochs 2 --threads 1 --save one.st > one.txt
  "${mpirun[@]}" -np 2 "$ember" "${run[@]}" --epochs 1 --threads 1 --save many.st > first.txt 2>&1 || { cat first.txt; fail "2 ranks"; }
  "${mpirun[@]}" -np 3 "$ember" "${run[@]}" --epochs 2 --threads 1 --save many.st --resume many.st > second.txt 2>&1 ||
    { cat second.txt; fail "resumed with 3 ranks"; }
  cmp one.st many.st || fail "an epoch on 2 ranks then one on 3 differs from two epochs in one process"
  echo "2 ranks, resumed on 3: bitwise one process's two epochs"
  ;;
killed | stalled)
  # Long enough never to finish; a checkpoint every step.
  long=(train --model seed-cnn --train-limit 60000 --test-limit 100 --batch-size 64 --epochs 5 --threads 1
        --save last.st --save-every 1 --mpi-timeout 5)
  "${mpirun[@]}" -np 2 "$ember" "${long[@]}" > run.txt 2>&1 &
  launcher=$!
  for _ in $(seq 600); do [[ -s last.st ]] && break; sleep 0.1; done
  [[ -s last.st ]] || { kill "$launcher"; fail "no checkpoint within 60 s"; }
  victim=""
  for child in $(pgrep -P "$launcher"); do
    grep -qz '^OMPI_COMM_WORLD_RANK=1$' "/proc/$child/environ" 2>/dev/null && victim=$child
  done
  [[ -n "$victim" ]] || { kill "$launcher"; fail "rank 1's process not found among mpirun's children"; }
  if [[ $check == killed ]]; then kill -KILL "$victim"; else kill -STOP "$victim"; fi
  started=$SECONDS
  for _ in $(seq 600); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$launcher" 2>/dev/null; then
    kill -CONT "$victim" 2>/dev/null || true
    kill "$launcher"
    fail "the run still hangs 60 s after rank 1 was ${check}"
  fi
  status=0
  wait "$launcher" || status=$?
  echo "mpirun exited with $status $((SECONDS - started)) s after rank 1 was $check"
  ((status != 0)) || fail "the run ended without an error"
  if [[ $check == stalled ]]; then
    grep -q 'did not complete within 5 s (--mpi-timeout)' run.txt || { cat run.txt; fail "no message naming the timeout"; }
  fi
  # Written atomically by rank 0: whatever was last renamed into place loads.
  "$ember" eval --checkpoint last.st --limit 100 --threads 1 > eval.txt || fail "the last checkpoint does not load"
  echo "the last checkpoint is intact: $(grep -m1 -i 'accuracy' eval.txt)"
  ;;
*) fail "unknown check $check" ;;
esac
