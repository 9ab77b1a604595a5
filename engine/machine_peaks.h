#pragma once
// What one core of this machine can do, measured in a few milliseconds with the kernels of
// simd/peak.h at the instruction set the kernels run: the profiler puts each op's GFLOP/s
// and GB/s against these.
#include <string>

namespace ember {

struct MachinePeaks {
  std::string isa;                   // the dispatched instruction set (simd::selected_isa)
  double fma_gflops_per_core = 0.0;  // independent FMA chains, one thread
  double memory_gigabytes_per_second = 0.0;  // one thread's streaming triad over 192 MB
};

// Takes about 20 ms (and 192 MB for a moment). The best of a few runs of each kernel.
MachinePeaks measure_machine_peaks();

}  // namespace ember
