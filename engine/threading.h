#pragma once
// ember's thread budget. Every parallel region runs through parallel_region(), which
// opens at most `threads` OpenMP threads and sets the nested budget of each to 1, so
// oneDNN primitives called inside run on the calling thread only and the process never
// runs more compute threads than it was given. The budget set inside is per implicit
// task (an OpenMP ICV): nothing outside the region changes.
#include <omp.h>

namespace ember {

template <class Body>
void parallel_region(int threads, Body&& body) {
#pragma omp parallel num_threads(threads)
  {
    omp_set_num_threads(1);
    body(omp_get_thread_num(), omp_get_num_threads());
  }
}

}  // namespace ember
