// GELU kernels of simd/activation.h (exact through erfc, and the tanh approximation),
// forward and backward, against double-precision references, for every instruction set
// this CPU runs, at every tail length.
//
// Error bounds are relative to the reference (computed in double) and scale with how much
// the function amplifies a rounding of u: an input or intermediate rounded by u moves a
// term by about |x term'(x) / term(x)| u relative. That grows like x^2 (exact) or |x|^3
// (tanh) only where a term is a tiny fraction of its parts: the left tail, and the
// vanishing 1 - Phi(x) (or 1 - sigmoid) of the right tail. There GELU(x) = x and
// GELU'(x) = 1 to float precision, so a kernel that is wrong in the right tail fails.
// Results below float's normal range may round to a subnormal or to zero.
#include "simd/activation.h"

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "simd_test_support.h"

namespace ember::simd {
namespace {

ActivationKernels kernels_under_test(Isa isa) {
  return testing::made_for<ActivationKernels, make_activation_kernels<ArchSse42>, make_activation_kernels<ArchAvx2>,
                           make_activation_kernels<ArchAvx512>>(isa);
}

using testing::GuardedBuffer;
constexpr double u = testing::float_unit_roundoff;
constexpr double k_tanh = 0.044715;
const double sqrt_2_over_pi = std::sqrt(2.0 / M_PI);
// Absolute slack for results that underflow float's normal range.
constexpr double underflow = 1e-36;

enum class Variant { exact, tanh };

std::string variant_name(Variant v) { return v == Variant::tanh ? "tanh" : "exact"; }

// 0.5 (1 + tanh(u)) and 0.5 (1 - tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), in double
// without cancellation: for u < 0, 1 + tanh(u) = 2 e^(2u) / (1 + e^(2u)); in the left tail
// 1 + tanh(u) itself rounds to 0 even in double (x = -8 gives e^-50).
struct TanhHalves {
  double plus, minus;  // (1 + tanh(u)) / 2, (1 - tanh(u)) / 2
};
TanhHalves tanh_halves(double x) {
  const double u = sqrt_2_over_pi * (x + k_tanh * x * x * x);
  const double e = std::exp(-2.0 * std::fabs(u));
  const double big = 1.0 / (1.0 + e), small = e / (1.0 + e);
  return u >= 0.0 ? TanhHalves{big, small} : TanhHalves{small, big};
}

// 0.5 x (1 + erf(x / sqrt 2)), written with erfc so the left tail keeps its digits in double too.
double reference_gelu(Variant v, double x) {
  if (v == Variant::exact) return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
  return x * tanh_halves(x).plus;
}

// d/dx of 0.5 x (1 + tanh(u)) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) u'(x)
double reference_gelu_derivative(Variant v, double x) {
  if (v == Variant::exact) return 0.5 * std::erfc(-x / std::sqrt(2.0)) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
  const TanhHalves h = tanh_halves(x);
  const double du = sqrt_2_over_pi * (1.0 + 3.0 * k_tanh * x * x);
  return h.plus + 2.0 * x * h.plus * h.minus * du;
}

// How much a rounding of u in an input or intermediate is amplified, relative to a term
// whose value is a small difference (x^2 through erfc or exp(-x^2 / 2), |x|^3 through
// exp(-2u)).
double tail_condition(Variant v, double x) {
  const double a = std::fabs(x);
  return v == Variant::exact ? a * a : a * a + 0.3 * a * a * a;
}

// The relative condition of GELU(x) = x * P(x), P = Phi or sigmoid(2u): in the left tail P
// itself is the small term; in the right tail only 1 - P is, and it is added to 1.
double forward_condition(Variant v, double x) {
  if (x < 0.0) return 1.0 + tail_condition(v, x);
  const double one_minus_p = v == Variant::exact ? 0.5 * std::erfc(x / std::sqrt(2.0)) : tanh_halves(x).minus;
  return 1.0 + one_minus_p * tail_condition(v, x);
}

// The error scale of the derivative: each of its two terms times its own condition (it
// crosses zero near x = -0.75, so the bound is on the terms, not on their sum). The
// second term (x phi(x), or 2 x s (1 - s) u') always goes through the tail's exp; the
// first (Phi or s) only in the left tail.
double derivative_scale(Variant v, double x) {
  const double left = x < 0.0 ? tail_condition(v, x) : 0.0;
  if (v == Variant::exact) {
    const double cdf = 0.5 * std::erfc(-x / std::sqrt(2.0));
    const double x_pdf = std::fabs(x) * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
    return cdf * (1.0 + left) + x_pdf * (1.0 + tail_condition(v, x));
  }
  const TanhHalves h = tanh_halves(x);
  const double second = 2.0 * std::fabs(x) * h.plus * h.minus * sqrt_2_over_pi * (1.0 + 3.0 * k_tanh * x * x);
  return h.plus * (1.0 + left) + second * (1.0 + tail_condition(v, x));
}

// The kernel forms 1 - s from s in float: on the right, where 1 - s is near or below u,
// it loses up to all of 1 - s (about u at most), and the second term 2 x s (1 - s) u'
// with it. An absolute error, per unit of out_grad.
double derivative_cancellation(Variant v, double x) {
  if (v == Variant::exact || x <= 0.0) return 0.0;
  const TanhHalves h = tanh_halves(x);
  return 2.0 * x * h.plus * std::min(h.minus, 4.0 * u) * sqrt_2_over_pi * (1.0 + 3.0 * k_tanh * x * x);
}

// Normal(0, 3) values with the cases that matter mixed in: signed zeros, subnormals,
// both tails (where exp and erfc underflow or saturate) and large magnitudes.
std::vector<float> gelu_inputs(std::size_t n, std::uint64_t seed) {
  std::vector<float> x = testing::normal_vector(n, seed, 3.0f);
  const float specials[] = {0.0f,  -0.0f, std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::min(), -std::numeric_limits<float>::min(), 1e-20f, -1e-20f,
                            -0.75f, 5.0f, -5.0f, 10.0f, -10.0f, 30.0f, -30.0f, 1e4f, -1e4f};
  Random random(seed + 1);
  for (std::size_t i = 0; i < n; ++i) {
    if (random.below(4) == 0) x[i] = specials[random.below(std::size(specials))];
  }
  return x;
}

struct GeluFunctions {
  void (*forward)(float*, const float*, std::int64_t);
  void (*backward)(float*, const float*, const float*, std::int64_t);
};

class GeluKernelTest : public ::testing::TestWithParam<Isa> {
 protected:
  GeluFunctions functions(Variant v) const {
    const ActivationKernels k = kernels_under_test(GetParam());
    return v == Variant::tanh ? GeluFunctions{k.gelu_tanh_forward, k.gelu_tanh_backward} : GeluFunctions{k.gelu_forward, k.gelu_backward};
  }

