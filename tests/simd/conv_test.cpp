// simd/conv.h (direct convolution for few input channels) against a double-precision
// scalar reference, for every instruction set this CPU runs: 1..4 input channels, output
// channel counts around the kernel's block of 4, kernel sizes 1..5 (square and not),
// padding 0..2, output widths below, at and above every vector width, with and without
// bias, ReLU and the fused 2x2 max pool (odd sizes drop their last row and column).
// Output and scratch sit against guard pages: a write past either faults.
#include "simd/conv.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "simd_test_support.h"

namespace ember::simd {
namespace {

ConvKernels kernels_under_test(Isa isa) {
  return testing::made_for<ConvKernels, make_conv_kernels<ArchSse42>, make_conv_kernels<ArchAvx2>, make_conv_kernels<ArchAvx512>>(isa);
}

using testing::GuardedBuffer;
constexpr double u = testing::float_unit_roundoff;

struct Reference {
  std::vector<double> value;  // the exact result (to double precision)
  std::vector<double> bound;  // the float kernel's error bound at each output
};

// conv(y, x) of channel o of image n, and the sum of its terms' magnitudes.
void reference_conv_at(const DirectConvShape& s, const std::vector<float>& in, const std::vector<float>& weight,
                       const std::vector<float>& bias, std::int64_t n, std::int64_t o, std::int64_t y, std::int64_t x,
                       double& value, double& magnitude) {
  value = bias.empty() ? 0.0 : bias[static_cast<std::size_t>(o)];
  magnitude = std::abs(value);
  for (std::int64_t c = 0; c < s.in_channels; ++c) {
    for (std::int64_t ky = 0; ky < s.kernel_h; ++ky) {
      for (std::int64_t kx = 0; kx < s.kernel_w; ++kx) {
        const std::int64_t iy = y + ky - s.pad_h, ix = x + kx - s.pad_w;
        if (iy < 0 || iy >= s.height || ix < 0 || ix >= s.width) continue;
        const double term = static_cast<double>(in[static_cast<std::size_t>(((n * s.in_channels + c) * s.height + iy) * s.width + ix)]) *
                            weight[static_cast<std::size_t>(((o * s.in_channels + c) * s.kernel_h + ky) * s.kernel_w + kx)];
        value += term;
        magnitude += std::abs(term);
      }
    }
  }
}

Reference reference(const DirectConvShape& s, const std::vector<float>& in, const std::vector<float>& weight,
                    const std::vector<float>& bias) {
  Reference r;
  const std::int64_t taps = s.in_channels * s.kernel_h * s.kernel_w;
  const std::int64_t window = s.pool ? 2 : 1;
  for (std::int64_t n = 0; n < s.batch; ++n) {
    for (std::int64_t o = 0; o < s.out_channels; ++o) {
      for (std::int64_t y = 0; y < s.out_h(); ++y) {
        for (std::int64_t x = 0; x < s.out_w(); ++x) {
          double best = -std::numeric_limits<double>::infinity(), bound = 0.0;
          for (std::int64_t dy = 0; dy < window; ++dy) {
            for (std::int64_t dx = 0; dx < window; ++dx) {
              double value = 0.0, magnitude = 0.0;
              reference_conv_at(s, in, weight, bias, n, o, window * y + dy, window * x + dx, value, magnitude);
              best = std::max(best, value);
              bound = std::max(bound, static_cast<double>(taps + 1) * u * magnitude);  // a chain of taps FMAs
            }
          }
          r.value.push_back(s.relu ? std::max(best, 0.0) : best);
          r.bound.push_back(bound + 1e-30);
        }
      }
    }
  }
  return r;
}

std::string describe(const DirectConvShape& s) {
  return "batch " + std::to_string(s.batch) + ", " + std::to_string(s.in_channels) + "->" + std::to_string(s.out_channels) +
         " channels, input " + std::to_string(s.height) + "x" + std::to_string(s.width) + ", kernel " +
         std::to_string(s.kernel_h) + "x" + std::to_string(s.kernel_w) + ", padding " + std::to_string(s.pad_h) + "," +
         std::to_string(s.pad_w) + (s.relu ? ", relu" : "") + (s.pool ? ", pool" : "");
}

// Runs the kernel on guarded buffers and checks every output against the reference.
void check(const ConvKernels& kernels, const DirectConvShape& s, bool with_bias, std::uint64_t seed) {
  const auto in = testing::normal_vector(static_cast<std::size_t>(s.batch * s.in_channels * s.height * s.width), seed);
  const auto weight = testing::uniform_vector(static_cast<std::size_t>(s.out_channels * s.in_channels * s.kernel_h * s.kernel_w), seed + 1);
  const auto bias = with_bias ? testing::uniform_vector(static_cast<std::size_t>(s.out_channels), seed + 2) : std::vector<float>{};
  const Reference r = reference(s, in, weight, bias);
  GuardedBuffer<float> out(r.value.size());
  GuardedBuffer<float> scratch(direct_conv2d_scratch_floats(s));
  std::fill(out.begin(), out.end(), std::numeric_limits<float>::quiet_NaN());
  std::fill(scratch.begin(), scratch.end(), std::numeric_limits<float>::quiet_NaN());  // the kernel must zero what it pads
  kernels.direct_conv2d_forward(out.data(), in.data(), weight.data(), with_bias ? bias.data() : nullptr, scratch.data(), s);
  for (std::size_t i = 0; i < r.value.size(); ++i) {
    ASSERT_LE(std::abs(out[i] - r.value[i]), r.bound[i])
        << describe(s) << (with_bias ? ", bias" : "") << ": output " << i << " is " << out[i] << ", expected " << r.value[i];
  }
}

class DirectConvTest : public ::testing::TestWithParam<Isa> {
 protected:
  ConvKernels kernels() const { return kernels_under_test(GetParam()); }
};

TEST_P(DirectConvTest, MatchesReferenceAcrossShapes) {
  std::uint64_t seed = 100;
  for (std::int64_t in_channels : {1, 2, 4}) {
    for (std::int64_t out_channels : {1, 4, 6, 7, 19}) {  // 19: several channel blocks and a rest
      for (std::array<std::int64_t, 3> kernel_pad : {std::array<std::int64_t, 3>{1, 1, 0}, {3, 3, 1}, {5, 5, 0}, {2, 3, 2}, {5, 3, 1}}) {
        for (bool pool : {false, true}) {
          DirectConvShape s;
          s.batch = 2;
          s.in_channels = in_channels;
          s.out_channels = out_channels;
          s.kernel_h = kernel_pad[0];
          s.kernel_w = kernel_pad[1];
          s.pad_h = s.pad_w = kernel_pad[2];
          s.relu = (seed % 2) == 0;
          s.pool = pool;
          s.height = 7;
          s.width = 9;
          ++seed;
          check(kernels(), s, (seed % 3) != 0, seed);
        }
      }
    }
  }
}

TEST_P(DirectConvTest, MatchesReferenceAtEveryTailWidth) {
  // Output widths (pooled, with the pool) of every tail length up to 33.
  std::uint64_t seed = 500;
  for (bool pool : {false, true}) {
    for (std::int64_t out_w : testing::tail_lengths()) {
      if (out_w == 0 || out_w > 40) continue;
      for (bool relu : {false, true}) {
        DirectConvShape s;
        s.in_channels = 3;
        s.out_channels = 5;
        s.kernel_h = 3;
        s.kernel_w = 3;
        s.pad_h = 1;
        s.pad_w = 1;
        s.relu = relu;
        s.pool = pool;
        s.height = pool ? 5 : 3;
        ++seed;
        s.width = pool ? 2 * out_w + static_cast<std::int64_t>(seed % 2) : out_w;  // an odd conv width drops its last column
        check(kernels(), s, true, seed);
      }
    }
  }
}

TEST_P(DirectConvTest, ModelShapes) {
  // lenet's conv1 (+ReLU+pool), attn-cnn's conv1 (+ReLU) and the seed CNN's (+ReLU+pool).
  DirectConvShape lenet{3, 1, 6, 32, 32, 5, 5, 0, 0, true, true};
  check(kernels(), lenet, true, 900);
  DirectConvShape attn{2, 1, 32, 28, 28, 3, 3, 1, 1, true, false};
  check(kernels(), attn, true, 901);
  DirectConvShape seed_cnn{2, 1, 32, 28, 28, 3, 3, 1, 1, true, true};
  check(kernels(), seed_cnn, true, 902);
}

TEST_P(DirectConvTest, SameBitsForEveryBatchSize) {
  DirectConvShape s{5, 2, 6, 12, 12, 5, 5, 2, 2, true, true};
  const auto in = testing::normal_vector(static_cast<std::size_t>(5 * 2 * 12 * 12), 7);
  const auto weight = testing::uniform_vector(6 * 2 * 25, 8);
  const auto bias = testing::uniform_vector(6, 9);
  std::vector<float> scratch(direct_conv2d_scratch_floats(s));
  std::vector<float> all(static_cast<std::size_t>(5 * 6 * s.out_h() * s.out_w()));
  kernels().direct_conv2d_forward(all.data(), in.data(), weight.data(), bias.data(), scratch.data(), s);
  const std::size_t image_out = all.size() / 5, image_in = in.size() / 5;
  s.batch = 1;
  std::vector<float> one(image_out);
  for (std::size_t n = 0; n < 5; ++n) {
    kernels().direct_conv2d_forward(one.data(), in.data() + n * image_in, weight.data(), bias.data(), scratch.data(), s);
    for (std::size_t i = 0; i < image_out; ++i) ASSERT_TRUE(testing::same_bits(one[i], all[n * image_out + i])) << "image " << n;
  }
}

TEST_P(DirectConvTest, KernelsForIsaReturnsThisIsasTable) {
  const Isa isa = GetParam();
  testing::expect_kernels_for_is_safe(isa, "conv", [isa] {
    return conv_kernels_for(isa).direct_conv2d_forward == kernels_under_test(isa).direct_conv2d_forward;
  });
}

INSTANTIATE_TEST_SUITE_P(Isas, DirectConvTest, testing::all_available_isas(), testing::IsaName());

}  // namespace
}  // namespace ember::simd
