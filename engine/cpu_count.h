#pragma once
// How many compute threads a command runs when none is asked for: the cores this process
// may use. Results do not depend on the thread count (bitwise), so the default is only
// about speed.
#include <string>

namespace ember {

// OMP_NUM_THREADS when it is set to a positive integer (its first entry, as OpenMP reads
// a list), else the CPUs in this process's affinity mask (sched_getaffinity: a taskset or
// a container's cpuset counts, the machine's other cores do not); at least 1 and at most
// max_compute_threads (engine/threading.h).
int available_compute_threads();

// As above, from an OMP_NUM_THREADS text (nullptr: unset) and an affinity count (0: unknown).
int compute_threads_from(const char* omp_num_threads, int affinity_cpus);

}  // namespace ember
