// All-reduce time against message size on this machine's links, to check the cost
// model's communication term (docs/distributed-scaling.md):
//
//   mpirun -np R ember_mpi_allreduce_sweep [MAX_MB]
//
// For every size, the median of repeated MPI_Allreduce (sum of floats; Open MPI picks
// its algorithm, a ring for large messages) and of ember's lane sum with one lane per
// rank (engine/distributed.h: the exchange training uses). Rank 0 prints one row per
// size: bytes, both times in ms, and the all-reduce's bus bandwidth 2(R-1)/R x bytes / t.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "engine/distributed.h"

namespace {

template <class Body>
double median_ms(int repeats, Body&& body) {
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto start = std::chrono::steady_clock::now();
    body();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const double max_mb = argc > 1 ? std::atof(argv[1]) : 64.0;
  const auto world = ember::world_communicator(120.0);  // initializes MPI under mpirun
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    std::fprintf(stderr, "run under mpirun with at least 2 processes\n");
    return 2;
  }
  const int ranks = world->size();
  if (world->rank() == 0) std::printf("# %d ranks\n# bytes allreduce_ms lane_sum_ms allreduce_bus_GB/s\n", ranks);
  for (std::int64_t bytes = 4096; bytes <= static_cast<std::int64_t>(max_mb * 1048576); bytes *= 2) {
    const std::int64_t floats = bytes / 4;
    std::vector<float> in(static_cast<std::size_t>(floats), 1.0f), out(static_cast<std::size_t>(floats));
    const int repeats = bytes < (1 << 20) ? 50 : 10;
    const double allreduce = median_ms(repeats, [&] {
      MPI_Allreduce(in.data(), out.data(), static_cast<int>(floats), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    });
    std::vector<const float*> lanes(static_cast<std::size_t>(ranks), in.data());
    const double lane_sum = median_ms(repeats, [&] { world->sum_lanes(ranks, lanes, out.data(), floats); });
    if (world->rank() == 0) {
      const double bus = 2.0 * (ranks - 1) / ranks * static_cast<double>(bytes) / (allreduce * 1e-3) * 1e-9;
      std::printf("%lld %.4f %.4f %.3f\n", static_cast<long long>(bytes), allreduce, lane_sum, bus);
    }
  }
  return 0;
}
