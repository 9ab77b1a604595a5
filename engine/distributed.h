#pragma once
// Data-parallel training across processes (ranks): the few collective operations the
// executor and the trainer need, behind an interface with two implementations. With MPI
// (engine/distributed_mpi.cpp, built when CMake finds MPI: EMBER_MPI) the ranks are the
// processes mpirun started; without it (engine/distributed_single.cpp) there is one rank
// and a process mpirun started with more is refused. The rest of the engine runs the same
// code paths either way.
//
// Why a step is bitwise the same for any rank count (docs/architecture.md): a batch's
// micro-batch j belongs to gradient lane j mod L whatever the ranks, lane l is run by rank
// l mod R (lane_rank), and the lanes are summed per element in lane order, as one process
// sums them; only where each lane is computed changes, never an addition's order.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ember {

// The rank that runs gradient lane `lane` (and, in evaluation, micro-batch `lane`).
inline int lane_rank(std::int64_t lane, int ranks) { return static_cast<int>(lane % ranks); }

// One lane sum's communication on a rank: `exposed_seconds` from end_lane_sum's call to
// its return (the step waits for it); `hidden_seconds` the exchange's time before that call
// (from the first lane sent, behind the rest of the backward).
struct CommunicationTime {
  double exposed_seconds = 0.0;
  double hidden_seconds = 0.0;
  double bytes = 0.0;  // sent by this rank
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Sums `lanes` gradient lanes of `total` floats element by element in lane order
  // (lane 0 + lane 1 + ...), every rank getting the whole sum in `out`. lane_data[l] is
  // read only on rank lane_rank(l, size()), which holds that lane; `out` may be lane 0's
  // buffer. Bitwise what simd sum_lanes gives over all lanes in one process.
  // In three calls, so that the exchange runs behind the rest of the step: begin_lane_sum
  // before the lanes are computed, lane_ready(l) from any thread as soon as lane l (held
  // here) is final, end_lane_sum (on begin's thread) to wait for the sum. The buffers must
  // stay untouched until end_lane_sum returns. `buckets`: ascending offsets that cut the
  // floats into ranges (the first 0; empty: one range), the same on every rank;
  // bucket_ready(l, k) says range k of lane l is final before the whole lane is.
  virtual void begin_lane_sum(std::int64_t lanes, std::vector<const float*> lane_data, float* out, std::int64_t total,
                              std::vector<std::int64_t> buckets = {}) = 0;
  virtual void bucket_ready(std::int64_t lane, std::size_t bucket) {}
  virtual void lane_ready(std::int64_t lane) = 0;
  virtual void end_lane_sum() = 0;
  // All three at once, every lane here ready.
  void sum_lanes(std::int64_t lanes, std::vector<const float*> lane_data, float* out, std::int64_t total) {
    begin_lane_sum(lanes, std::move(lane_data), out, total);
    for (std::int64_t l = rank(); l < lanes; l += size()) lane_ready(l);
    end_lane_sum();
  }
  // Every rank's `bytes` bytes at `mine`, in rank order, into `all` (size() * bytes).
  virtual void all_gather(const void* mine, std::size_t bytes, void* all) = 0;
  // Stops every rank: `message` on stderr (with this rank's number), then a nonzero exit.
  // One rank's error would otherwise leave the others waiting in a collective.
  [[noreturn]] virtual void abort(const std::string& message) = 0;
  // The communication of the last lane sum.
  virtual CommunicationTime last_sum_time() const { return {}; }
};

// Whether this ember was built with MPI (EMBER_MPI).
bool built_with_mpi();
// The ranks this process runs with. Launched by mpirun (OMPI_COMM_WORLD_SIZE, PMI_SIZE or
// PMIX_RANK in the environment): MPI's world, initialized on the first call; a collective
// that does not complete within `timeout_seconds` stops every rank with a message naming
// it (abort). Otherwise, or built without MPI and launched alone: one rank. Built without
// MPI but launched by mpirun with more than one process: throws ember::Error saying so.
// overlap false: the exchange starts only at end_lane_sum (to measure what overlap hides).
std::unique_ptr<Communicator> world_communicator(double timeout_seconds, bool overlap = true);
// One rank: sum_lanes sums in this process, all_gather copies, abort throws ember::Error.
std::unique_ptr<Communicator> single_rank_communicator();
// The rank count mpirun's environment announces (1 when none does).
int launched_rank_count();

}  // namespace ember
