// simd/optimizer.h against scalar references of PyTorch 1.13's update rules
// (torch/optim/sgd.py, adam.py, adamw.py, _single_tensor_*), for every instruction set
// this CPU runs, at every tail length.
//
// The references evaluate the formulas in double. The tolerance is a few float ulps of
// the *size* of each formula, the sum of the magnitudes of its terms (for p - lr * d that
// is |p| + lr * |d|, with |d| itself bounded term by term): the kernels round a handful
// of times per element and may fuse multiply-adds, which moves the result by a few ulps
// of that size and never more; a wrong formula moves it by far more.
#include "simd/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "simd_test_support.h"

namespace ember::simd {
namespace {

// The table under test: made for this instruction set only (see testing::made_for).
OptimizerKernels kernels_under_test(Isa isa) {
  return testing::made_for<OptimizerKernels, make_optimizer_kernels<ArchSse42>, make_optimizer_kernels<ArchAvx2>,
                           make_optimizer_kernels<ArchAvx512>>(isa);
}

using testing::GuardedBuffer;

constexpr double u = testing::float_unit_roundoff;
constexpr double ulps = 4.0;

// A value and the size it must be accurate relative to.
struct Expected {
  double value;
  double size;
};

struct SgdReference {
  Expected param, momentum_buffer;
};

// torch.optim.SGD, one element:
//   d_p = grad + wd * p                          (grad.add(p, alpha=wd))
//   buf = first ? d_p : momentum * buf + (1 - dampening) * d_p
//   d_p = nesterov ? d_p + momentum * buf : buf  (when momentum != 0)
//   p  -= lr * d_p
SgdReference reference_sgd(double p, double grad, double buf, const SgdHyper& h) {
  double d = grad + h.weight_decay * p;
  double d_size = std::abs(grad) + std::abs(h.weight_decay * p);
  Expected new_buf{buf, std::abs(buf)};
  if (h.momentum != 0.0f) {
    if (h.first_step) {
      new_buf = {d, d_size};
    } else {
      new_buf = {h.momentum * buf + (1.0 - h.dampening) * d,
                 std::abs(h.momentum * buf) + std::abs(1.0 - h.dampening) * d_size};
    }
    if (h.nesterov) {
      d = d + h.momentum * new_buf.value;
      d_size = d_size + std::abs(h.momentum) * new_buf.size;
    } else {
      d = new_buf.value;
      d_size = new_buf.size;
    }
  }
  return {{p - h.lr * d, std::abs(p) + std::abs(h.lr) * d_size}, new_buf};
}

struct AdamReference {
  Expected param, exp_avg, exp_avg_sq;
};

// torch.optim.Adam / AdamW, one element, step t (1-based):
//   AdamW: p *= 1 - lr * wd            Adam: grad = grad + wd * p
//   m = beta1 * m + (1 - beta1) * grad
//   v = beta2 * v + (1 - beta2) * grad * grad
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
AdamReference reference_adam(double p, double grad, double m, double v, const AdamHyper& h) {
  const double lr = h.lr, wd = h.weight_decay, beta1 = h.beta1, beta2 = h.beta2, eps = h.eps;
  double grad_size = std::abs(grad);
  if (h.decoupled_weight_decay) {
    p *= 1.0 - lr * wd;
  } else {
    grad += wd * p;
    grad_size += std::abs(wd * p);
  }
  const Expected new_m{beta1 * m + (1.0 - beta1) * grad, beta1 * std::abs(m) + (1.0 - beta1) * grad_size};
  const Expected new_v{beta2 * v + (1.0 - beta2) * grad * grad, beta2 * v + (1.0 - beta2) * grad_size * grad_size};
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(h.step));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(h.step));
  const double step_size = lr / bias_correction1;
  const double denom = std::sqrt(new_v.value) / std::sqrt(bias_correction2) + eps;
  const double update = step_size * new_m.value / denom;
  // m's error enters through new_m.size; the denominator's relative error (a few u,
  // v being a sum of non-negative terms) multiplies the whole update.
  const double update_size = step_size * new_m.size / denom;
  return {{p - update, std::abs(p) + update_size}, new_m, new_v};
}

::testing::AssertionResult close(float got, const Expected& want, const std::string& what) {
  const double tolerance = ulps * u * want.size;
  if (std::abs(static_cast<double>(got) - want.value) <= tolerance) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << got << ", reference " << want.value << " (difference "
                                       << (got - want.value) / (u * want.size) << " u of size " << want.size << ")";
}

