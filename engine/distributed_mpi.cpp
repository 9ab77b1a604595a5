// engine/distributed.h over MPI (EMBER_MPI): the ranks mpirun started.
//
// The lane sum is a reduce-scatter by parameter chunk followed by an allgather: rank c owns
// floats [total*c/R, total*(c+1)/R); it receives every other rank's lanes' slices of its
// chunk (point to point, each lane sent as soon as it is final, so the exchange runs
// behind the rest of the backward), sums them in lane order (the one-process kernel), and
// an allgather gives every rank the whole sum. Every operation is non-blocking and polled
// against a deadline, so a rank that died or stalled stops the run with a message instead
// of a hang.
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <utility>

#include "engine/distributed.h"
#include "engine/error.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

using Clock = std::chrono::steady_clock;

// Initializes MPI once per process and finalizes it at exit (MPI cannot be initialized
// twice, so this outlives every communicator).
class MpiProcess {
 public:
  MpiProcess() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // Two threads call MPI, never at once: train()'s, and the gradient exchange's.
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
      owns_ = true;
      serialized_ = provided >= MPI_THREAD_SERIALIZED;
    }
  }
  ~MpiProcess() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) MPI_Finalize();
  }
  // Whether a second thread may call MPI (else the exchange does not overlap).
  bool threads_may_take_turns() const { return serialized_; }

 private:
  bool owns_ = false;
  bool serialized_ = false;
};