  void expect_forward(Variant v, const std::vector<float>& in, const float* out, std::int64_t n) const {
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
      const double reference = reference_gelu(v, in[i]);
      ASSERT_TRUE(std::isfinite(out[i])) << "x " << in[i];
      ASSERT_LE(std::fabs(out[i] - reference), 16.0 * u * forward_condition(v, in[i]) * std::fabs(reference) + underflow)
          << isa_name(GetParam()) << " gelu " << variant_name(v) << " n " << n << " i " << i << ": gelu(" << in[i] << ") = " << out[i]
          << ", reference " << reference;
    }
  }

  void expect_backward(Variant v, const std::vector<float>& in, const std::vector<float>& out_grad, const float* in_grad,
                       std::int64_t n) const {
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
      const double reference = out_grad[i] * reference_gelu_derivative(v, in[i]);
      const double bound =
          std::fabs(out_grad[i]) * (16.0 * u * derivative_scale(v, in[i]) + derivative_cancellation(v, in[i])) + underflow;
      ASSERT_TRUE(std::isfinite(in_grad[i])) << "x " << in[i];
      ASSERT_LE(std::fabs(in_grad[i] - reference), bound)
          << isa_name(GetParam()) << " gelu " << variant_name(v) << " backward n " << n << " i " << i << ": x " << in[i] << ", dy "
          << out_grad[i] << ": got " << in_grad[i] << ", reference " << reference;
    }
  }
};

