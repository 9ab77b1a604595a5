#include "engine/machine_peaks.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "engine/aligned_buffer.h"
#include "engine/error.h"
#include "simd/dispatch.h"
#include "simd/peak.h"

namespace ember {
namespace {

using Clock = std::chrono::steady_clock;

template <class Body>
double best_seconds(int runs, Body&& body) {
  double best = 1e30;
  for (int r = 0; r < runs; ++r) {
    const auto start = Clock::now();
    body();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count());
  }
  return best;
}

double measure_fma_gflops(const simd::PeakKernels& kernels) {
  // Two register groups: the second hides the short pause between them.
  const std::int64_t count = 2 * kernels.chain_group_floats;
  std::vector<float> chains(static_cast<std::size_t>(count), 1.0f);
  // c = c / 2 + 1 converges to 2 and stays finite; the sum below keeps the result alive.
  std::int64_t iterations = 1000;
  const double first = best_seconds(1, [&] { kernels.fma_chains(chains.data(), count, 0.5f, 1.0f, iterations); });
  iterations = std::max<std::int64_t>(1000, static_cast<std::int64_t>(iterations * 0.003 / std::max(first, 1e-7)));
  const double seconds = best_seconds(3, [&] { kernels.fma_chains(chains.data(), count, 0.5f, 1.0f, iterations); });
  float sum = 0.0f;
  for (float c : chains) sum += c;
  if (!(sum > 0.0f)) throw Error("machine peaks: the FMA chains ended at " + std::to_string(sum) + ", expected 2 each");
  return 2.0 * static_cast<double>(count) * static_cast<double>(iterations) / seconds * 1e-9;
}

double measure_triad_gigabytes(const simd::PeakKernels& kernels) {
  // Three 64 MB arrays: several times any last-level cache of one core's share (Zen 4:
  // 32 MB per CCD), so the triad streams from memory.
  constexpr std::int64_t n = std::int64_t{16} << 20;
  constexpr std::size_t bytes = static_cast<std::size_t>(n) * sizeof(float);
  AlignedBuffer a(bytes), b(bytes), out(bytes);
  std::fill(a.floats(), a.floats() + n, 1.0f);
  std::fill(b.floats(), b.floats() + n, 2.0f);
  std::fill(out.floats(), out.floats() + n, 0.0f);  // the pages exist before the timing
  const double seconds = best_seconds(3, [&] { kernels.stream_triad(out.floats(), a.floats(), b.floats(), 0.5f, n); });
  if (out.floats()[n - 1] != 2.0f) throw Error("machine peaks: the triad wrote " + std::to_string(out.floats()[n - 1]) + ", expected 2");
  // STREAM's count: 12 bytes per element (the write's cache-line fill is not counted).
  return 3.0 * static_cast<double>(bytes) / seconds * 1e-9;
}

}  // namespace

MachinePeaks measure_machine_peaks() {
  const simd::PeakKernels& kernels = simd::peak_kernels();
  MachinePeaks peaks;
  peaks.isa = std::string(simd::isa_name(simd::selected_isa()));
  peaks.fma_gflops_per_core = measure_fma_gflops(kernels);
  peaks.memory_gigabytes_per_second = measure_triad_gigabytes(kernels);
  return peaks;
}

}  // namespace ember