std::string describe(Isa isa, const SgdHyper& h, std::int64_t n, std::size_t i) {
  std::ostringstream s;
  s << isa_name(isa) << " sgd lr " << h.lr << " momentum " << h.momentum << " dampening " << h.dampening << " wd "
    << h.weight_decay << (h.nesterov ? " nesterov" : "") << (h.first_step ? " first step" : "") << ", n " << n
    << ", element " << i;
  return s.str();
}

std::string describe(Isa isa, const AdamHyper& h, std::int64_t n, std::size_t i) {
  std::ostringstream s;
  s << isa_name(isa) << (h.decoupled_weight_decay ? " adamw" : " adam") << " lr " << h.lr << " betas " << h.beta1 << "/"
    << h.beta2 << " eps " << h.eps << " wd " << h.weight_decay << " step " << h.step << ", n " << n << ", element " << i;
  return s.str();
}

std::vector<SgdHyper> sgd_cases() {
  std::vector<SgdHyper> cases;
  cases.push_back({0.1f, 0.0f, 0.0f, 0.0f, false, true});       // plain
  cases.push_back({0.05f, 0.0f, 0.0f, 0.01f, false, false});    // weight decay, no momentum
  for (bool first : {true, false}) {
    cases.push_back({0.05f, 0.9f, 0.0f, 0.0f, false, first});    // momentum
    cases.push_back({0.03f, 0.9f, 0.25f, 0.01f, false, first});  // dampening, weight decay
    cases.push_back({0.02f, 0.8f, 0.0f, 0.02f, true, first});    // nesterov
  }
  return cases;
}

class OptimizerKernelTest : public ::testing::TestWithParam<Isa> {
 protected:
  OptimizerKernels kernels() const { return kernels_under_test(GetParam()); }
};

TEST_P(OptimizerKernelTest, SgdStepMatchesPyTorchFormulas) {
  std::uint64_t seed = 10;
  for (const SgdHyper& h : sgd_cases()) {
    for (std::int64_t n : testing::tail_lengths()) {
      const auto size = static_cast<std::size_t>(n);
      const std::vector<float> p0 = testing::normal_vector(size, ++seed);
      const std::vector<float> grads_values = testing::normal_vector(size, ++seed, 0.5f);
      std::vector<float> buf0 = testing::normal_vector(size, ++seed, 0.3f);
      // PyTorch's buffer does not exist before the first step: the kernel must not read it.
      if (h.first_step) std::fill(buf0.begin(), buf0.end(), std::numeric_limits<float>::quiet_NaN());
      GuardedBuffer<float> params(size), grads(size), buffer(size);
      params.assign(p0);
      grads.assign(grads_values);
      buffer.assign(buf0);
      // Without momentum there is no buffer at all (the optimizer passes nullptr).
      float* buffer_pointer = h.momentum != 0.0f ? buffer.data() : nullptr;
      kernels().sgd_step(params.data(), grads.data(), buffer_pointer, n, h);
      for (std::size_t i = 0; i < size; ++i) {
        const SgdReference want = reference_sgd(p0[i], grads_values[i], buf0[i], h);
        ASSERT_TRUE(close(params[i], want.param, "param")) << describe(GetParam(), h, n, i);
        if (h.momentum != 0.0f) {
          ASSERT_TRUE(close(buffer[i], want.momentum_buffer, "momentum buffer")) << describe(GetParam(), h, n, i);
        }
      }
    }
  }
}

TEST_P(OptimizerKernelTest, SgdStepsCarryTheMomentumBuffer) {
  // Several steps in a row, the kernel's own buffer carried over, against the reference
  // fed the same values (so errors do not compound into the comparison).
  const std::int64_t n = 37;
  const auto size = static_cast<std::size_t>(n);
  GuardedBuffer<float> params(size), grads(size), buffer(size);
  params.assign(testing::normal_vector(size, 1));
  for (float& b : buffer) b = std::numeric_limits<float>::quiet_NaN();
  for (int step = 1; step <= 4; ++step) {
    const SgdHyper h{0.05f, 0.9f, 0.1f, 0.01f, false, step == 1};
    grads.assign(testing::normal_vector(size, 100 + static_cast<std::uint64_t>(step)));
    const std::vector<float> p_before = params.to_vector(), b_before = buffer.to_vector();
    kernels().sgd_step(params.data(), grads.data(), buffer.data(), n, h);
    for (std::size_t i = 0; i < size; ++i) {
      const SgdReference want = reference_sgd(p_before[i], grads[i], b_before[i], h);
      ASSERT_TRUE(close(params[i], want.param, "param")) << describe(GetParam(), h, n, i) << ", step " << step;
      ASSERT_TRUE(close(buffer[i], want.momentum_buffer, "momentum buffer")) << describe(GetParam(), h, n, i);
    }
  }
}

