# Shared by the bench/compare_*.sh scripts (sourced, not run).

# PyTorch runs with jemalloc preloaded: with glibc malloc its training step page-faults its
# buffers back in every step.
jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2

# The median of the numbers on standard input, one per line.
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# The value of field "$1" in the one-line JSON on standard input.
field() { sed -n "s/.*\"$1\": \"\{0,1\}\([^,\"}]*\).*/\1/p"; }
