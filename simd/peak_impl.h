#pragma once
// Generic bodies of the machine-peak kernels (simd/peak.h), compiled once per instruction
// set. Every function is a template on Arch (see simd/arch.h).
#include <cstdint>

#include "simd/arch.h"
#include "simd/peak.h"

namespace ember::simd {

// Zen 4 and recent Intel cores retire two FMAs a cycle at a latency of 4: 8 chains in
// flight keep them busy; 12 leave a margin for cores with a longer latency and still fit
// in the 16 registers of SSE and AVX2.
inline constexpr int peak_chain_vectors = 12;

template <class Arch>
void peak_fma_chains(float* chains, std::int64_t count, float multiplier, float addend, std::int64_t iterations) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  constexpr std::int64_t group = peak_chain_vectors * width;
  const Batch m(multiplier), a(addend);
  std::int64_t i = 0;
  for (; i + group <= count; i += group) {
    Batch c[peak_chain_vectors];
#pragma GCC unroll 12
    for (int k = 0; k < peak_chain_vectors; ++k) c[k] = Batch::load_unaligned(chains + i + k * width);
    for (std::int64_t t = 0; t < iterations; ++t) {
#pragma GCC unroll 12
      for (int k = 0; k < peak_chain_vectors; ++k) c[k] = xsimd::fma(c[k], m, a);
    }
#pragma GCC unroll 12
    for (int k = 0; k < peak_chain_vectors; ++k) c[k].store_unaligned(chains + i + k * width);
  }
  for (; i + width <= count; i += width) {
    Batch c = Batch::load_unaligned(chains + i);
    for (std::int64_t t = 0; t < iterations; ++t) c = xsimd::fma(c, m, a);
    c.store_unaligned(chains + i);
  }
  for (; i < count; ++i) {
    // A one-lane batch would round as the vectors do; the tail is scalar and fused.
    float c = chains[i];
    for (std::int64_t t = 0; t < iterations; ++t) c = xsimd::fma(c, multiplier, addend);
    chains[i] = c;
  }
}

template <class Arch>
void peak_stream_triad(float* out, const float* a, const float* b, float scale, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const Batch s(scale);
  std::int64_t i = 0;
  for (; i + 2 * width <= n; i += 2 * width) {
    xsimd::fma(s, Batch::load_unaligned(b + i), Batch::load_unaligned(a + i)).store_unaligned(out + i);
    xsimd::fma(s, Batch::load_unaligned(b + i + width), Batch::load_unaligned(a + i + width)).store_unaligned(out + i + width);
  }
  for (; i < n; ++i) out[i] = xsimd::fma(scale, b[i], a[i]);
}

template <class Arch>
PeakKernels make_peak_kernels() {
  return PeakKernels{&peak_fma_chains<Arch>, &peak_stream_triad<Arch>,
                     peak_chain_vectors * static_cast<std::int64_t>(xsimd::batch<float, Arch>::size)};
}

}  // namespace ember::simd