TEST_P(GeluKernelTest, ForwardMatchesReference) {
  std::uint64_t seed = 10;
  for (Variant v : {Variant::exact, Variant::tanh}) {
    for (std::int64_t n : testing::tail_lengths()) {
      const auto size = static_cast<std::size_t>(n);
      GuardedBuffer<float> in(size), out(size);
      const std::vector<float> x = gelu_inputs(size, ++seed);
      in.assign(x);
      for (float& y : out) y = std::numeric_limits<float>::quiet_NaN();
      functions(v).forward(out.data(), in.data(), n);
      expect_forward(v, x, out.data(), n);
      if (HasFatalFailure()) return;
    }
  }
}

TEST_P(GeluKernelTest, ForwardInPlace) {
  std::uint64_t seed = 100;
  for (Variant v : {Variant::exact, Variant::tanh}) {
    for (std::int64_t n : testing::tail_lengths()) {
      const auto size = static_cast<std::size_t>(n);
      GuardedBuffer<float> data(size);
      const std::vector<float> x = gelu_inputs(size, ++seed);
      data.assign(x);
      functions(v).forward(data.data(), data.data(), n);
      expect_forward(v, x, data.data(), n);
      if (HasFatalFailure()) return;
    }
  }
}

TEST_P(GeluKernelTest, BackwardMatchesReference) {
  std::uint64_t seed = 200;
  for (Variant v : {Variant::exact, Variant::tanh}) {
    for (std::int64_t n : testing::tail_lengths()) {
      const auto size = static_cast<std::size_t>(n);
      GuardedBuffer<float> in(size), out_grad(size), in_grad(size);
      const std::vector<float> x = gelu_inputs(size, ++seed);
      const std::vector<float> dy = testing::normal_vector(size, ++seed);
      in.assign(x);
      out_grad.assign(dy);
      for (float& g : in_grad) g = std::numeric_limits<float>::quiet_NaN();
      functions(v).backward(in_grad.data(), out_grad.data(), in.data(), n);
      expect_backward(v, x, dy, in_grad.data(), n);
      if (HasFatalFailure()) return;
    }
  }
}

TEST_P(GeluKernelTest, BackwardInPlaceOverOutGrad) {
  std::uint64_t seed = 300;
  for (Variant v : {Variant::exact, Variant::tanh}) {
    for (std::int64_t n : testing::tail_lengths()) {
      const auto size = static_cast<std::size_t>(n);
      GuardedBuffer<float> in(size), grad(size);
      const std::vector<float> x = gelu_inputs(size, ++seed);
      const std::vector<float> dy = testing::normal_vector(size, ++seed);
      in.assign(x);
      grad.assign(dy);
      functions(v).backward(grad.data(), grad.data(), in.data(), n);
      expect_backward(v, x, dy, grad.data(), n);
      if (HasFatalFailure()) return;
    }
  }
}

TEST_P(GeluKernelTest, AnElementsResultDoesNotDependOnItsPositionInTheSpan) {
  // The tail runs the vector code on a padded copy: bitwise the same as in the body.
  for (Variant v : {Variant::exact, Variant::tanh}) {
    const std::vector<float> x = gelu_inputs(33, 400);
    const std::vector<float> dy = testing::normal_vector(33, 401);
    std::vector<float> whole(33), whole_grad(33);
    functions(v).forward(whole.data(), x.data(), 33);
    functions(v).backward(whole_grad.data(), dy.data(), x.data(), 33);
    for (std::size_t i = 0; i < x.size(); ++i) {
      float one = 0.0f, one_grad = 0.0f;
      functions(v).forward(&one, &x[i], 1);
      functions(v).backward(&one_grad, &dy[i], &x[i], 1);
      ASSERT_TRUE(testing::same_bits(one, whole[i])) << variant_name(v) << " x " << x[i] << ": " << one << " vs " << whole[i];
      ASSERT_TRUE(testing::same_bits(one_grad, whole_grad[i])) << variant_name(v) << " x " << x[i];
    }
  }
}

