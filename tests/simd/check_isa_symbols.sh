#!/usr/bin/env bash
# The per-instruction-set kernel objects must not define any shared (weak or COMDAT)
# symbol that is not specific to their instruction set: the linker keeps one copy of such
# a symbol for the whole program, and if it keeps the AVX-512 copy of, say, std::fill,
# every caller dies with an illegal instruction on a CPU without AVX-512.
#
#   check_isa_symbols.sh OBJECT...    (the objects of the ember_simd library)
set -euo pipefail
status=0
for object in "$@"; do
  case "$object" in
    *_avx512.cpp.o) arch='avx512bw' ;;
    *_avx2.cpp.o) arch='avx2' ;;
    *) continue ;;
  esac
  leaked=$(nm -C --defined-only "$object" | awk '$2 == "W" || $2 == "V" || $2 == "u"' | cut -d' ' -f3- |
           grep -v -e "$arch" -e '^DW\.ref\.__gxx_personality_v0$' || true)
  if [[ -n $leaked ]]; then
    echo "$object defines symbols other objects may share:" >&2
    echo "$leaked" >&2
    status=1
  fi
done
exit $status
