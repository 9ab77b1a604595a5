#pragma once
// ember's thread budget. Every parallel region runs through parallel_region(), which
// opens at most `threads` OpenMP threads and sets the nested budget of each to 1, so
// oneDNN primitives called inside run on the calling thread only and the process never
// runs more compute threads than it was given. The budget set inside is per implicit
// task (an OpenMP ICV): nothing outside the region changes.
#include <omp.h>

#include <cstdint>

namespace ember {

// The most compute threads one executor runs (engine/executor.cpp refuses more). ember
// train and ember plan check --threads against it before loading anything.
inline constexpr int max_compute_threads = 64;

// Below this many multiply-adds a layer's forward runs on one thread even when its call
// has more (~100 us at 80 GFLOP/s). Measured on a 2-vCPU Zen 4 VM: waking an OpenMP team
// costs tens of microseconds there (futex wake-ups, or a spinning sibling slowing the
// working thread), so attn-cnn's attention (0.8 M multiply-adds at batch 1) ran 1.3x
// slower on 2 threads than on 1. Memory-bound GEMVs do not repay it either: the seed CNN's
// fc1 at batch 1 (3 MiB of packed weights, 0.8 M multiply-adds) split by columns over two
// threads took 36 -> 24 us standalone with a hot team, but a session call 51 -> 80 us
// (OMP_WAIT_POLICY default or passive) once the team had to be woken every call.
inline constexpr std::int64_t min_parallel_forward_work = std::int64_t{1} << 22;
// The same when the threads are a session's spinning workers (engine/worker_pool.h),
// which start a part within a microsecond or so: the seed CNN's batch-1 fc1 pays there.
inline constexpr std::int64_t min_pooled_forward_work = std::int64_t{1} << 18;

template <class Body>
void parallel_region(int threads, Body&& body) {
#pragma omp parallel num_threads(threads)
  {
    omp_set_num_threads(1);
    body(omp_get_thread_num(), omp_get_num_threads());
  }
}

// While alive, the calling thread has an OpenMP budget of `threads`: oneDNN primitives and
// ember's kernels called on it open at most that many. A budget of one is what
// parallel_region(1, ...) gives, without opening a team: libgomp allocates a team for
// every region, even of one thread, and a warm inference call must not allocate. (libgomp
// allocates the thread's ICV block on its first omp_set_num_threads, once per thread.)
// The caller's budget is restored on exit.
class ThreadBudget {
 public:
  explicit ThreadBudget(int threads) : previous_(omp_get_max_threads()) { omp_set_num_threads(threads); }
  ~ThreadBudget() { omp_set_num_threads(previous_); }
  ThreadBudget(const ThreadBudget&) = delete;
  ThreadBudget& operator=(const ThreadBudget&) = delete;

 private:
  int previous_;
};

}  // namespace ember