// Far right, GELU is the identity and its derivative 1; far left both are 0 (below
// float's normal range). x = -10 still has a normal result, checked relative to it.
TEST_P(GeluKernelTest, TailsAreTheIdentityOnTheRightAndZeroOnTheLeft) {
  const float in[] = {1e4f, 30.0f, 10.0f, -10.0f, -30.0f, -1e4f};
  constexpr std::int64_t n = static_cast<std::int64_t>(std::size(in));
  for (Variant v : {Variant::exact, Variant::tanh}) {
    for (std::int64_t i = 0; i < n; ++i) {
      // One element at a time, and as the first element of a full vector, so both the
      // tail path and the vector body are checked.
      for (std::int64_t count : {std::int64_t{1}, std::int64_t{16}}) {
        std::vector<float> x(static_cast<std::size_t>(count), in[i]), y(x.size()), dy(x.size(), 1.0f), dx(x.size());
        functions(v).forward(y.data(), x.data(), count);
        functions(v).backward(dx.data(), dy.data(), x.data(), count);
        const std::string what = variant_name(v) + " x " + std::to_string(in[i]) + " n " + std::to_string(count) + " on " +
                                 std::string(isa_name(GetParam()));
        const double x_value = in[i];
        if (x_value >= 10.0) {
          EXPECT_LE(std::fabs(y[0] - x_value), 2.0 * u * x_value) << what << ": gelu " << y[0];
          EXPECT_LE(std::fabs(dx[0] - 1.0), 4.0 * u) << what << ": gelu' " << dx[0];
        } else if (x_value <= -30.0) {
          EXPECT_LE(std::fabs(y[0]), underflow) << what << ": gelu " << y[0];
          EXPECT_LE(std::fabs(dx[0]), underflow) << what << ": gelu' " << dx[0];
        } else {
          const double reference = reference_gelu(v, x_value), derivative = reference_gelu_derivative(v, x_value);
          ASSERT_LT(reference, -1e-37) << "the x = -10 check needs a normal float result";
          EXPECT_LE(std::fabs(y[0] - reference), 1e-3 * std::fabs(reference)) << what << ": gelu " << y[0] << ", reference " << reference;
          EXPECT_LE(std::fabs(dx[0] - derivative), 1e-3 * std::fabs(derivative) + underflow)
              << what << ": gelu' " << dx[0] << ", reference " << derivative;
        }
      }
    }
  }
}

TEST_P(GeluKernelTest, KnownValues) {
  const float in[] = {0.0f, 1.0f, -1.0f, 3.0f};
  float out[4];
  functions(Variant::exact).forward(out, in, 4);
  // torch.nn.functional.gelu(torch.tensor([0., 1., -1., 3.]))
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_NEAR(out[1], 0.8413447f, 1e-6f);
  EXPECT_NEAR(out[2], -0.1586553f, 1e-6f);
  EXPECT_NEAR(out[3], 2.9959502f, 1e-6f);
  functions(Variant::tanh).forward(out, in, 4);
  // torch.nn.functional.gelu(..., approximate="tanh")
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_NEAR(out[1], 0.8411920f, 1e-6f);
  EXPECT_NEAR(out[2], -0.1588080f, 1e-6f);
  EXPECT_NEAR(out[3], 2.9963627f, 1e-6f);
}

TEST_P(GeluKernelTest, KernelsForIsaReturnsThisIsasTable) {
  const Isa isa = GetParam();
  testing::expect_kernels_for_is_safe(isa, "activation", [isa] {
    const ActivationKernels& table = activation_kernels_for(isa);
    const ActivationKernels made = kernels_under_test(isa);
    return table.gelu_forward == made.gelu_forward && table.gelu_backward == made.gelu_backward &&
           table.gelu_tanh_forward == made.gelu_tanh_forward && table.gelu_tanh_backward == made.gelu_tanh_backward;
  });
}

INSTANTIATE_TEST_SUITE_P(Isas, GeluKernelTest, testing::all_available_isas(), testing::IsaName());

}  // namespace
}  // namespace ember::simd
