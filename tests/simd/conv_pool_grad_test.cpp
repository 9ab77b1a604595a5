// Training's fused direct conv + 2x2 max pool (simd/conv.h direct_conv2d_pool_forward, and
// simd/conv_pool_grad.h), for every instruction set this CPU runs, against scalar
// references: the forward's pooled values and winners bit for bit against a float
// emulation of the kernel's sums (bias, then the taps in weight order, FMA where the set
// has it), ties included (small integers make whole windows equal); the parameter
// gradients against a double-precision sum over each window's winner. Buffers sit against
// guard pages: a read or write past one faults.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "simd/conv.h"
#include "simd/conv_pool_grad.h"
#include "simd_test_support.h"

namespace ember::simd {
namespace {

using testing::GuardedBuffer;
constexpr double u = testing::float_unit_roundoff;

ConvKernels forward_kernels(Isa isa) {
  return testing::made_for<ConvKernels, make_conv_kernels<ArchSse42>, make_conv_kernels<ArchAvx2>, make_conv_kernels<ArchAvx512>>(isa);
}

ConvPoolGradKernels grad_kernels(Isa isa) {
  return testing::made_for<ConvPoolGradKernels, make_conv_pool_grad_kernels<ArchSse42>, make_conv_pool_grad_kernels<ArchAvx2>,
                           make_conv_pool_grad_kernels<ArchAvx512>>(isa);
}

std::size_t index_of(const std::array<std::int64_t, 4>& dims, std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d) {
  return static_cast<std::size_t>(((a * dims[1] + b) * dims[2] + c) * dims[3] + d);
}

// The input at (n, c, iy, ix), 0 in the padding.
float input_at(const DirectConvShape& s, const std::vector<float>& in, std::int64_t n, std::int64_t c, std::int64_t iy,
               std::int64_t ix) {
  if (iy < 0 || iy >= s.height || ix < 0 || ix >= s.width) return 0.0f;
  return in[index_of({s.batch, s.in_channels, s.height, s.width}, n, c, iy, ix)];
}

// The conv value the kernel forms at conv position (y, x): from the bias, each tap in
// weight order (padding taps too, as 0), with one rounding per tap where the instruction
// set has FMA and two where it has not (SSE4.2: xsimd's fma is a multiply and an add).
// `fused`: false emulates two roundings whatever the instruction set.
float emulated_conv_at(Isa isa, const DirectConvShape& s, const std::vector<float>& in, const std::vector<float>& weight,
                       const std::vector<float>& bias, std::int64_t n, std::int64_t o, std::int64_t y, std::int64_t x,
                       bool fused = true) {
  float acc = bias.empty() ? 0.0f : bias[static_cast<std::size_t>(o)];
  for (std::int64_t c = 0; c < s.in_channels; ++c) {
    for (std::int64_t ky = 0; ky < s.kernel_h; ++ky) {
      for (std::int64_t kx = 0; kx < s.kernel_w; ++kx) {
        const float v = input_at(s, in, n, c, y + ky - s.pad_h, x + kx - s.pad_w);
        const float w = weight[index_of({s.out_channels, s.in_channels, s.kernel_h, s.kernel_w}, o, c, ky, kx)];
        if (isa == Isa::sse4_2 || !fused) {
          const float product = v * w;
          acc = product + acc;
        } else {
          acc = std::fma(v, w, acc);
        }
      }
    }
  }
  return acc;
}

struct PooledReference {
  std::vector<float> value;
  std::vector<std::uint8_t> winner;
};

// The first of equal maxima in row-major window order: a later value wins only when
// strictly greater (oneDNN's and PyTorch's rule).
PooledReference pooled_reference(Isa isa, const DirectConvShape& s, const std::vector<float>& in, const std::vector<float>& weight,
                                 const std::vector<float>& bias, bool fused = true) {
  PooledReference r;
  for (std::int64_t n = 0; n < s.batch; ++n) {
    for (std::int64_t o = 0; o < s.out_channels; ++o) {
      for (std::int64_t y = 0; y < s.out_h(); ++y) {
        for (std::int64_t x = 0; x < s.out_w(); ++x) {
          float best = 0.0f;
          std::uint8_t winner = 0;
          for (int position = 0; position < 4; ++position) {
            const float v = emulated_conv_at(isa, s, in, weight, bias, n, o, 2 * y + position / 2, 2 * x + position % 2, fused);
            if (position == 0 || v > best) {
              best = v;
              winner = static_cast<std::uint8_t>(position);
            }
          }
          r.value.push_back(s.relu ? std::max(best, 0.0f) : best);
          r.winner.push_back(winner);
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
         std::to_string(s.pad_w) + (s.relu ? ", relu" : "");
}

std::size_t pooled_count(const DirectConvShape& s) { return static_cast<std::size_t>(s.batch * s.out_channels * s.out_h() * s.out_w()); }

// Small integers: every sum exact, and windows full of equal values.
std::vector<float> small_integers(std::size_t n, std::uint64_t seed, int most) {
  std::vector<float> v = testing::uniform_vector(n, seed, -static_cast<float>(most) - 0.5f, static_cast<float>(most) + 0.5f);
  for (float& x : v) x = std::round(x);
  return v;
}

void check_forward(Isa isa, const DirectConvShape& s, const std::vector<float>& in, const std::vector<float>& weight,
                   const std::vector<float>& bias, const std::string& what) {
  const PooledReference r = pooled_reference(isa, s, in, weight, bias);
  // xsimd 8.1 has no AVX-512 fma: its x * y + z is one fused instruction only where the
  // compiler contracts it (the release preset's -O3), and two roundings in the sanitizer
  // presets' -O1 kernels. Either is this kernel's arithmetic; no other is.
  const PooledReference split = pooled_reference(isa, s, in, weight, bias, isa != Isa::avx512);
  GuardedBuffer<float> out(r.value.size());
  GuardedBuffer<std::uint8_t> winners(r.winner.size());
  GuardedBuffer<float> scratch(direct_conv2d_pool_forward_scratch_floats(s));
  std::fill(out.begin(), out.end(), std::numeric_limits<float>::quiet_NaN());
  std::fill(winners.begin(), winners.end(), std::uint8_t{99});
  std::fill(scratch.begin(), scratch.end(), std::numeric_limits<float>::quiet_NaN());
  forward_kernels(isa).direct_conv2d_pool_forward(out.data(), winners.data(), in.data(), weight.data(),
                                                  bias.empty() ? nullptr : bias.data(), scratch.data(), s);
  for (std::size_t i = 0; i < r.value.size(); ++i) {
    const bool as_split = !testing::same_bits(out[i], r.value[i]) && testing::same_bits(out[i], split.value[i]);
    const PooledReference& e = as_split ? split : r;
    ASSERT_EQ(static_cast<int>(winners[i]), static_cast<int>(e.winner[i])) << describe(s) << what << ": winner of output " << i;
    ASSERT_TRUE(testing::same_bits(out[i], e.value[i]))
        << describe(s) << what << ": output " << i << " is " << out[i] << ", expected " << e.value[i];
  }
}

std::vector<DirectConvShape> forward_shapes() {
  std::vector<DirectConvShape> shapes;
  for (std::int64_t in_channels : {1, 2, 4}) {
    for (std::int64_t out_channels : {1, 6, 32}) {
      for (std::array<std::int64_t, 3> kernel_pad : {std::array<std::int64_t, 3>{1, 1, 0}, {3, 3, 1}, {5, 5, 2}, {2, 3, 1}}) {
        // Pooled widths below, at and above the vector widths; odd conv sizes drop a row and column.
        for (std::array<std::int64_t, 2> size : {std::array<std::int64_t, 2>{7, 9}, {6, 34}, {5, 35}}) {
          DirectConvShape s;
          s.batch = 2;
          s.in_channels = in_channels;
          s.out_channels = out_channels;
          s.kernel_h = kernel_pad[0];
          s.kernel_w = kernel_pad[1];
          s.pad_h = s.pad_w = kernel_pad[2];
          s.height = size[0];
          s.width = size[1];
          s.pool = true;
          shapes.push_back(s);
        }
      }
    }
  }
  DirectConvShape seed_cnn{3, 1, 32, 28, 28, 3, 3, 1, 1, false, true};
  shapes.push_back(seed_cnn);
  return shapes;
}

class ConvPoolTrainingTest : public ::testing::TestWithParam<Isa> {};

TEST_P(ConvPoolTrainingTest, ForwardMatchesTheEmulatedSumsAndPicksTheFirstMaximum) {
  std::uint64_t seed = 300;
  for (DirectConvShape s : forward_shapes()) {
    ++seed;
    s.relu = (seed % 4) == 0;
    const auto in = testing::normal_vector(static_cast<std::size_t>(s.batch * s.in_channels * s.height * s.width), seed);
    const auto weight = testing::uniform_vector(static_cast<std::size_t>(s.out_channels * s.in_channels * s.kernel_h * s.kernel_w), seed + 1);
    const auto bias = (seed % 3) != 0 ? testing::uniform_vector(static_cast<std::size_t>(s.out_channels), seed + 2) : std::vector<float>{};
    check_forward(GetParam(), s, in, weight, bias, "");
  }
}

TEST_P(ConvPoolTrainingTest, TiesGoToTheFirstMaximumInRowMajorWindowOrder) {
  std::uint64_t seed = 700;
  std::size_t tied_windows = 0;
  for (const DirectConvShape& s : forward_shapes()) {
    ++seed;
    const auto in = small_integers(static_cast<std::size_t>(s.batch * s.in_channels * s.height * s.width), seed, 1);
    const auto weight = small_integers(static_cast<std::size_t>(s.out_channels * s.in_channels * s.kernel_h * s.kernel_w), seed + 1, 1);
    const auto bias = small_integers(static_cast<std::size_t>(s.out_channels), seed + 2, 1);
    check_forward(GetParam(), s, in, weight, bias, ", small integers");
    // The check means something only where windows hold equal maxima away from position 0.
    const PooledReference r = pooled_reference(GetParam(), s, in, weight, bias);
    tied_windows += static_cast<std::size_t>(std::count_if(r.winner.begin(), r.winner.end(), [](std::uint8_t w) { return w != 0; }));
  }
  EXPECT_GT(tied_windows, 1000u);
  // A constant image: every window a 4-way tie, won by position 0.
  DirectConvShape flat{2, 1, 5, 12, 20, 3, 3, 1, 1, false, true};
  const std::vector<float> in(static_cast<std::size_t>(2 * 12 * 20), 0.0f);
  check_forward(GetParam(), flat, in, testing::uniform_vector(45, 5), testing::uniform_vector(5, 6), ", zero image");
}

// The parameter gradients of random winners, in double.
void reference_grads(const DirectConvShape& s, const std::vector<float>& in, const std::vector<float>& output_grad,
                     const std::vector<std::uint8_t>& winners, std::vector<double>& weight_grad, std::vector<double>& bias_grad,
                     std::vector<double>& weight_bound, std::vector<double>& bias_bound) {
  const std::int64_t taps = s.in_channels * s.kernel_h * s.kernel_w;
  weight_grad.assign(static_cast<std::size_t>(s.out_channels * taps), 0.0);
  weight_bound.assign(weight_grad.size(), 0.0);
  bias_grad.assign(static_cast<std::size_t>(s.out_channels), 0.0);
  bias_bound.assign(bias_grad.size(), 0.0);
  const double terms = static_cast<double>(s.batch * s.out_h() * s.out_w() + 16);  // per lane, then the lanes
  const std::array<std::int64_t, 4> out_dims{s.batch, s.out_channels, s.out_h(), s.out_w()};
  for (std::int64_t n = 0; n < s.batch; ++n) {
    for (std::int64_t o = 0; o < s.out_channels; ++o) {
      for (std::int64_t y = 0; y < s.out_h(); ++y) {
        for (std::int64_t x = 0; x < s.out_w(); ++x) {
          const std::size_t at = index_of(out_dims, n, o, y, x);
          const double g = output_grad[at];
          const int w = winners[at];
          const std::int64_t cy = 2 * y + w / 2, cx = 2 * x + w % 2;
          bias_grad[static_cast<std::size_t>(o)] += g;
          bias_bound[static_cast<std::size_t>(o)] += std::abs(g);
          for (std::int64_t c = 0; c < s.in_channels; ++c) {
            for (std::int64_t ky = 0; ky < s.kernel_h; ++ky) {
              for (std::int64_t kx = 0; kx < s.kernel_w; ++kx) {
                const double term = g * input_at(s, in, n, c, cy + ky - s.pad_h, cx + kx - s.pad_w);
                const auto k = static_cast<std::size_t>(((o * s.in_channels + c) * s.kernel_h + ky) * s.kernel_w + kx);
                weight_grad[k] += term;
                weight_bound[k] += std::abs(term);
              }
            }
          }
        }
      }
    }
  }
  for (double& b : weight_bound) b = terms * u * b + 1e-30;
  for (double& b : bias_bound) b = terms * u * b + 1e-30;
}

void check_grads(Isa isa, const DirectConvShape& s, bool with_bias, std::uint64_t seed) {
  const auto in = testing::normal_vector(static_cast<std::size_t>(s.batch * s.in_channels * s.height * s.width), seed);
  const auto output_grad = testing::normal_vector(pooled_count(s), seed + 1);
  std::vector<std::uint8_t> random_winners(pooled_count(s));
  const auto draws = testing::uniform_vector(random_winners.size(), seed + 2, 0.0f, 4.0f);
  for (std::size_t i = 0; i < draws.size(); ++i) random_winners[i] = static_cast<std::uint8_t>(std::min(3.0f, std::floor(draws[i])));
  std::vector<double> weight_ref, bias_ref, weight_bound, bias_bound;
  reference_grads(s, in, output_grad, random_winners, weight_ref, bias_ref, weight_bound, bias_bound);

  GuardedBuffer<float> grad_in(output_grad.size());
  grad_in.assign(output_grad);
  GuardedBuffer<std::uint8_t> winners(random_winners.size());
  winners.assign(random_winners);
  GuardedBuffer<float> scratch(direct_conv2d_pool_grad_scratch_floats(s));
  std::fill(scratch.begin(), scratch.end(), std::numeric_limits<float>::quiet_NaN());
  GuardedBuffer<float> weight_grad(weight_ref.size()), bias_grad(bias_ref.size());
  std::fill(weight_grad.begin(), weight_grad.end(), std::numeric_limits<float>::quiet_NaN());
  std::fill(bias_grad.begin(), bias_grad.end(), std::numeric_limits<float>::quiet_NaN());
  const ConvPoolGradKernels kernels = grad_kernels(isa);
  kernels.direct_conv2d_pool_weight_grad(weight_grad.data(), with_bias ? bias_grad.data() : nullptr, grad_in.data(), winners.data(),
                                         in.data(), scratch.data(), s, false);
  for (std::size_t i = 0; i < weight_ref.size(); ++i) {
    ASSERT_LE(std::abs(weight_grad[i] - weight_ref[i]), weight_bound[i])
        << describe(s) << ": weight gradient " << i << " is " << weight_grad[i] << ", expected " << weight_ref[i];
  }
  for (std::size_t i = 0; with_bias && i < bias_ref.size(); ++i) {
    ASSERT_LE(std::abs(bias_grad[i] - bias_ref[i]), bias_bound[i])
        << describe(s) << ": bias gradient " << i << " is " << bias_grad[i] << ", expected " << bias_ref[i];
  }
  if (!with_bias) {
    for (std::size_t i = 0; i < bias_grad.size(); ++i) ASSERT_TRUE(std::isnan(bias_grad[i])) << "no bias: bias_grad untouched";
  }
  // Accumulating adds this call's sums, the same bits, to what is there.
  const std::vector<float> fresh_weight = weight_grad.to_vector(), fresh_bias = bias_grad.to_vector();
  const auto start_weight = testing::uniform_vector(weight_grad.size(), seed + 3), start_bias = testing::uniform_vector(bias_grad.size(), seed + 4);
  weight_grad.assign(start_weight);
  bias_grad.assign(start_bias);
  kernels.direct_conv2d_pool_weight_grad(weight_grad.data(), with_bias ? bias_grad.data() : nullptr, grad_in.data(), winners.data(),
                                         in.data(), scratch.data(), s, true);
  for (std::size_t i = 0; i < weight_grad.size(); ++i) {
    ASSERT_TRUE(testing::same_bits(weight_grad[i], start_weight[i] + fresh_weight[i])) << describe(s) << ": accumulated weight " << i;
  }
  for (std::size_t i = 0; with_bias && i < bias_grad.size(); ++i) {
    ASSERT_TRUE(testing::same_bits(bias_grad[i], start_bias[i] + fresh_bias[i])) << describe(s) << ": accumulated bias " << i;
  }
}

TEST_P(ConvPoolTrainingTest, WeightGradientsMatchTheReferenceOverEachWinner) {
  std::uint64_t seed = 1100;
  for (const DirectConvShape& s : forward_shapes()) {
    seed += 5;
    check_grads(GetParam(), s, (seed % 3) != 0, seed);
  }
}

TEST_P(ConvPoolTrainingTest, WeightGradientsAtEveryTailWidth) {
  std::uint64_t seed = 1500;
  for (std::int64_t out_w : testing::tail_lengths()) {
    if (out_w == 0 || out_w > 40) continue;
    seed += 5;
    // 1 channel: the 3x3 kernel's own path; 3: the generic one.
    const std::int64_t channels = (seed / 5) % 2 == 0 ? 1 : 3;
    DirectConvShape s{2, channels, 5, 5, 2 * out_w + static_cast<std::int64_t>(seed % 2), 3, 3, 1, 1, false, true};
    check_grads(GetParam(), s, true, seed);
  }
}

TEST_P(ConvPoolTrainingTest, KernelsForIsaReturnsThisIsasTable) {
  const Isa isa = GetParam();
  testing::expect_kernels_for_is_safe(isa, "conv_pool_grad", [isa] {
    return conv_pool_grad_kernels_for(isa).direct_conv2d_pool_weight_grad == grad_kernels(isa).direct_conv2d_pool_weight_grad &&
           conv_kernels_for(isa).direct_conv2d_pool_forward == forward_kernels(isa).direct_conv2d_pool_forward;
  });
}

INSTANTIATE_TEST_SUITE_P(Isas, ConvPoolTrainingTest, testing::all_available_isas(), testing::IsaName());

}  // namespace
}  // namespace ember::simd
