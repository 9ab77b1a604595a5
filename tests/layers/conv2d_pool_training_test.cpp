// Training's fused conv + 2x2 max pool (layers/conv2d_direct.h): by finite differences, by
// accumulation, and against the unfused path it replaces, oneDNN's conv then oneDNN's max
// pool, on random data and on exact four-way ties (zero weights: every conv value is the
// bias in both paths), where the gradient goes to the window's first position in both:
// the tie rule is oneDNN's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "layers/conv2d.h"
#include "layers/pool2d.h"
#include "support/layer_harness.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

Conv2dOptions conv(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t pad, bool bias) {
  Conv2dOptions o;
  o.in_channels = in;
  o.out_channels = out;
  o.kernel = {kernel, kernel};
  o.padding = {pad, pad};
  o.bias = bias;
  return o;
}

struct FusedCase {
  const char* name;
  Conv2dOptions options;
  Shape input;
};

const FusedCase fused_cases[] = {{"seed_cnn_conv1", conv(1, 32, 3, 1, true), Shape{3, 1, 28, 28}},
                                 {"odd_sizes_two_channels", conv(2, 5, 3, 1, true), Shape{2, 2, 9, 11}},
                                 {"no_bias_5x5", conv(4, 6, 5, 2, false), Shape{2, 4, 10, 7}}};

// The input needs no gradient: the fused layer is prepared only for a network's first conv.
LayerHarness fused(const Conv2d& layer, const FusedCase& c, std::vector<std::int64_t> micro_batches = {}) {
  return LayerHarness(layer, {HarnessInput(c.input, std::nullopt, false)}, Mode::training, 5, FusedActivation::none,
                      std::move(micro_batches), true);
}

TEST(Conv2dPoolTraining, PreparesThePooledPlainOutputAndStatesAQuarterOfTheGradientWork) {
  for (const FusedCase& c : fused_cases) {
    const Conv2d layer(c.options);
    LayerHarness harness = fused(layer, c);
    const PreparedLayer& p = harness.prepared();
    EXPECT_EQ(p.output.blocked, nullptr) << c.name;
    EXPECT_EQ(p.output.shape, (Shape{c.input[0], c.options.out_channels, c.input[2] / 2, c.input[3] / 2})) << c.name;
    EXPECT_GE(p.saved_bytes, static_cast<std::size_t>(p.output.shape.elements())) << c.name << ": a winner per pooled output";
    const std::int64_t taps = c.options.in_channels * c.options.kernel[0] * c.options.kernel[1];
    EXPECT_EQ(p.backward_flops, 2 * p.output.shape.elements() * taps) << c.name;
  }
}

// Small images: a finite difference across a window whose winner changes within the step
// is wrong, and the more windows, the likelier one is that close (the seed CNN's shape at
// batch 3 has 18816).
TEST(Conv2dPoolTraining, GradientsMatchFiniteDifferences) {
  const FusedCase small_cases[] = {{"one_channel_3x3", conv(1, 4, 3, 1, true), Shape{2, 1, 6, 8}},
                                   {"odd_sizes_two_channels", conv(2, 3, 3, 1, true), Shape{1, 2, 5, 7}},
                                   {"no_bias_5x5", conv(4, 6, 5, 2, false), Shape{2, 4, 10, 7}}};
  for (const FusedCase& c : small_cases) {
    SCOPED_TRACE(c.name);
    const Conv2d layer(c.options);
    LayerHarness harness = fused(layer, c);
    testing::expect_gradients_match_finite_differences(harness);
  }
}

