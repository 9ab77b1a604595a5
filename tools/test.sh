#!/usr/bin/env bash
# README command 2 (and CI's): install what is missing, build, run the whole test suite.
#
#   tools/test.sh [--sanitizers]
#   tools/test.sh --fuzz [SECONDS]
#
# --sanitizers also builds and runs the asan (ASan+UBSan) and tsan presets.
# --fuzz builds the fuzz preset (clang, libFuzzer), replays every committed fuzz input
# (ctest --preset fuzz), then runs each target for SECONDS (default 60) and prints its
# executions, executions per second and edge coverage; nothing else is run. New inputs
# collect in build/fuzz/corpus/<target>, crashing ones in build/fuzz/artifacts/<target>
# (a finding's input belongs in tests/fuzz/regressions/<target>/ once understood).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sanitizers=0
fuzz_seconds=
while (($# > 0)); do
  case "$1" in
    --sanitizers) sanitizers=1 ;;
    --fuzz)
      fuzz_seconds=60
      if [[ ${2:-} =~ ^[0-9]+$ ]]; then fuzz_seconds=$2; shift; fi
      ((fuzz_seconds > 0)) || { echo "test.sh: --fuzz SECONDS must be positive" >&2; exit 2; } ;;
    *) echo "test.sh: unknown option $1 (known: --sanitizers, --fuzz [SECONDS])" >&2; exit 2 ;;
  esac
  shift
done

run_fuzzers() {
  if ! command -v clang++ >/dev/null || ! compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null; then
    echo "test.sh --fuzz needs clang and libFuzzer; run:" >&2
    echo "  sudo apt-get install -y --no-install-recommends clang libclang-rt-14-dev" >&2
    exit 1
  fi
  cd "$root"
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
  cmake --preset fuzz >/dev/null
  cmake --build --preset fuzz -j"$(nproc)"
  local failed=() summary=()
  # A failing replay is reported at the end; the fuzzing still runs.
  ctest --preset fuzz || failed+=("corpus-replay")
  for fuzzer in build/fuzz/fuzzers/ember_fuzz_*; do
    local name=${fuzzer##*/ember_fuzz_} log
    log=build/fuzz/logs/$name.log
    mkdir -p "build/fuzz/corpus/$name" "build/fuzz/artifacts/$name" build/fuzz/logs
    echo "fuzzing $name for ${fuzz_seconds} s"
    # The first folder receives new inputs; the committed corpus is only read. The
    # regressions are left to the replay: one not yet fixed would end the run at once.
    local status=0
    "$fuzzer" -max_total_time="$fuzz_seconds" -print_final_stats=1 -dict=tests/fuzz/ember.dict \
      -rss_limit_mb=4096 -timeout=60 -artifact_prefix="build/fuzz/artifacts/$name/" \
      "build/fuzz/corpus/$name" "tests/fuzz/corpus/$name" >"$log" 2>&1 || status=$?
    local runs rate cov
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
    summary+=("$(printf '%-16s %12s %10s %8s  %s' "$name" "${runs:-?}" "${rate:-?}" "${cov:-?}" \
                 "$( ((status == 0)) && echo ok || echo "FAILED (exit $status, see $log)")")")
    ((status == 0)) || failed+=("$name")
  done
  printf '\n%-16s %12s %10s %8s\n' target executions "exec/s" "cov" 
  printf '%s\n' "${summary[@]}"
  if ((${#failed[@]} > 0)); then
    echo "fuzz findings in: ${failed[*]} (inputs in build/fuzz/artifacts/)" >&2
    exit 1
  fi
}

if [[ -n $fuzz_seconds ]]; then
  run_fuzzers
  exit 0
fi

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
