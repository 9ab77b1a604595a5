// simd/peak.h (the machine-peak kernels the profiler times) against scalar loops, for
// every instruction set this CPU runs: the timed work must be the arithmetic it claims,
// or the peaks it gives would be fiction.
#include "simd/peak.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "simd_test_support.h"

namespace ember::simd {
namespace {

PeakKernels kernels_under_test(Isa isa) {
  return testing::made_for<PeakKernels, make_peak_kernels<ArchSse42>, make_peak_kernels<ArchAvx2>, make_peak_kernels<ArchAvx512>>(isa);
}

using testing::GuardedBuffer;

class PeakTest : public ::testing::TestWithParam<Isa> {
 protected:
  PeakKernels kernels() const { return kernels_under_test(GetParam()); }
};

// The scalar chain: c = c * m + a, `iterations` times, in double (exact for the inputs below).
double reference_chain(double c, double multiplier, double addend, std::int64_t iterations) {
  for (std::int64_t t = 0; t < iterations; ++t) c = c * multiplier + addend;
  return c;
}

// Lengths around the register group (12 vectors) of every set and the tails below it.
std::vector<std::int64_t> chain_counts(const PeakKernels& k) {
  std::vector<std::int64_t> counts = testing::tail_lengths();
  for (std::int64_t extra : {-1, 0, 1, 5, 17}) counts.push_back(k.chain_group_floats + extra);
  counts.push_back(2 * k.chain_group_floats + 3);
  return counts;
}

TEST_P(PeakTest, FmaChainsComputeEveryChainExactly) {
  // A multiplier of 1/2 makes every product exact, so fused and unfused (SSE4.2) rounding
  // agree, and the chains stay away from overflow: each must be bitwise the scalar chain.
  for (std::int64_t count : chain_counts(kernels())) {
    for (std::int64_t iterations : {0, 1, 3, 50}) {
      GuardedBuffer<float> chains(static_cast<std::size_t>(count));
      chains.assign(testing::uniform_vector(chains.size(), 7 + static_cast<std::uint64_t>(count), -8.0f, 8.0f));
      const std::vector<float> start = chains.to_vector();
      kernels().fma_chains(chains.data(), count, 0.5f, 0.375f, iterations);
      for (std::int64_t i = 0; i < count; ++i) {
        const float expected = static_cast<float>(reference_chain(start[static_cast<std::size_t>(i)], 0.5, 0.375, iterations));
        ASSERT_TRUE(testing::same_bits(chains[static_cast<std::size_t>(i)], expected))
            << "count " << count << ", iterations " << iterations << ", chain " << i << ": " << chains[static_cast<std::size_t>(i)]
            << " vs " << expected;
      }
    }
  }
}

TEST_P(PeakTest, FmaChainsWithInexactProductsStayCloseToTheScalarChain) {
  // multiplier 0.999: every step rounds. The chain contracts (|m| < 1), so the error stays
  // within a few ulps of the limit a / (1 - m).
  const std::int64_t count = kernels().chain_group_floats + 7;
  GuardedBuffer<float> chains(static_cast<std::size_t>(count));
  chains.assign(testing::uniform_vector(chains.size(), 3, -1.0f, 1.0f));
  const std::vector<float> start = chains.to_vector();
  kernels().fma_chains(chains.data(), count, 0.999f, 0.001f, 2000);
  for (std::int64_t i = 0; i < count; ++i) {
    const double expected = reference_chain(start[static_cast<std::size_t>(i)], 0.999f, 0.001f, 2000);
    EXPECT_NEAR(chains[static_cast<std::size_t>(i)], expected, 3e-4) << "chain " << i;
    EXPECT_GT(std::abs(chains[static_cast<std::size_t>(i)] - start[static_cast<std::size_t>(i)]), 0.0f) << "chain " << i;
  }
}

TEST_P(PeakTest, StreamTriadMatchesTheScalarLoop) {
  for (std::int64_t n : testing::tail_lengths()) {
    GuardedBuffer<float> a(static_cast<std::size_t>(n)), b(static_cast<std::size_t>(n)), out(static_cast<std::size_t>(n));
    a.assign(testing::uniform_vector(a.size(), 1));
    b.assign(testing::uniform_vector(b.size(), 2));
    kernels().stream_triad(out.data(), a.data(), b.data(), 2.0f, n);
    for (std::size_t i = 0; i < out.size(); ++i) {
      // 2 * b is exact, so fused and unfused rounding agree.
      ASSERT_TRUE(testing::same_bits(out[i], a[i] + 2.0f * b[i])) << "n " << n << ", element " << i;
    }
  }
}

TEST_P(PeakTest, KernelsForIsaReturnsThisIsasTable) {
  const Isa isa = GetParam();
  testing::expect_kernels_for_is_safe(isa, "peak", [isa] {
    const PeakKernels& table = peak_kernels_for(isa);
    const PeakKernels made = kernels_under_test(isa);
    return table.fma_chains == made.fma_chains && table.stream_triad == made.stream_triad &&
           table.chain_group_floats == made.chain_group_floats;
  });
}

INSTANTIATE_TEST_SUITE_P(Isas, PeakTest, testing::all_available_isas(), testing::IsaName());

}  // namespace
}  // namespace ember::simd
