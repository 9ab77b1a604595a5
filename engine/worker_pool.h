#pragma once
// A session's own compute threads (simd::PartRunner): `threads - 1` workers that live as
// long as the session and run the parts of one call's kernels beside the calling thread.
// After a job a worker spins on the next one for a while (spin_microseconds) before it
// sleeps, so the parts of a call's next layer, microseconds later, start at once: waking
// an OpenMP team (futex wake-ups) cost a batch-1 call tens of microseconds (see
// engine/threading.h).
//
// The caller claims parts too, and does every part no worker has claimed: a worker that
// is asleep or descheduled delays nothing but its own part. Which thread runs a part does
// not change its bits. One job at a time: a run() while another is under way (another
// caller) runs all its parts on its own thread.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "simd/parallel.h"

namespace ember {

class WorkerPool final : public simd::PartRunner {
 public:
  // threads: the caller plus threads - 1 workers (1: none, run() runs everything inline).
  explicit WorkerPool(int threads, int spin_microseconds = 200);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void run(int parts, Body body, void* context) const override;
  int threads() const override { return static_cast<int>(workers_.size()) + 1; }

 private:
  // The job word: generation (upper 32 bits), parts (16), next unclaimed part (16). A
  // part is claimed by one compare-and-swap on it, so a worker that wakes late, after
  // its job ended, cannot claim a part of it, nor of the next before seeing the next.
  static std::uint64_t job_word(std::uint32_t generation, std::uint32_t parts, std::uint32_t next) {
    return (std::uint64_t{generation} << 32) | (std::uint64_t{parts} << 16) | next;
  }
  // Claims and runs parts of the job in `word` until none is left.
  void run_claimed_parts(std::uint64_t word) const;
  void work();

  int spin_microseconds_;
  std::vector<std::thread> workers_;
  mutable std::mutex busy_;  // one job at a time
  // The current job: body and context are written before the job word announces them.
  mutable Body body_ = nullptr;
  mutable void* context_ = nullptr;
  mutable std::atomic<std::uint64_t> job_{0};
  mutable std::atomic<int> done_{0};
  // Sleeping workers wait on `wake_` for the job word to change.
  mutable std::mutex sleep_mutex_;
  mutable std::condition_variable wake_;
  mutable std::atomic<int> sleeping_{0};
  std::atomic<bool> stopping_{false};
};

}  // namespace ember
