#include "engine/worker_pool.h"

#include <chrono>
#include <string>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "engine/error.h"

namespace ember {
namespace {

constexpr int most_parts = 0xffff;

std::uint32_t generation_of(std::uint64_t word) { return static_cast<std::uint32_t>(word >> 32); }
int parts_of(std::uint64_t word) { return static_cast<int>((word >> 16) & 0xffff); }
int next_of(std::uint64_t word) { return static_cast<int>(word & 0xffff); }

// A spin-wait hint: the core runs its sibling thread, and leaves the loop without a
// memory-order mis-speculation.
void pause() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

}  // namespace

WorkerPool::WorkerPool(int threads, int spin_microseconds) : spin_microseconds_(spin_microseconds) {
  if (threads < 1) throw Error("worker pool: threads must be at least 1, found " + std::to_string(threads));
  workers_.reserve(static_cast<std::size_t>(threads - 1));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    stopping_.store(true);
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

void WorkerPool::run_claimed_parts(std::uint64_t word) const {
  const std::uint32_t generation = generation_of(word);
  const int parts = parts_of(word);
  for (;;) {
    if (generation_of(word) != generation || next_of(word) >= parts) return;
    const std::uint64_t claimed = word + 1;
    if (!job_.compare_exchange_weak(word, claimed, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    body_(context_, next_of(word));
    done_.fetch_add(1, std::memory_order_release);
    word = claimed;
  }
}

void WorkerPool::run(int parts, Body body, void* context) const {
  if (parts <= 0) return;
  std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
  if (workers_.empty() || parts == 1 || parts > most_parts || !busy.owns_lock()) {
    for (int part = 0; part < parts; ++part) body(context, part);
    return;
  }
  body_ = body;
  context_ = context;
  done_.store(0, std::memory_order_relaxed);
  const std::uint64_t word = job_word(generation_of(job_.load(std::memory_order_relaxed)) + 1, static_cast<std::uint32_t>(parts), 0);
  job_.store(word, std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    wake_.notify_all();
  }
  run_claimed_parts(word);
  // Parts the workers claimed may still be running. A worker descheduled in its part (a
  // busy machine) needs a core: after a while, the caller offers its own.
  for (int spins = 0; done_.load(std::memory_order_acquire) < parts; ++spins) {
    if (spins < 4096) {
      pause();
    } else {
      std::this_thread::yield();
    }
  }
}

void WorkerPool::work() {
  // The generation of the last job this worker took parts of (or found done).
  std::uint32_t last = generation_of(job_.load(std::memory_order_acquire));
  const auto is_new = [&](std::uint64_t word) { return generation_of(word) != last; };
  for (;;) {
    // Spin for the next job a while, then sleep until one comes.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_microseconds_);
    std::uint64_t word = job_.load(std::memory_order_acquire);
    for (int spins = 0; !is_new(word) && !stopping_.load(std::memory_order_relaxed); ++spins) {
      pause();
      if ((spins & 63) == 63 && std::chrono::steady_clock::now() > deadline) {
        std::unique_lock<std::mutex> lock(sleep_mutex_);
        sleeping_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return stopping_.load() || is_new(job_.load(std::memory_order_seq_cst)); });
        sleeping_.fetch_sub(1, std::memory_order_relaxed);
      }
      word = job_.load(std::memory_order_acquire);
    }
    if (stopping_.load()) return;
    last = generation_of(word);
    run_claimed_parts(word);
  }
}

}  // namespace ember
