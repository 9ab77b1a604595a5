#include "layers/linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "engine/aligned_buffer.h"
#include "engine/error.h"

#include "simd/gemm_plan.h"
#include "support/layer_harness.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

// y = x W^T + b over the last dimension, in double.
std::vector<double> linear_reference(const std::vector<float>& x, const std::vector<float>& weight, const std::vector<float>* bias,
                                     std::int64_t rows, std::int64_t in, std::int64_t out) {
  std::vector<double> y(static_cast<std::size_t>(rows * out));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t o = 0; o < out; ++o) {
      double sum = bias != nullptr ? (*bias)[static_cast<std::size_t>(o)] : 0.0;
      for (std::int64_t i = 0; i < in; ++i) {
        sum += static_cast<double>(x[static_cast<std::size_t>(r * in + i)]) * weight[static_cast<std::size_t>(o * in + i)];
      }
      y[static_cast<std::size_t>(r * out + o)] = sum;
    }
  return y;
}

struct LinearCase {
  const char* name;
  Shape input;
  std::int64_t out;
  bool bias;
};

class LinearTest : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearTest, ForwardMatchesTheReference) {
  const LinearCase& c = GetParam();
  const std::int64_t in = c.input[c.input.rank() - 1];
  const Linear layer(in, c.out, c.bias);
  LayerHarness harness(layer, {HarnessInput{c.input}});
  const std::vector<float> y = harness.forward();
  const std::int64_t rows = c.input.elements() / in;
  testing::expect_close(y, linear_reference(harness.inputs[0], harness.params[0], c.bias ? &harness.params[1] : nullptr, rows, in, c.out),
                        1e-5, "linear output");
}

// Inference with a fused activation (the step compiler removed the ReLU or GELU after the
// layer): the GEMM epilogue applies it, so the output is the activation of the reference.
TEST_P(LinearTest, FusedActivationsGiveTheActivatedReference) {
  const LinearCase& c = GetParam();
  const std::int64_t in = c.input[c.input.rank() - 1], rows = c.input.elements() / in;
  const Linear layer(in, c.out, c.bias);
  const std::pair<FusedActivation, double (*)(double)> activations[] = {
      {FusedActivation::relu, [](double v) { return std::max(0.0, v); }},
      {FusedActivation::gelu_erf, [](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); }},
      {FusedActivation::gelu_tanh,
       [](double v) { return 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))); }}};
  for (const auto& [activation, reference_of] : activations) {
    LayerHarness harness(layer, {HarnessInput{c.input}}, Mode::inference, 1, activation);
    const std::vector<float> y = harness.forward();
    std::vector<double> reference =
        linear_reference(harness.inputs[0], harness.params[0], c.bias ? &harness.params[1] : nullptr, rows, in, c.out);
    ASSERT_TRUE(std::any_of(reference.begin(), reference.end(), [](double r) { return r < -0.1; }))
        << "the case needs negative pre-activations, or it cannot tell an activation from none";
    for (double& r : reference) r = reference_of(r);
    testing::expect_close(y, reference, 1e-5, "linear + activation " + std::to_string(static_cast<int>(activation)));
  }
}

TEST(Linear, FusedActivationIsRefusedInTraining) {
  const Linear layer(4, 3, true);
  ValueInfo input{Shape{2, 4}, nullptr};
  PrepareContext context;
  context.mode = Mode::training;
  context.inputs = std::span<const ValueInfo>(&input, 1);
  context.fused_activation = FusedActivation::gelu_erf;
  EXPECT_TRUE(layer.fuses_following(FusedActivation::gelu_erf));
  EXPECT_FALSE(layer.fuses_following(FusedActivation::none));
  EXPECT_THROW(layer.prepare(context), Error);
}

TEST_P(LinearTest, GradientsMatchFiniteDifferences) {
  const LinearCase& c = GetParam();
  const Linear layer(c.input[c.input.rank() - 1], c.out, c.bias);
  LayerHarness harness(layer, {HarnessInput{c.input}});
  testing::expect_gradients_match_finite_differences(harness);
}