class MpiWorld final : public Communicator {
 public:
  MpiWorld(double timeout_seconds, bool overlap) : timeout_seconds_(timeout_seconds), overlap_(overlap) {
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    // Errors come back as codes and stop every rank through abort(), with ember's message.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    int* upper = nullptr;
    int found = 0;
    MPI_Comm_get_attr(comm_, MPI_TAG_UB, &upper, &found);
    tag_limit_ = found && upper != nullptr ? *upper : 32767;  // the least MPI allows
  }
  ~MpiWorld() override {
    if (exchange_thread_.joinable()) exchange_thread_.detach();  // only after an error: abort() ends the process
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void begin_lane_sum(std::int64_t lanes, std::vector<const float*> lane_data, float* out, std::int64_t total,
                      std::vector<std::int64_t> buckets) override {
    lanes_ = lanes;
    lane_data_ = std::move(lane_data);
    out_ = out;
    total_ = total;
    // One message per (lane, bucket, chunk) it meets: tags must tell them apart.
    buckets_ = std::move(buckets);
    if (buckets_.empty() || lanes * static_cast<std::int64_t>(buckets_.size()) > tag_limit_) buckets_.assign(1, 0);
    const std::size_t flags = static_cast<std::size_t>(lanes) * buckets_.size();
    ready_ = std::make_unique<std::atomic<bool>[]>(flags);
    for (std::size_t f = 0; f < flags; ++f) ready_[f] = false;
    first_send_ = Clock::time_point{};
    if (overlap_) exchange_thread_ = std::thread([this] { exchange(); });
  }

  void bucket_ready(std::int64_t lane, std::size_t bucket) override {
    if (buckets_.size() > 1) ready_[flag(lane, bucket)].store(true, std::memory_order_release);
  }
  void lane_ready(std::int64_t lane) override {
    for (std::size_t k = 0; k < buckets_.size(); ++k) ready_[flag(lane, k)].store(true, std::memory_order_release);
  }

  void end_lane_sum() override {
    const auto called = Clock::now();
    if (exchange_thread_.joinable()) {
      exchange_thread_.join();
    } else {
      exchange();
    }
    last_.exposed_seconds = seconds_since(called);
    last_.hidden_seconds =
        first_send_ != Clock::time_point{} && first_send_ < called ? std::chrono::duration<double>(called - first_send_).count() : 0.0;
  }

  void all_gather(const void* mine, std::size_t bytes, void* all) override {
    MPI_Request request;
    check(MPI_Iallgather(mine, static_cast<int>(bytes), MPI_BYTE, all, static_cast<int>(bytes), MPI_BYTE, comm_, &request),
          "allgather");
    wait(request, "an allgather of the step's results");
  }

  [[noreturn]] void abort(const std::string& message) override {
    std::fprintf(stderr, "ember: rank %d of %d: %s; stopping every rank\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);  // MPI_Abort does not return; should it, nothing may go on
  }

  CommunicationTime last_sum_time() const override { return last_; }

 private:
  static double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

  void check(int code, const char* what) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    abort(std::string(what) + " failed: " + std::string(text, static_cast<std::size_t>(length)));
  }

  // Polls until the request completes; past the deadline every rank is stopped.
  void wait(MPI_Request& request, const char* what) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_seconds_);
    for (;;) {
      int done = 0;
      check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      if (Clock::now() > deadline) timed_out(what);
      // Nothing else to do on this rank: TCP moves data only while MPI is called.
      std::this_thread::yield();
    }
  }

  std::int64_t chunk_begin(int c) const { return total_ * c / size_; }
  std::size_t flag(std::int64_t lane, std::size_t bucket) const { return static_cast<std::size_t>(lane) * buckets_.size() + bucket; }
  // Floats [begin, end) of bucket k within chunk c (empty: begin >= end).
  std::pair<std::int64_t, std::int64_t> piece(std::size_t k, int c) const {
    const std::int64_t end = k + 1 < buckets_.size() ? buckets_[k + 1] : total_;
    return {std::max(buckets_[k], chunk_begin(c)), std::min(end, chunk_begin(c + 1))};
  }
  int tag(std::int64_t lane, std::size_t bucket) const { return static_cast<int>(flag(lane, bucket)); }
  int chunk_size(int c) const { return static_cast<int>(chunk_begin(c + 1) - chunk_begin(c)); }

  // Rank c sums chunk c: it receives every other rank's lanes' slices of it, and sends each
  // of its lanes' slices of chunk c to c as soon as the lane is ready. Then the summed
  // chunks are allgathered. Runs on the exchange thread (overlap) or in end_lane_sum; the
  // other thread makes no MPI call meanwhile (MPI_THREAD_SERIALIZED).
  void exchange() {
    const std::int64_t lanes = lanes_;
    const int n = chunk_size(rank_);
    receive_.resize(static_cast<std::size_t>(lanes * n));
    std::vector<MPI_Request> requests;
    std::vector<std::int64_t> own;
    for (std::int64_t l = 0; l < lanes; ++l) {
      const int holder = lane_rank(l, size_);
      if (holder == rank_) {
        own.push_back(l);
        continue;
      }
      for (std::size_t k = 0; k < buckets_.size(); ++k) {
        const auto [begin, end] = piece(k, rank_);
        if (begin >= end) continue;
        requests.emplace_back();
        check(MPI_Irecv(receive_.data() + l * n + (begin - chunk_begin(rank_)), static_cast<int>(end - begin), MPI_FLOAT, holder,
                        tag(l, k), comm_, &requests.back()),
              "gradient receive");
      }
    }
    // Per own lane and bucket: sent yet.
    const std::size_t to_send = own.size() * buckets_.size();
    std::size_t sent = 0;
    std::vector<bool> is_sent(to_send, false);
    double bytes = 0.0;
    std::optional<Clock::time_point> deadline;
    for (int polls = 0;; ++polls) {
      for (std::size_t i = 0; i < to_send; ++i) {
        const std::int64_t l = own[i / buckets_.size()];
        const std::size_t k = i % buckets_.size();
        if (is_sent[i] || !ready_[flag(l, k)].load(std::memory_order_acquire)) continue;
        if (first_send_ == Clock::time_point{}) first_send_ = Clock::now();
        for (int c = 0; c < size_; ++c) {
          const auto [begin, end] = piece(k, c);
          if (c == rank_ || begin >= end) continue;
          requests.emplace_back();
          check(MPI_Isend(lane_data_[static_cast<std::size_t>(l)] + begin, static_cast<int>(end - begin), MPI_FLOAT, c, tag(l, k),
                          comm_, &requests.back()),
                "gradient send");
          bytes += static_cast<double>(end - begin) * sizeof(float);
        }
        is_sent[i] = true;
        ++sent;
      }
      int done = 0;
      check(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE), "gradient exchange");
      if (sent == to_send) {
        if (done) break;
        // This rank's part is done: from now on it waits for the others only.
        if (!deadline) deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_seconds_));
        if (Clock::now() > *deadline) timed_out("the gradient exchange");
      }
      // While this rank's lanes compute, poll every 100 us, leaving them the core; once its
      // part is sent it has nothing else to do, and TCP moves data only while MPI is
      // called: poll without sleeping (measured: sleeping there made seed-cnn's 3.2 MB
      // exchange take 35 ms on loopback instead of a few).
      if (sent < to_send) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      } else {
        std::this_thread::yield();
      }
    }
    // Every lane's slice of my chunk, summed in lane order.
    std::vector<const float*> slices(static_cast<std::size_t>(lanes));
    for (std::int64_t l = 0; l < lanes; ++l) {
      slices[static_cast<std::size_t>(l)] =
          lane_rank(l, size_) == rank_ ? lane_data_[static_cast<std::size_t>(l)] + chunk_begin(rank_) : receive_.data() + l * n;
    }
    // In place: each element of lane 0's slice is read before the sum is written over it.
    if (lanes > 0) simd::elementwise_kernels().sum_lanes(out_ + chunk_begin(rank_), slices.data(), lanes, n);
    std::vector<int> counts(static_cast<std::size_t>(size_)), offsets(static_cast<std::size_t>(size_));
    for (int c = 0; c < size_; ++c) {
      counts[static_cast<std::size_t>(c)] = chunk_size(c);
      offsets[static_cast<std::size_t>(c)] = static_cast<int>(chunk_begin(c));
    }
    MPI_Request gather;
    check(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, out_, counts.data(), offsets.data(), MPI_FLOAT, comm_, &gather),
          "gradient allgather");
    wait(gather, "the gradient allgather");
    last_.bytes = bytes + static_cast<double>(n) * (size_ - 1) * sizeof(float);
  }

  [[noreturn]] void timed_out(const std::string& what) {
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%g", timeout_seconds_);
    abort(what + " did not complete within " + seconds + " s (--mpi-timeout): another rank died, stalled or failed");
  }

  double timeout_seconds_;
  bool overlap_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  // The lane sum in progress.
  std::int64_t lanes_ = 0, total_ = 0;
  std::vector<const float*> lane_data_;
  float* out_ = nullptr;
  std::vector<std::int64_t> buckets_;          // the ranges' first floats
  std::unique_ptr<std::atomic<bool>[]> ready_;  // per lane and bucket
  int tag_limit_ = 32767;
  std::thread exchange_thread_;
  Clock::time_point first_send_;
  std::vector<float> receive_;
  CommunicationTime last_;
};

}  // namespace

bool built_with_mpi() { return true; }

std::unique_ptr<Communicator> world_communicator(double timeout_seconds, bool overlap) {
  if (!(timeout_seconds > 0.0)) throw Error("MPI timeout must be positive seconds, found " + std::to_string(timeout_seconds));
  // Launched alone: no MPI at all (initializing a singleton would cost a runtime start).
  if (launched_rank_count() <= 1) return single_rank_communicator();
  static const MpiProcess process;
  return std::make_unique<MpiWorld>(timeout_seconds, overlap && process.threads_may_take_turns());
}

}  // namespace ember
