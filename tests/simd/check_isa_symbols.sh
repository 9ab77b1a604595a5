#!/usr/bin/env bash
# The per-instruction-set kernel objects must not define any shared (weak or COMDAT)
# symbol that is not specific to their instruction set: the linker keeps one copy of such
# a symbol for the whole program, and if it keeps the AVX-512 copy of, say, std::fill,
# every caller dies with an illegal instruction on a CPU without AVX-512.
#
#   check_isa_symbols.sh --families N OBJECT...    (the objects of the ember_simd library)
#
# N is the number of kernel families: exactly N AVX2 and N AVX-512 objects must be
# inspected, so a list that arrives unsplit or a renamed object cannot pass by checking
# nothing. Objects may also come as one ';'-joined argument (a CMake list).
set -euo pipefail
if [[ ${1:-} != --families || -z ${2:-} ]]; then
  echo "usage: $0 --families N OBJECT..." >&2
  exit 2
fi
families=$2
shift 2
objects=()
for argument in "$@"; do
  IFS=';' read -r -a parts <<<"$argument"
  objects+=("${parts[@]}")
done
status=0
inspected_avx2=0
inspected_avx512=0
for object in "${objects[@]}"; do
  case "$object" in
    *_avx512.cpp.o) arch='avx512bw'; inspected_avx512=$((inspected_avx512 + 1)) ;;
    *_avx2.cpp.o) arch='avx2'; inspected_avx2=$((inspected_avx2 + 1)) ;;
    *) continue ;;
  esac
  symbols=$(nm -C --defined-only "$object")
  leaked=$(awk '$2 == "W" || $2 == "V" || $2 == "u"' <<<"$symbols" | cut -d' ' -f3- |
           grep -v -e "$arch" -e '^DW\.ref\.__gxx_personality_v0$' || true)
  if [[ -n $leaked ]]; then
    echo "$object defines symbols other objects may share:" >&2
    echo "$leaked" >&2
    status=1
  fi
done
echo "inspected $inspected_avx2 AVX2 and $inspected_avx512 AVX-512 objects of $families kernel families"
if ((inspected_avx2 != families || inspected_avx512 != families)); then
  echo "expected $families AVX2 and $families AVX-512 objects, found $inspected_avx2 and $inspected_avx512" >&2
  status=1
fi
exit $status