TEST(Conv2dPoolTraining, ParameterGradientsAccumulateAcrossCallsAndMicroBatches) {
  for (const FusedCase& c : fused_cases) {
    SCOPED_TRACE(c.name);
    const Conv2d layer(c.options);
    LayerHarness harness = fused(layer, c);
    testing::expect_parameter_gradients_accumulate(harness);
    // The batch in two micro-batches, the second accumulating: the same gradients to rounding.
    const std::vector<float> weights = testing::random_weights(static_cast<std::size_t>(harness.output_shape().elements()), 3);
    harness.forward();
    const LayerHarness::Gradients whole = harness.backward(weights);
    LayerHarness split = fused(layer, c, {1, c.input[0] - 1});
    split.inputs = harness.inputs;
    split.params = harness.params;
    split.forward();
    const LayerHarness::Gradients parts = split.backward(weights);
    for (std::size_t p = 0; p < whole.params.size(); ++p) {
      std::vector<double> expected(whole.params[p].begin(), whole.params[p].end());
      testing::expect_close(parts.params[p], expected, 1e-5, "parameter " + std::to_string(p));
    }
  }
}

struct UnfusedResult {
  std::vector<float> pooled;
  std::vector<std::vector<float>> param_grads;
};

// oneDNN's conv, then oneDNN's max pool, forward and backward, on the fused harness's data.
UnfusedResult run_unfused(const FusedCase& c, const LayerHarness& like, const std::vector<float>& output_grad) {
  const Conv2d conv_layer(c.options);
  LayerHarness conv_harness(conv_layer, {HarnessInput(c.input, std::nullopt, false)}, Mode::training, 5);
  conv_harness.inputs = like.inputs;
  conv_harness.params = like.params;
  const Shape conv_shape = conv_harness.output_shape();
  Pool2dOptions max_2x2;
  const Pool2d pool_layer(max_2x2);
  LayerHarness pool_harness(pool_layer, {HarnessInput(conv_shape)}, Mode::training, 6);
  pool_harness.inputs[0] = conv_harness.forward();
  UnfusedResult r;
  r.pooled = pool_harness.forward();
  const LayerHarness::Gradients pool_grads = pool_harness.backward(output_grad);
  conv_harness.forward();
  r.param_grads = conv_harness.backward(pool_grads.inputs[0]).params;
  return r;
}

void expect_matches_unfused(const FusedCase& c, LayerHarness& harness, const std::string& what) {
  const std::vector<float> output_grad = testing::random_weights(static_cast<std::size_t>(harness.output_shape().elements()), 9);
  const std::vector<float> pooled = harness.forward();
  const LayerHarness::Gradients grads = harness.backward(output_grad);
  const UnfusedResult unfused = run_unfused(c, harness, output_grad);
  testing::expect_close(pooled, std::vector<double>(unfused.pooled.begin(), unfused.pooled.end()), 1e-5,
                        std::string(c.name) + what + " pooled output");
  for (std::size_t p = 0; p < grads.params.size(); ++p) {
    // Sums of up to a few thousand terms, each summed in another order.
    const std::vector<float>& expected = unfused.param_grads[p];
    float scale = 0.0f;
    for (float e : expected) scale = std::max(scale, std::abs(e));
    for (std::size_t i = 0; i < expected.size(); ++i) {
      ASSERT_NEAR(grads.params[p][i], expected[i], 1e-5f * (1.0f + scale))
          << c.name << what << ": parameter " << p << " gradient " << i;
    }
  }
}

TEST(Conv2dPoolTraining, MatchesOneDnnsConvThenMaxPool) {
  for (const FusedCase& c : fused_cases) {
    const Conv2d layer(c.options);
    LayerHarness harness = fused(layer, c);
    expect_matches_unfused(c, harness, "");
  }
}

// Zero weights: every conv value is exactly the bias, every window a four-way tie. oneDNN's
// pool sends the gradient to the window's first position (top left); so must the fusion,
// or the weight gradients (sums of the inputs under the chosen positions) differ.
TEST(Conv2dPoolTraining, TiesGoWhereOneDnnsMaxPoolSendsThem) {
  for (const FusedCase& c : fused_cases) {
    if (!c.options.bias) continue;
    const Conv2d layer(c.options);
    LayerHarness harness = fused(layer, c);
    std::fill(harness.params[0].begin(), harness.params[0].end(), 0.0f);
    expect_matches_unfused(c, harness, ", zero weights");
  }
}

}  // namespace
}  // namespace ember
