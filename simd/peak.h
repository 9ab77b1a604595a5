#pragma once
// Kernels that measure the machine rather than compute a layer: the profiler
// (engine/profile.h) times them for a few milliseconds to learn what one core can do,
// so each op's GFLOP/s and GB/s can be put against it.
//
//   fma_chains:   chains[i] = chains[i] * multiplier + addend, `iterations` times
//   stream_triad: out[i] = a[i] + scale * b[i]
//
// Both do real arithmetic whose result the caller keeps, so no compiler can drop them,
// and tests/simd/peak_test.cpp checks that result against a scalar loop.
#include <cstdint>

#include "simd/dispatch.h"

namespace ember::simd {

struct PeakKernels {
  // Independent fused multiply-add chains, `chain_group_floats` of them at a time held in
  // registers: enough vectors that every FMA unit has one ready each cycle despite the
  // latency, so the time per iteration is the FMA throughput. count may be any size.
  // (SSE4.2 has no FMA: a multiply and an add, rounded twice.)
  void (*fma_chains)(float* chains, std::int64_t count, float multiplier, float addend, std::int64_t iterations);
  // A streaming pass over three arrays (two read, one written), as STREAM's triad.
  void (*stream_triad)(float* out, const float* a, const float* b, float scale, std::int64_t n);
  // Floats one register group of fma_chains holds: pass a multiple of it for the peak.
  std::int64_t chain_group_floats;
};

template <class Arch>
PeakKernels make_peak_kernels();
const PeakKernels& peak_kernels_for(Isa isa);
const PeakKernels& peak_kernels();

}  // namespace ember::simd
