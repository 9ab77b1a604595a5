// engine/worker_pool.h: every part of every job runs exactly once, whoever runs it; jobs
// from concurrent callers, workers asleep between jobs (no spinning) or spinning, and
// pools torn down with sleeping workers. ThreadSanitizer runs these too.
#include "engine/worker_pool.h"

#include <chrono>
#include <memory>

#include <atomic>
#include <latch>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "engine/error.h"

namespace ember {
namespace {

// Runs `jobs` jobs of `parts` parts and counts, per part, how often it ran and on how
// many distinct threads parts ran in all.
struct Tally {
  std::vector<std::atomic<int>> runs;
  std::atomic<int> off_caller{0};
  std::thread::id caller;
  explicit Tally(int parts) : runs(static_cast<std::size_t>(parts)) {}
};

void run_jobs(const WorkerPool& pool, int jobs, int parts, std::vector<int>& wrong, int& off_caller, int spin_iterations = 2000) {
  for (int job = 0; job < jobs; ++job) {
    Tally tally(parts);
    tally.caller = std::this_thread::get_id();
    auto body = [&](int part) {
      tally.runs[static_cast<std::size_t>(part)].fetch_add(1);
      if (std::this_thread::get_id() != tally.caller) tally.off_caller.fetch_add(1);
      volatile int spin = 0;
      for (int i = 0; i < spin_iterations; ++i) spin = spin + i;
    };
    simd::run_parts(pool, parts, body);
    for (int part = 0; part < parts; ++part) {
      if (tally.runs[static_cast<std::size_t>(part)].load() != 1) wrong.push_back(job * 1000 + part);
    }
    off_caller += tally.off_caller.load();
  }
}

TEST(WorkerPool, EveryPartRunsExactlyOnce) {
  for (const int threads : {1, 2, 3}) {
    for (const int spin : {0, 200}) {
      const WorkerPool pool(threads, spin);
      EXPECT_EQ(pool.threads(), threads);
      for (const int parts : {1, 2, 3, 7}) {
        std::vector<int> wrong;
        int off_caller = 0;
        run_jobs(pool, 200, parts, wrong, off_caller);
        EXPECT_TRUE(wrong.empty()) << threads << " threads, spin " << spin << " us, " << parts << " parts: job * 1000 + part "
                                   << (wrong.empty() ? 0 : wrong[0]) << " did not run exactly once";
        if (threads == 1) {
          EXPECT_EQ(off_caller, 0);
        }
      }
    }
  }
}

TEST(WorkerPool, WorkersRunParts) {
  // Parts long enough (the body spins) that a spinning worker claims some of 2000 jobs'
  // second parts, on any machine that gives it a core now and then.
  const WorkerPool pool(2, 1000);
  std::vector<int> wrong;
  int off_caller = 0;
  run_jobs(pool, 2000, 2, wrong, off_caller, 50000);
  EXPECT_TRUE(wrong.empty());
  EXPECT_GT(off_caller, 0) << "no part ran on the worker";
}

TEST(WorkerPool, ConcurrentCallersEachGetTheirPartsRun) {
  const WorkerPool pool(2, 50);
  constexpr int callers = 4;
  std::vector<std::vector<int>> wrong(callers);
  std::latch start(callers);
  std::vector<std::thread> threads;
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      int off_caller = 0;
      start.arrive_and_wait();
      run_jobs(pool, 300, 3, wrong[static_cast<std::size_t>(c)], off_caller);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int c = 0; c < callers; ++c) EXPECT_TRUE(wrong[static_cast<std::size_t>(c)].empty()) << "caller " << c;
}

TEST(WorkerPool, TornDownWithSleepingOrIdleWorkers) {
  for (const int spin : {0, 100000}) {
    auto pool = std::make_unique<WorkerPool>(3, spin);
    std::vector<int> wrong;
    int off_caller = 0;
    run_jobs(*pool, 5, 2, wrong, off_caller);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    pool.reset();  // joins its workers, asleep (spin 0) or spinning
    EXPECT_TRUE(wrong.empty());
  }
}

TEST(WorkerPool, RefusesNoThreads) { EXPECT_THROW(WorkerPool(0), Error); }

}  // namespace
}  // namespace ember
