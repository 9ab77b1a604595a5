// engine/distributed.h over MPI (EMBER_MPI): the ranks mpirun started.
//
// sum_lanes is a reduce-scatter by parameter chunk followed by an allgather: rank c owns
// floats [total*c/R, total*(c+1)/R); an all-to-all gives it every lane's slice of its
// chunk, it sums them in lane order (the one-process kernel), and an allgather gives every
// rank the whole sum. Every collective is non-blocking and polled against a deadline, so
// a rank that died or stalled stops the run with a message instead of a hang.
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

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
      // Only the thread that calls train() calls MPI.
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      owns_ = true;
    }
  }
  ~MpiProcess() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) MPI_Finalize();
  }

 private:
  bool owns_ = false;
};

class MpiWorld final : public Communicator {
 public:
  explicit MpiWorld(double timeout_seconds) : timeout_seconds_(timeout_seconds) {
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    // Errors come back as codes and stop every rank through abort(), with ember's message.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiWorld() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void sum_lanes(std::int64_t lanes, const std::vector<const float*>& lane_data, float* out, std::int64_t total) override {
    const auto start = Clock::now();
    const int ranks = size_;
    auto chunk_begin = [&](int c) { return total * c / ranks; };
    auto chunk_size = [&](int c) { return static_cast<int>(chunk_begin(c + 1) - chunk_begin(c)); };
    auto lanes_of = [&](int r) {
      std::vector<std::int64_t> owned;
      for (std::int64_t l = r; l < lanes; l += ranks) owned.push_back(l);
      return owned;
    };
    const std::vector<std::int64_t> mine = lanes_of(rank_);
    const auto my_lanes = static_cast<int>(mine.size());
    std::vector<int> send_counts(ranks), send_offsets(ranks), receive_counts(ranks), receive_offsets(ranks);
    int sent = 0, received = 0;
    for (int c = 0; c < ranks; ++c) {
      send_counts[c] = my_lanes * chunk_size(c);
      send_offsets[c] = sent;
      sent += send_counts[c];
      receive_counts[c] = static_cast<int>(lanes_of(c).size()) * chunk_size(rank_);
      receive_offsets[c] = received;
      received += receive_counts[c];
    }
    send_.resize(static_cast<std::size_t>(sent));
    receive_.resize(static_cast<std::size_t>(received));
    // Per destination chunk, my lanes' slices in lane order.
    for (int c = 0; c < ranks; ++c) {
      float* to = send_.data() + send_offsets[c];
      for (std::int64_t l : mine) {
        std::memcpy(to, lane_data[static_cast<std::size_t>(l)] + chunk_begin(c), static_cast<std::size_t>(chunk_size(c)) * sizeof(float));
        to += chunk_size(c);
      }
    }
    const auto exchange_start = Clock::now();
    MPI_Request request;
    check(MPI_Ialltoallv(send_.data(), send_counts.data(), send_offsets.data(), MPI_FLOAT, receive_.data(),
                         receive_counts.data(), receive_offsets.data(), MPI_FLOAT, comm_, &request),
          "gradient exchange");
    wait(request, "the gradient exchange (all-to-all)");
    double waited = seconds_since(exchange_start);
    // Every lane's slice of my chunk, summed in lane order.
    const int n = chunk_size(rank_);
    std::vector<const float*> slices(static_cast<std::size_t>(lanes));
    for (int s = 0; s < ranks; ++s) {
      const float* from = receive_.data() + receive_offsets[s];
      for (std::int64_t l : lanes_of(s)) {
        slices[static_cast<std::size_t>(l)] = from;
        from += n;
      }
    }
    if (lanes > 0) simd::elementwise_kernels().sum_lanes(out + chunk_begin(rank_), slices.data(), lanes, n);
    std::vector<int> counts(ranks), offsets(ranks);
    for (int c = 0; c < ranks; ++c) {
      counts[c] = chunk_size(c);
      offsets[c] = static_cast<int>(chunk_begin(c));
    }
    const auto gather_start = Clock::now();
    check(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, out, counts.data(), offsets.data(), MPI_FLOAT, comm_, &request),
          "gradient allgather");
    wait(request, "the gradient allgather");
    waited += seconds_since(gather_start);
    last_.exposed_seconds = seconds_since(start);
    last_.hidden_seconds = 0.0;
    last_.bytes = static_cast<double>(sent + total - n) * sizeof(float);
    waited_seconds_ = waited;
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
    for (int polls = 0;; ++polls) {
      int done = 0;
      check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      if (Clock::now() > deadline) {
        char seconds[32];
        std::snprintf(seconds, sizeof seconds, "%g", timeout_seconds_);
        abort(std::string(what) + " did not complete within " + seconds +
              " s (--mpi-timeout): another rank died, stalled or failed");
      }
      // Spin briefly (a collective usually completes within microseconds of its last
      // arrival), then yield the core to the ranks still computing.
      if (polls > 2000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  double timeout_seconds_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<float> send_, receive_;
  CommunicationTime last_;
  double waited_seconds_ = 0.0;
};

}  // namespace

bool built_with_mpi() { return true; }

std::unique_ptr<Communicator> world_communicator(double timeout_seconds) {
  if (!(timeout_seconds > 0.0)) throw Error("MPI timeout must be positive seconds, found " + std::to_string(timeout_seconds));
  // Launched alone: no MPI at all (initializing a singleton would cost a runtime start).
  if (launched_rank_count() <= 1) return single_rank_communicator();
  static const MpiProcess process;
  return std::make_unique<MpiWorld>(timeout_seconds);
}

}  // namespace ember
