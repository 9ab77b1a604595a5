#!/usr/bin/env bash
# README command 2 (and CI's): install what is missing, build, run the whole test suite.
#
#   tools/test.sh                  everything CI runs, in this order:
#                                    release  the GoogleTest suites, C API, install and memory tests
#                                    asan     the same suites under AddressSanitizer + UBSan
#                                    tsan     the inference session's tests under ThreadSanitizer
#                                    fuzz     every committed fuzz input replayed, then each
#                                             libFuzzer target for a short run (15 s)
#   tools/test.sh --quick          the release suites only
#   tools/test.sh --fuzz [SECONDS] only the fuzzing, each target for SECONDS (default 60)
#
# Fuzzing prints each target's executions, executions per second and edge coverage. New
# inputs collect in build/fuzz/corpus/<target>, crashing ones in build/fuzz/artifacts/<target>
# (a finding's input belongs in tests/fuzz/regressions/<target>/ once understood).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=all
fuzz_seconds=15
while (($# > 0)); do
  case "$1" in
    --quick) mode=quick ;;
    --fuzz)
      mode=fuzz
      fuzz_seconds=60
      if [[ ${2:-} =~ ^[0-9]+$ ]]; then fuzz_seconds=$2; shift; fi
      ((fuzz_seconds > 0)) || { echo "test.sh: --fuzz SECONDS must be positive" >&2; exit 2; } ;;
    *) echo "test.sh: unknown option $1 (known: --quick, --fuzz [SECONDS])" >&2; exit 2 ;;
  esac
  shift
done

step_started=$SECONDS
say_step() {
  echo "== test.sh: $1 ($((SECONDS - step_started)) s since the last step)"
  step_started=$SECONDS
}

# ctest, with its pass and fail counts added to the totals printed at the end.
passed=0
failed_tests=0
run_ctest() {
  local log status=0
  log=$(mktemp)
  ctest "$@" 2>&1 | tee "$log" || status=$?
  local line
  line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -1 || true)
  rm -f "$log"
  if [[ -n $line ]]; then
    local total failures
    failures=$(sed -E 's/.* ([0-9]+) tests failed.*/\1/' <<<"$line")
    total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
    passed=$((passed + total - failures))
    failed_tests=$((failed_tests + failures))
  fi
  return "$status"
}

run_preset() {  # configure, build and test one preset
  local preset=$1
  say_step "$preset: configure and build"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j"$(nproc)"
  say_step "$preset: test"
  run_ctest --preset "$preset" -j"$(nproc)"
}

run_fuzzers() {
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
  say_step "fuzz: configure and build"
  cmake --preset fuzz >/dev/null
  cmake --build --preset fuzz -j"$(nproc)"
  local failed=() summary=()
  say_step "fuzz: replay the committed inputs"
  # A failing replay is reported at the end; the fuzzing still runs.
  run_ctest --preset fuzz || failed+=("corpus-replay")
  for fuzzer in build/fuzz/fuzzers/ember_fuzz_*; do
    local name=${fuzzer##*/ember_fuzz_} log
    log=build/fuzz/logs/$name.log
    mkdir -p "build/fuzz/corpus/$name" "build/fuzz/artifacts/$name" build/fuzz/logs
    echo "fuzzing $name for ${fuzz_seconds} s"
    # The first folder receives new inputs; the committed corpus is only read. The
    # regressions are left to the replay.
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
    return 1
  fi
}

setup_options=(--with-data)
[[ $mode == quick ]] || setup_options+=(--with-fuzz)
bash "$root/tools/setup.sh" "${setup_options[@]}"
cd "$root"

if [[ $mode == fuzz ]]; then
  run_fuzzers
  echo "fuzz replay: $passed passed, $failed_tests failed"
  exit 0
fi

say_step "release: test (built by setup.sh)"
run_ctest --preset release -j"$(nproc)"
if [[ $mode == all ]]; then
  run_preset asan
  run_preset tsan
  run_fuzzers
fi
say_step "done"
echo "all presets: $passed passed, $failed_tests failed"
