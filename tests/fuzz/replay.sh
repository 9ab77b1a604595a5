#!/usr/bin/env bash
# Runs a fuzz target once over every file of the given folders (its committed corpus and
# regressions); fails if any input crashes it. Missing folders count as empty.
#
#   replay.sh FUZZER FOLDER...
set -euo pipefail
fuzzer=$1
shift
inputs=()
for folder in "$@"; do
  [[ -d $folder ]] || continue
  while IFS= read -r -d '' file; do inputs+=("$file"); done < <(find "$folder" -type f ! -name '.*' -print0 | sort -z)
done
if ((${#inputs[@]} == 0)); then
  echo "replay.sh: no inputs in $*" >&2
  exit 1
fi
echo "replay.sh: $(basename "$fuzzer") over ${#inputs[@]} inputs"
# Files as arguments: libFuzzer runs each once and exits non-zero on the first crash.
exec "$fuzzer" -rss_limit_mb=4096 "${inputs[@]}"
