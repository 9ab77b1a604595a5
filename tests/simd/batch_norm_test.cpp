// simd/batch_norm.h against double-precision scalar references, for every instruction set
// this CPU runs, over channel-blocked layouts (N, C/b, S, b) with b = 1 (NCHW), 4, 8, 16
// (oneDNN's nChw8c / nChw16c) and b = C (NHWC): channel counts that fill no block, spatial
// sizes below, at and above every vector width. Padding lanes of inputs hold NaN (they
// must not reach any sum) and must come out 0. Values around 100 with spread 0.1 catch a
// one-pass variance.
#include "simd/batch_norm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "simd_test_support.h"

namespace ember::simd {
namespace {

BatchNormKernels kernels_under_test(Isa isa) {
  return testing::made_for<BatchNormKernels, make_batch_norm_kernels<ArchSse42>, make_batch_norm_kernels<ArchAvx2>,
                           make_batch_norm_kernels<ArchAvx512>>(isa);
}

using testing::GuardedBuffer;
constexpr double u = testing::float_unit_roundoff;
constexpr float nan = std::numeric_limits<float>::quiet_NaN();

std::int64_t offset_of(const ChannelBlocked& shape, std::int64_t n, std::int64_t c, std::int64_t s) {
  return ((n * shape.blocks() + c / shape.block) * shape.spatial + s) * shape.block + c % shape.block;
}

std::string describe(Isa isa, const ChannelBlocked& shape) {
  return std::string(isa_name(isa)) + " N " + std::to_string(shape.samples) + " C " + std::to_string(shape.channels) + " S " +
         std::to_string(shape.spatial) + " b " + std::to_string(shape.block);
}

// Every layout the tests visit: b = 1, 4, 8, 16 and C for each channel count.
std::vector<ChannelBlocked> layouts() {
  std::vector<ChannelBlocked> all;
  for (std::int64_t channels : {1, 3, 16, 17, 33}) {
    std::vector<std::int64_t> blocks{1, 4, 8, 16};
    if (std::find(blocks.begin(), blocks.end(), channels) == blocks.end()) blocks.push_back(channels);
    for (std::int64_t block : blocks) {
      for (std::int64_t spatial : {1, 2, 3, 7, 16, 17, 33}) {
        for (std::int64_t samples : {1, 3}) all.push_back(ChannelBlocked{samples, channels, spatial, block});
      }
    }
  }
  all.push_back(ChannelBlocked{2, 5, 1000, 1});  // long runs per channel
  all.push_back(ChannelBlocked{2, 20, 250, 16});
  all.push_back(ChannelBlocked{2, 24, 250, 24});
  return all;
}

// A plain (N, C, S) tensor written into a blocked buffer; padding lanes get `padding`.
struct BlockedTensor {
  BlockedTensor(const ChannelBlocked& shape, const std::vector<float>& plain, float padding)
      : buffer(static_cast<std::size_t>(shape.padded_elements())) {
    std::fill(buffer.begin(), buffer.end(), padding);
    for (std::int64_t n = 0; n < shape.samples; ++n)
      for (std::int64_t c = 0; c < shape.channels; ++c)
        for (std::int64_t s = 0; s < shape.spatial; ++s)
          buffer[static_cast<std::size_t>(offset_of(shape, n, c, s))] =
              plain[static_cast<std::size_t>((n * shape.channels + c) * shape.spatial + s)];
  }
  GuardedBuffer<float> buffer;
};

std::size_t plain_index(const ChannelBlocked& shape, std::int64_t n, std::int64_t c, std::int64_t s) {
  return static_cast<std::size_t>((n * shape.channels + c) * shape.spatial + s);
}

std::vector<float> values_around(double center, double spread, std::size_t n, std::uint64_t seed) {
  std::vector<float> v = testing::normal_vector(n, seed);
  for (float& x : v) x = static_cast<float>(center + spread * x);
  return v;
}

// Every padding lane of an output is exactly 0.
void expect_padding_zero(const GuardedBuffer<float>& out, const ChannelBlocked& shape, const std::string& where) {
  for (std::int64_t n = 0; n < shape.samples; ++n)
    for (std::int64_t c = shape.channels; c < shape.blocks() * shape.block; ++c)
      for (std::int64_t s = 0; s < shape.spatial; ++s) {
        const float y = out[static_cast<std::size_t>(offset_of(shape, n, c, s))];
        ASSERT_EQ(y, 0.0f) << where << ": padding lane of channel " << c << " at n " << n << " s " << s << " is " << y;
      }
}

class BatchNormKernelTest : public ::testing::TestWithParam<Isa> {
 protected:
  BatchNormKernels kernels() const { return kernels_under_test(GetParam()); }
};

TEST_P(BatchNormKernelTest, StatisticsMatchReference) {
  std::uint64_t seed = 100;
  for (const ChannelBlocked& shape : layouts()) {
    for (double center : {0.0, 100.0}) {
      const double spread = center == 0.0 ? 1.0 : 0.1;
      const auto plain_size = static_cast<std::size_t>(shape.samples * shape.channels * shape.spatial);
      const std::vector<float> x = values_around(center, spread, plain_size, ++seed);
      BlockedTensor in(shape, x, nan);
      GuardedBuffer<float> mean(static_cast<std::size_t>(shape.channels)), m2(static_cast<std::size_t>(shape.channels));
      kernels().statistics(mean.data(), m2.data(), in.buffer.data(), shape);
      const std::string where = describe(GetParam(), shape) + " center " + std::to_string(center);
      for (std::int64_t c = 0; c < shape.channels; ++c) {
        double sum = 0.0;
        for (std::int64_t n = 0; n < shape.samples; ++n)
          for (std::int64_t s = 0; s < shape.spatial; ++s) sum += x[plain_index(shape, n, c, s)];
        const double reference_mean = sum / static_cast<double>(shape.count());
        double reference_m2 = 0.0;
        for (std::int64_t n = 0; n < shape.samples; ++n)
          for (std::int64_t s = 0; s < shape.spatial; ++s) {
            const double d = x[plain_index(shape, n, c, s)] - reference_mean;
            reference_m2 += d * d;
          }
        const double deviation = std::sqrt(reference_m2 / static_cast<double>(shape.count()));
        const auto i = static_cast<std::size_t>(c);
        // The corrected mean is within a few u of |mean| + deviation (measured: under 1 u).
        ASSERT_LE(std::fabs(mean[i] - reference_mean), 4.0 * u * (std::fabs(reference_mean) + deviation))
            << where << " channel " << c << ": mean " << mean[i] << ", reference " << reference_mean;
        // M2 about the corrected mean, in float sums of at most a few hundred terms per
        // accumulator (measured: under 6 u, relative, on the lanes summed one at a time).
        ASSERT_LE(std::fabs(m2[i] - reference_m2), 32.0 * u * reference_m2 + 1e-30)
            << where << " channel " << c << ": M2 " << m2[i] << ", reference " << reference_m2;
      }
    }
  }
}

TEST_P(BatchNormKernelTest, StatisticsOfAConstantChannelHaveNoSpread) {
  for (std::int64_t block : {1, 8, 16, 17}) {
    const ChannelBlocked shape{3, 17, 9, block};
    const std::vector<float> x(static_cast<std::size_t>(3 * 17 * 9), -7.5f);
    BlockedTensor in(shape, x, nan);
    GuardedBuffer<float> mean(17), m2(17);
    kernels().statistics(mean.data(), m2.data(), in.buffer.data(), shape);
    for (std::size_t c = 0; c < 17; ++c) {
      ASSERT_EQ(mean[c], -7.5f) << describe(GetParam(), shape) << " channel " << c;
      ASSERT_EQ(m2[c], 0.0f) << describe(GetParam(), shape) << " channel " << c;
    }
  }
}

TEST_P(BatchNormKernelTest, AffineMatchesReferenceAndZeroesPadding) {
  std::uint64_t seed = 2000;
  for (const ChannelBlocked& shape : layouts()) {
    for (bool in_place : {false, true}) {
      const auto plain_size = static_cast<std::size_t>(shape.samples * shape.channels * shape.spatial);
      const auto channels = static_cast<std::size_t>(shape.channels);
      const std::vector<float> x = testing::normal_vector(plain_size, ++seed, 3.0f);
      const std::vector<float> scale = testing::normal_vector(channels, ++seed);
      const std::vector<float> shift = testing::normal_vector(channels, ++seed);
      BlockedTensor in(shape, x, nan);
      GuardedBuffer<float> separate(static_cast<std::size_t>(shape.padded_elements()));
      std::fill(separate.begin(), separate.end(), nan);
      GuardedBuffer<float>& out = in_place ? in.buffer : separate;
      GuardedBuffer<float> scale_buffer(channels), shift_buffer(channels);
      scale_buffer.assign(scale);
      shift_buffer.assign(shift);
      kernels().affine(out.data(), in.buffer.data(), scale_buffer.data(), shift_buffer.data(), shape);
      const std::string where = describe(GetParam(), shape) + (in_place ? " in place" : "");
      for (std::int64_t n = 0; n < shape.samples; ++n)
        for (std::int64_t c = 0; c < shape.channels; ++c)
          for (std::int64_t s = 0; s < shape.spatial; ++s) {
            const auto ci = static_cast<std::size_t>(c);
            const double xv = x[plain_index(shape, n, c, s)];
            const double reference = xv * scale[ci] + shift[ci];
            const float got = out[static_cast<std::size_t>(offset_of(shape, n, c, s))];
            ASSERT_LE(std::fabs(got - reference), 2.0 * u * (std::fabs(xv * scale[ci]) + std::fabs(shift[ci])))
                << where << " (n " << n << ", c " << c << ", s " << s << "): got " << got << ", reference " << reference;
          }
      expect_padding_zero(out, shape, where);
      if (HasFatalFailure()) return;
    }
  }
}

TEST_P(BatchNormKernelTest, BackwardSumsMatchReference) {
  std::uint64_t seed = 3000;
  for (const ChannelBlocked& shape : layouts()) {
    const auto plain_size = static_cast<std::size_t>(shape.samples * shape.channels * shape.spatial);
    const auto channels = static_cast<std::size_t>(shape.channels);
    const std::vector<float> x = values_around(2.0, 1.0, plain_size, ++seed);
    const std::vector<float> dy = testing::normal_vector(plain_size, ++seed);
    const std::vector<float> mean = values_around(2.0, 0.1, channels, ++seed);
    BlockedTensor in(shape, x, nan), out_grad(shape, dy, nan);
    GuardedBuffer<float> mean_buffer(channels), sum_dy(channels), sum_dy_centered(channels);
    mean_buffer.assign(mean);
    kernels().backward_sums(sum_dy.data(), sum_dy_centered.data(), out_grad.buffer.data(), in.buffer.data(), mean_buffer.data(), shape);
    const std::string where = describe(GetParam(), shape);
    for (std::int64_t c = 0; c < shape.channels; ++c) {
      const auto ci = static_cast<std::size_t>(c);
      double reference_dy = 0.0, reference_centered = 0.0, magnitude_dy = 0.0, magnitude_centered = 0.0;
      for (std::int64_t n = 0; n < shape.samples; ++n)
        for (std::int64_t s = 0; s < shape.spatial; ++s) {
          const std::size_t i = plain_index(shape, n, c, s);
          const double term = static_cast<double>(dy[i]) * (static_cast<double>(x[i]) - mean[ci]);
          reference_dy += dy[i];
          reference_centered += term;
          magnitude_dy += std::fabs(dy[i]);
          magnitude_centered += std::fabs(term);
        }
      // Float sums relative to the sum of magnitudes (measured: under 4 u).
      ASSERT_LE(std::fabs(sum_dy[ci] - reference_dy), 32.0 * u * magnitude_dy)
          << where << " channel " << c << ": sum dy " << sum_dy[ci] << ", reference " << reference_dy;
      ASSERT_LE(std::fabs(sum_dy_centered[ci] - reference_centered), 32.0 * u * magnitude_centered)
          << where << " channel " << c << ": sum dy (x - mean) " << sum_dy_centered[ci] << ", reference " << reference_centered;
    }
  }
}

TEST_P(BatchNormKernelTest, BackwardApplyMatchesReferenceAndZeroesPadding) {
  std::uint64_t seed = 4000;
  for (const ChannelBlocked& shape : layouts()) {
    for (bool aliased : {false, true}) {
      const auto plain_size = static_cast<std::size_t>(shape.samples * shape.channels * shape.spatial);
      const auto channels = static_cast<std::size_t>(shape.channels);
      const std::vector<float> x = testing::normal_vector(plain_size, ++seed);
      const std::vector<float> dy = testing::normal_vector(plain_size, ++seed);
      const std::vector<float> k = testing::normal_vector(channels, ++seed);
      const std::vector<float> p = testing::normal_vector(channels, ++seed);
      const std::vector<float> q = testing::normal_vector(channels, ++seed);
      BlockedTensor in(shape, x, nan), out_grad(shape, dy, nan);
      GuardedBuffer<float> separate(static_cast<std::size_t>(shape.padded_elements()));
      std::fill(separate.begin(), separate.end(), nan);
      GuardedBuffer<float>& in_grad = aliased ? out_grad.buffer : separate;
      GuardedBuffer<float> kb(channels), pb(channels), qb(channels);
      kb.assign(k);
      pb.assign(p);
      qb.assign(q);
      kernels().backward_apply(in_grad.data(), out_grad.buffer.data(), in.buffer.data(), kb.data(), pb.data(), qb.data(), shape);
      const std::string where = describe(GetParam(), shape) + (aliased ? " (in_grad aliases out_grad)" : "");
      for (std::int64_t n = 0; n < shape.samples; ++n)
        for (std::int64_t c = 0; c < shape.channels; ++c)
          for (std::int64_t s = 0; s < shape.spatial; ++s) {
            const auto ci = static_cast<std::size_t>(c);
            const std::size_t i = plain_index(shape, n, c, s);
            const double a = static_cast<double>(k[ci]) * dy[i], b = static_cast<double>(p[ci]) * x[i];
            const double reference = a + b + q[ci];
            const float got = in_grad[static_cast<std::size_t>(offset_of(shape, n, c, s))];
            ASSERT_LE(std::fabs(got - reference), 3.0 * u * (std::fabs(a) + std::fabs(b) + std::fabs(q[ci])))
                << where << " (n " << n << ", c " << c << ", s " << s << "): got " << got << ", reference " << reference;
          }
      expect_padding_zero(in_grad, shape, where);
      if (HasFatalFailure()) return;
    }
  }
}

TEST_P(BatchNormKernelTest, KernelsForIsaReturnsThisIsasTable) {
  const Isa isa = GetParam();
  testing::expect_kernels_for_is_safe(isa, "batch_norm", [isa] {
    const BatchNormKernels& table = batch_norm_kernels_for(isa);
    const BatchNormKernels made = kernels_under_test(isa);
    return table.statistics == made.statistics && table.affine == made.affine && table.backward_sums == made.backward_sums &&
           table.backward_apply == made.backward_apply;
  });
}

INSTANTIATE_TEST_SUITE_P(Isas, BatchNormKernelTest, testing::all_available_isas(), testing::IsaName());

}  // namespace
}  // namespace ember::simd