TEST_P(LinearTest, ParameterGradientsAccumulate) {
  const LinearCase& c = GetParam();
  const Linear layer(c.input[c.input.rank() - 1], c.out, c.bias);
  LayerHarness harness(layer, {HarnessInput{c.input}});
  testing::expect_parameter_gradients_accumulate(harness);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(LinearCase{"batch1", Shape{1, 7}, 3, true},
                                           LinearCase{"seed_cnn_fc2", Shape{16, 128}, 10, true},
                                           LinearCase{"odd_sizes", Shape{5, 33}, 17, true},
                                           LinearCase{"no_bias", Shape{4, 19}, 21, false},
                                           LinearCase{"wide", Shape{3, 300}, 65, true},
                                           LinearCase{"tokens", Shape{2, 7, 24}, 40, true}),
                         [](const ::testing::TestParamInfo<LinearCase>& info) { return std::string(info.param.name); });

std::vector<float> random_floats(std::size_t n, unsigned seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<float> out(n);
  for (float& x : out) x = value(random);
  return out;
}

// In a session, forward runs against W packed once (prepare_constants): the output has
// the bits of the unpacked forward, for batch 1 with fewer outputs than a vector on every
// instruction set (the dot path on both sides; a wider batch-1 GEMV takes the normal
// orientation when packed, which tests/simd/gemm_test.cpp holds to the bits of more
// rows), the seed CNN's fc1/fc2 widths and odd sizes, and for 1-3 threads.
TEST(Linear, PackedWeightsGiveTheBitsOfTheUnpackedForward) {
  struct Case {
    std::int64_t rows, in, out;
  };
  for (const Case& c : {Case{1, 300, 3}, Case{16, 128, 10}, Case{64, 128, 10}, Case{5, 33, 17}, Case{49, 200, 130}}) {
    const Linear layer(c.in, c.out, true);
    const std::vector<ValueInfo> inputs{ValueInfo{Shape{c.rows, c.in}, nullptr}};
    const std::vector<char> needs_grad{0};
    PrepareContext context;
    context.mode = Mode::inference;
    context.inputs = inputs;
    context.input_needs_grad = needs_grad;
    context.max_threads = 3;
    const std::unique_ptr<PreparedLayer> prepared = layer.prepare(context);
    ASSERT_GT(prepared->constant_bytes, 0u);
    std::vector<float> x = random_floats(static_cast<std::size_t>(c.rows * c.in), 1);
    std::vector<float> w = random_floats(static_cast<std::size_t>(c.out * c.in), 2);
    std::vector<float> b = random_floats(static_cast<std::size_t>(c.out), 3);
    const std::vector<Tensor> params{Tensor{w.data(), Shape{c.out, c.in}}, Tensor{b.data(), Shape{c.out}}};
    AlignedBuffer constants(prepared->constant_bytes);
    prepared->prepare_constants(ConstantArgs{params, constants.data(), nullptr});
    AlignedBuffer scratch(prepared->forward_scratch_bytes);
    std::vector<float> plain(static_cast<std::size_t>(c.rows * c.out)), packed(plain.size());
    const std::vector<Tensor> input_views{Tensor{x.data(), Shape{c.rows, c.in}}};
    for (int threads : {1, 2, 3}) {
      ForwardArgs args;
      args.inputs = input_views;
      args.params = params;
      args.scratch = scratch.data();
      args.threads = threads;
      args.output = Tensor{plain.data(), Shape{c.rows, c.out}};
      prepared->forward(args);
      args.constants = constants.data();
      args.output = Tensor{packed.data(), Shape{c.rows, c.out}};
      prepared->forward(args);
      EXPECT_EQ(std::memcmp(plain.data(), packed.data(), plain.size() * sizeof(float)), 0)
          << "rows " << c.rows << " in " << c.in << " out " << c.out << " threads " << threads;
    }
  }
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The training forward computes Y^T = W X^T (W read in place, nothing packed): the output
// has the bits of the inference forward's X W^T (packed too, beyond a few rows), for every row count
// (a few rows take the dot orientation in both) and thread count, on every instruction
// set (this binary also runs under each forced lower set).
TEST(Linear, TrainingForwardGivesTheBitsOfTheInferenceForward) {
  struct Case {
    std::int64_t rows, in, out;
  };
  for (const Case& c : {Case{3, 128, 10}, Case{16, 33, 3}, Case{5, 33, 17}, Case{16, 6272, 128}, Case{32, 6272, 128}, Case{16, 128, 10},
                        Case{49, 200, 130}, Case{64, 130, 200}, Case{17, 64, 192}}) {
    const Linear layer(c.in, c.out, true);
    const std::vector<ValueInfo> inputs{ValueInfo{Shape{c.rows, c.in}, nullptr}};
    const std::vector<char> needs_grad{1};
    auto prepare = [&](Mode mode) {
      PrepareContext context;
      context.mode = mode;
      context.inputs = inputs;
      context.input_needs_grad = needs_grad;
      context.max_threads = 2;
      return layer.prepare(context);
    };
    const std::unique_ptr<PreparedLayer> training = prepare(Mode::training), inference = prepare(Mode::inference);
    std::vector<float> x = random_floats(static_cast<std::size_t>(c.rows * c.in), 21);
    std::vector<float> w = random_floats(static_cast<std::size_t>(c.out * c.in), 22);
    std::vector<float> b = random_floats(static_cast<std::size_t>(c.out), 23);
    const std::vector<Tensor> params{Tensor{w.data(), Shape{c.out, c.in}}, Tensor{b.data(), Shape{c.out}}};
    AlignedBuffer constants(inference->constant_bytes);
    inference->prepare_constants(ConstantArgs{params, constants.data(), nullptr});
    AlignedBuffer scratch(std::max(training->forward_scratch_bytes, inference->forward_scratch_bytes));
    const std::vector<Tensor> input_views{Tensor{x.data(), Shape{c.rows, c.in}}};
    for (int threads : {1, 2}) {
      std::vector<float> trained(static_cast<std::size_t>(c.rows * c.out)), inferred(trained.size()), packed(trained.size());
      ForwardArgs args;
      args.inputs = input_views;
      args.params = params;
      args.scratch = scratch.data();
      args.threads = threads;
      args.mode = Mode::training;
      args.output = Tensor{trained.data(), Shape{c.rows, c.out}};
      training->forward(args);
      args.mode = Mode::inference;
      args.output = Tensor{inferred.data(), Shape{c.rows, c.out}};
      inference->forward(args);
      args.constants = constants.data();
      args.output = Tensor{packed.data(), Shape{c.rows, c.out}};
      inference->forward(args);
      const std::string where = "rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) + " out " +
                                std::to_string(c.out) + " threads " + std::to_string(threads);
      EXPECT_TRUE(same_bits(trained, inferred)) << where;
      // A few rows sum in the dot orientation, which a packed call keeps only where N is
      // under one vector (simd/gemm_plan.h).
      if (!simd::gemm_uses_dot(simd::Transpose::no, simd::Transpose::yes, c.rows, c.out)) {
        EXPECT_TRUE(same_bits(trained, packed)) << where;
      }
    }
  }
}

// One forward and backward of a training-mode Linear, against constants or not.
struct LinearStepResult {
  std::vector<float> y, dx, dw, db;
};
LinearStepResult linear_training_step(const PreparedLayer& prepared, std::int64_t rows, std::int64_t in, std::int64_t out,
                                      std::span<const Tensor> params, const std::byte* constants, bool accumulate) {
  LinearStepResult r;
  std::vector<float> x = random_floats(static_cast<std::size_t>(rows * in), 11);
  std::vector<float> dy = random_floats(static_cast<std::size_t>(rows * out), 12);
  r.y.assign(static_cast<std::size_t>(rows * out), 0.0f);
  r.dx.assign(static_cast<std::size_t>(rows * in), 0.0f);
  r.dw = random_floats(static_cast<std::size_t>(out * in), 13);  // accumulated into
  r.db = random_floats(static_cast<std::size_t>(out), 14);
  const std::vector<Tensor> inputs{Tensor{x.data(), Shape{rows, in}}};
  AlignedBuffer scratch(std::max(prepared.forward_scratch_bytes, prepared.backward_scratch_bytes));
  ForwardArgs forward;
  forward.inputs = inputs;
  forward.output = Tensor{r.y.data(), Shape{rows, out}};
  forward.params = params;
  forward.scratch = scratch.data();
  forward.mode = Mode::training;
  forward.constants = constants;
  prepared.forward(forward);
  const std::vector<Tensor> input_grads{Tensor{r.dx.data(), Shape{rows, in}}};
  const std::vector<Tensor> param_grads{Tensor{r.dw.data(), Shape{out, in}}, Tensor{r.db.data(), Shape{out}}};
  BackwardArgs backward;
  backward.inputs = inputs;
  backward.output = forward.output;
  backward.output_grad = Tensor{dy.data(), Shape{rows, out}};
  backward.input_grads = input_grads;
  backward.params = params;
  backward.param_grads = param_grads;
  backward.accumulate_param_grads = accumulate;
  backward.scratch = scratch.data();
  backward.constants = constants;
  prepared.backward(backward);
  return r;
}

// In a training step the executor packs W (the backward's dX = dY W) once, for all
// micro-batches: output and every gradient have the bits of the unpacked
// layer, on every instruction set (tests/CMakeLists.txt runs this binary under each forced
// lower set), for micro-batches of a few rows (the forward's unpacked dot orientation),
// the seed CNN's fc1 and fc2, odd sizes, and constants packed on 1 or 3 threads.
TEST(Linear, TrainingConstantsGiveTheBitsOfTheUnpackedStep) {
  struct Case {
    std::int64_t rows, in, out;
  };
  for (const Case& c : {Case{16, 6272, 128}, Case{4, 6272, 128}, Case{16, 128, 10}, Case{3, 128, 10}, Case{1, 33, 17},
                        Case{5, 33, 17}, Case{49, 200, 130}, Case{64, 130, 200}}) {
    const Linear layer(c.in, c.out, true);
    const std::vector<ValueInfo> inputs{ValueInfo{Shape{c.rows, c.in}, nullptr}};
    const std::vector<char> needs_grad{1};
    PrepareContext context;
    context.mode = Mode::training;
    context.inputs = inputs;
    context.input_needs_grad = needs_grad;
    const std::unique_ptr<PreparedLayer> prepared = layer.prepare(context);
    ASSERT_GT(prepared->constant_bytes, 0u);
    std::vector<float> w = random_floats(static_cast<std::size_t>(c.out * c.in), 2);
    std::vector<float> b = random_floats(static_cast<std::size_t>(c.out), 3);
    const std::vector<Tensor> params{Tensor{w.data(), Shape{c.out, c.in}}, Tensor{b.data(), Shape{c.out}}};
    for (int threads : {1, 3}) {
      AlignedBuffer constants(prepared->constant_bytes);
      prepared->prepare_constants(ConstantArgs{params, constants.data(), nullptr, threads});
      for (bool accumulate : {false, true}) {
        const LinearStepResult plain = linear_training_step(*prepared, c.rows, c.in, c.out, params, nullptr, accumulate);
        const LinearStepResult packed =
            linear_training_step(*prepared, c.rows, c.in, c.out, params, constants.data(), accumulate);
        const std::string where = "rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) + " out " +
                                  std::to_string(c.out) + " packed on " + std::to_string(threads) + " thread(s)";
        EXPECT_TRUE(same_bits(plain.y, packed.y)) << "output differs, " << where;
        EXPECT_TRUE(same_bits(plain.dx, packed.dx)) << "input gradient differs, " << where;
        EXPECT_TRUE(same_bits(plain.dw, packed.dw)) << "weight gradient differs, " << where;
        EXPECT_TRUE(same_bits(plain.db, packed.db)) << "bias gradient differs, " << where;
      }
    }
  }
}

TEST(Linear, InputGradientIsSkippedWhenNotNeeded) {
  const Linear layer(9, 4, true);
  LayerHarness harness(layer, {HarnessInput{Shape{3, 9}, std::nullopt, false}});
  testing::expect_gradients_match_finite_differences(harness);
}

TEST(Linear, WrongInputWidthIsNamed) {
  const Linear layer(128, 10, true);
  const std::vector<Shape> wrong{Shape{4, 100}};
  try {
    (void)layer.output_shape(wrong);
    FAIL() << "a 100-wide input was accepted by Linear(128, 10)";
  } catch (const std::exception& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("128"), std::string::npos) << message;
    EXPECT_NE(message.find("100"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace ember
