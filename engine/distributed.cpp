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
  void sum_lanes(std::int64_t lanes, const std::vector<const float*>& lane_data, float* out, std::int64_t total) override {
    simd::elementwise_kernels().sum_lanes(out, lane_data.data(), lanes, total);
  }
  void all_gather(const void* mine, std::size_t bytes, void* all) override {
    if (bytes > 0 && all != mine) std::memmove(all, mine, bytes);
  }
  [[noreturn]] void abort(const std::string& message) override { throw Error(message); }
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
