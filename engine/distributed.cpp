#include "engine/distributed.h"

#include <cstdlib>
#include <cstring>

#include "engine/error.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

class SingleRank final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void begin_lane_sum(std::int64_t lanes, std::vector<const float*> lane_data, float* out, std::int64_t total,
                      std::vector<std::int64_t>) override {
    lanes_ = lanes;
    lane_data_ = std::move(lane_data);
    out_ = out;
    total_ = total;
  }
  void lane_ready(std::int64_t) override {}
  void end_lane_sum() override { simd::elementwise_kernels().sum_lanes(out_, lane_data_.data(), lanes_, total_); }
  void all_gather(const void* mine, std::size_t bytes, void* all) override {
    if (bytes > 0 && all != mine) std::memmove(all, mine, bytes);
  }
  [[noreturn]] void abort(const std::string& message) override { throw Error(message); }

 private:
  std::int64_t lanes_ = 0, total_ = 0;
  std::vector<const float*> lane_data_;
  float* out_ = nullptr;
};

// A positive integer from the environment, or 0.
long environment_count(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr) return 0;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  return end != text && *end == '\0' && value > 0 ? value : 0;
}

}  // namespace

std::unique_ptr<Communicator> single_rank_communicator() { return std::make_unique<SingleRank>(); }

int launched_rank_count() {
  // Open MPI's mpirun, then MPICH/Slurm's PMI.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    if (const long n = environment_count(name); n > 0) return static_cast<int>(n);
  }
  return 1;
}

}  // namespace ember
