// simd/activation.h against scalar references, for every instruction set this CPU runs,
// at every tail length. ReLU involves no rounding, so results must match exactly.
#include "simd/activation.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "simd_test_support.h"

namespace ember::simd {
namespace {

// The table under test: made for this instruction set only (see testing::made_for).
ActivationKernels kernels_under_test(Isa isa) {
  return testing::made_for<ActivationKernels, make_activation_kernels<ArchSse42>, make_activation_kernels<ArchAvx2>,
                           make_activation_kernels<ArchAvx512>>(isa);
}

using testing::GuardedBuffer;

float reference_relu(float x) { return x > 0.0f ? x : 0.0f; }
float reference_relu_backward(float out_grad, float out) { return out > 0.0f ? out_grad : 0.0f; }

// Random values with the cases that matter for a comparison with 0 mixed in: signed
// zeros, denormals, infinities and the extremes of the float range.
std::vector<float> activation_inputs(std::size_t n, std::uint64_t seed) {
  std::vector<float> x = testing::normal_vector(n, seed);
  const float specials[] = {0.0f,
                            -0.0f,
                            std::numeric_limits<float>::denorm_min(),
                            -std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::min(),
                            -std::numeric_limits<float>::min(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::max(),
                            -std::numeric_limits<float>::max()};
  Random random(seed + 1);
  for (std::size_t i = 0; i < n; ++i) {
    if (random.below(3) == 0) x[i] = specials[random.below(std::size(specials))];
  }
  return x;
}

class ActivationTest : public ::testing::TestWithParam<Isa> {
 protected:
  ActivationKernels kernels() const { return kernels_under_test(GetParam()); }
};

TEST_P(ActivationTest, ReluForwardMatchesReference) {
  std::uint64_t seed = 10;
  for (std::int64_t n : testing::tail_lengths()) {
    const auto size = static_cast<std::size_t>(n);
    GuardedBuffer<float> in(size), out(size);
    in.assign(activation_inputs(size, ++seed));
    for (float& y : out) y = std::numeric_limits<float>::quiet_NaN();
    kernels().relu_forward(out.data(), in.data(), n);
    for (std::size_t i = 0; i < size; ++i) {
      ASSERT_EQ(out[i], reference_relu(in[i])) << isa_name(GetParam()) << " n " << n << " i " << i << ": relu(" << in[i] << ")";
    }
  }
}

TEST_P(ActivationTest, ReluForwardInPlace) {
  std::uint64_t seed = 100;
  for (std::int64_t n : testing::tail_lengths()) {
    const auto size = static_cast<std::size_t>(n);
    GuardedBuffer<float> data(size);
    const std::vector<float> in = activation_inputs(size, ++seed);
    data.assign(in);
    kernels().relu_forward(data.data(), data.data(), n);
    for (std::size_t i = 0; i < size; ++i) {
      ASSERT_EQ(data[i], reference_relu(in[i])) << isa_name(GetParam()) << " n " << n << " i " << i;
    }
  }
}

TEST_P(ActivationTest, ReluBackwardMatchesReference) {
  std::uint64_t seed = 200;
  for (std::int64_t n : testing::tail_lengths()) {
    const auto size = static_cast<std::size_t>(n);
    GuardedBuffer<float> out(size), out_grad(size), in_grad(size);
    // Forward outputs: relu of the inputs, so about half are exactly 0; plus raw
    // (negative) values, which the kernel must treat like 0.
    std::vector<float> forward = activation_inputs(size, ++seed);
    for (std::size_t i = 0; i < size; ++i) {
      if (i % 4 != 3) forward[i] = reference_relu(forward[i]);
    }
    out.assign(forward);
    out_grad.assign(testing::normal_vector(size, ++seed));
    for (float& g : in_grad) g = std::numeric_limits<float>::quiet_NaN();
    kernels().relu_backward(in_grad.data(), out_grad.data(), out.data(), n);
    for (std::size_t i = 0; i < size; ++i) {
      ASSERT_EQ(in_grad[i], reference_relu_backward(out_grad[i], out[i]))
          << isa_name(GetParam()) << " n " << n << " i " << i << ": out " << out[i] << ", out_grad " << out_grad[i];
    }
  }
}

TEST_P(ActivationTest, ReluBackwardInPlaceOverOutGrad) {
  std::uint64_t seed = 300;
  for (std::int64_t n : testing::tail_lengths()) {
    const auto size = static_cast<std::size_t>(n);
    GuardedBuffer<float> out(size), grad(size);
    out.assign(activation_inputs(size, ++seed));
    const std::vector<float> out_grad = testing::normal_vector(size, ++seed);
    grad.assign(out_grad);
    kernels().relu_backward(grad.data(), grad.data(), out.data(), n);
    for (std::size_t i = 0; i < size; ++i) {
      ASSERT_EQ(grad[i], reference_relu_backward(out_grad[i], out[i])) << isa_name(GetParam()) << " n " << n << " i " << i;
    }
  }
}

TEST_P(ActivationTest, KernelsForIsaReturnsThisIsasTable) {
  // The entry point the library uses (activation_kernels() is activation_kernels_for(selected_isa())).
  const Isa isa = GetParam();
  testing::expect_kernels_for_is_safe(isa, "activation", [isa] {
    const ActivationKernels& table = activation_kernels_for(isa);
    const ActivationKernels made = kernels_under_test(isa);
    return table.relu_forward == made.relu_forward && table.relu_backward == made.relu_backward;
  });
}

INSTANTIATE_TEST_SUITE_P(Isas, ActivationTest, testing::all_available_isas(), testing::IsaName());

}  // namespace
}  // namespace ember::simd