std::vector<AdamHyper> adam_cases() {
  std::vector<AdamHyper> cases;
  for (bool decoupled : {false, true}) {
    for (std::int64_t step : {1, 2, 10, 1000}) {
      cases.push_back({1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, decoupled, step});   // defaults, no weight decay
      cases.push_back({1e-2f, 0.8f, 0.95f, 1e-6f, 0.1f, decoupled, step});    // weight decay
      cases.push_back({3e-3f, 0.9f, 0.999f, 1e-3f, 1e-2f, decoupled, step});  // eps comparable to sqrt(v)
    }
  }
  return cases;
}

TEST_P(OptimizerKernelTest, AdamStepMatchesPyTorchFormulas) {
  std::uint64_t seed = 1000;
  for (const AdamHyper& h : adam_cases()) {
    for (std::int64_t n : testing::tail_lengths()) {
      const auto size = static_cast<std::size_t>(n);
      const std::vector<float> p0 = testing::normal_vector(size, ++seed);
      const std::vector<float> grads_values = testing::normal_vector(size, ++seed, 0.5f);
      // State as after earlier steps: m of either sign, v >= 0 (zero on the first step).
      std::vector<float> m0 = testing::normal_vector(size, ++seed, 0.1f);
      std::vector<float> v0 = testing::normal_vector(size, ++seed, 0.1f);
      for (float& v : v0) v = v * v;
      if (h.step == 1) {
        std::fill(m0.begin(), m0.end(), 0.0f);
        std::fill(v0.begin(), v0.end(), 0.0f);
      }
      GuardedBuffer<float> params(size), grads(size), exp_avg(size), exp_avg_sq(size);
      params.assign(p0);
      grads.assign(grads_values);
      exp_avg.assign(m0);
      exp_avg_sq.assign(v0);
      kernels().adam_step(params.data(), grads.data(), exp_avg.data(), exp_avg_sq.data(), n, h);
      for (std::size_t i = 0; i < size; ++i) {
        const AdamReference want = reference_adam(p0[i], grads_values[i], m0[i], v0[i], h);
        ASSERT_TRUE(close(params[i], want.param, "param")) << describe(GetParam(), h, n, i);
        ASSERT_TRUE(close(exp_avg[i], want.exp_avg, "exp_avg")) << describe(GetParam(), h, n, i);
        ASSERT_TRUE(close(exp_avg_sq[i], want.exp_avg_sq, "exp_avg_sq")) << describe(GetParam(), h, n, i);
      }
    }
  }
}

TEST_P(OptimizerKernelTest, AdamWeightDecayIsCoupledOrDecoupled) {
  // The same inputs with Adam (L2 into the gradient) and AdamW (decay of p) differ, and
  // each matches its own formula: a kernel that swapped them fails one of the two.
  const std::int64_t n = 19;
  const auto size = static_cast<std::size_t>(n);
  const std::vector<float> p0 = testing::normal_vector(size, 7), g = testing::normal_vector(size, 8, 0.01f);
  std::vector<float> results[2];
  for (bool decoupled : {false, true}) {
    const AdamHyper h{0.1f, 0.9f, 0.999f, 1e-8f, 0.5f, decoupled, 3};
    GuardedBuffer<float> params(size), grads(size), exp_avg(size), exp_avg_sq(size);
    params.assign(p0);
    grads.assign(g);
    for (float& m : exp_avg) m = 0.01f;
    for (float& v : exp_avg_sq) v = 1e-4f;
    kernels().adam_step(params.data(), grads.data(), exp_avg.data(), exp_avg_sq.data(), n, h);
    for (std::size_t i = 0; i < size; ++i) {
      const AdamReference want = reference_adam(p0[i], g[i], 0.01f, 1e-4f, h);
      ASSERT_TRUE(close(params[i], want.param, "param")) << describe(GetParam(), h, n, i);
    }
    results[decoupled ? 1 : 0] = params.to_vector();
  }
  EXPECT_NE(results[0], results[1]) << isa_name(GetParam());
}

TEST_P(OptimizerKernelTest, KernelsForIsaReturnsThisIsasTable) {
  // The entry point the library uses (optimizer_kernels() is optimizer_kernels_for(selected_isa())).
  const Isa isa = GetParam();
  testing::expect_kernels_for_is_safe(isa, "optimizer", [isa] {
    const OptimizerKernels& table = optimizer_kernels_for(isa);
    const OptimizerKernels made = kernels_under_test(isa);
    return table.sgd_step == made.sgd_step && table.adam_step == made.adam_step;
  });
}

INSTANTIATE_TEST_SUITE_P(Isas, OptimizerKernelTest, testing::all_available_isas(), testing::IsaName());

}  // namespace
}  // namespace ember::simd
