// AttentionPool: a double reference (scores, softmax over tokens, weighted sum), finite
// differences for the input and the scoring Linear, accumulation, shapes and options.
#include "layers/attention_pool.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/error.h"
#include "layers/registry.h"
#include "support/layer_harness.h"
#include "support/expect_error.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

std::vector<double> attention_pool_reference(const std::vector<float>& x, const std::vector<float>& weight, float bias,
                                             std::int64_t N, std::int64_t T, std::int64_t C) {
  std::vector<double> y(static_cast<std::size_t>(N * C), 0.0);
  for (std::int64_t n = 0; n < N; ++n) {
    std::vector<double> score(static_cast<std::size_t>(T));
    double max = -INFINITY;
    for (std::int64_t t = 0; t < T; ++t) {
      double s = bias;
      for (std::int64_t c = 0; c < C; ++c) s += static_cast<double>(x[static_cast<std::size_t>((n * T + t) * C + c)]) * weight[static_cast<std::size_t>(c)];
      score[static_cast<std::size_t>(t)] = s;
      max = std::max(max, s);
    }
    double total = 0.0;
    for (double& s : score) total += (s = std::exp(s - max));
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t c = 0; c < C; ++c) {
        y[static_cast<std::size_t>(n * C + c)] += score[static_cast<std::size_t>(t)] / total * x[static_cast<std::size_t>((n * T + t) * C + c)];
      }
  }
  return y;
}

struct PoolCase {
  const char* name;
  Shape input;  // (N, T, C)
};

class AttentionPoolTest : public ::testing::TestWithParam<PoolCase> {
 protected:
  std::int64_t channels() const { return GetParam().input[2]; }
};

TEST_P(AttentionPoolTest, ForwardMatchesTheReference) {
  const AttentionPool layer(channels());
  const Shape& x = GetParam().input;
  for (Mode mode : {Mode::training, Mode::inference}) {
    LayerHarness harness(layer, {HarnessInput{x}}, mode);
    // Weights large enough that the softmax is far from uniform.
    for (float& w : harness.params[0]) w *= 4.0f;
    const std::vector<float> y = harness.forward();
    testing::expect_close(y, attention_pool_reference(harness.inputs[0], harness.params[0], harness.params[1][0], x[0], x[1], x[2]),
                          1e-5, mode == Mode::training ? "attention_pool (training)" : "attention_pool (inference)");
  }
}

TEST_P(AttentionPoolTest, GradientsMatchFiniteDifferences) {
  const AttentionPool layer(channels());
  LayerHarness harness(layer, {HarnessInput{GetParam().input}});
  for (float& w : harness.params[0]) w *= 2.0f;
  testing::expect_gradients_match_finite_differences(harness);
}

TEST_P(AttentionPoolTest, ParameterGradientsAccumulate) {
  const AttentionPool layer(channels());
  LayerHarness harness(layer, {HarnessInput{GetParam().input}});
  testing::expect_parameter_gradients_accumulate(harness);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionPoolTest,
                         ::testing::Values(PoolCase{"batch1", Shape{1, 4, 8}},
                                           PoolCase{"one_token", Shape{2, 1, 5}},
                                           PoolCase{"odd_tokens", Shape{2, 7, 17}},
                                           PoolCase{"wide", Shape{3, 5, 33}},
                                           PoolCase{"one_channel", Shape{2, 6, 1}},
                                           PoolCase{"patches", Shape{2, 49, 32}}),
                         [](const ::testing::TestParamInfo<PoolCase>& info) { return std::string(info.param.name); });

TEST(AttentionPool, InputGradientIsSkippedWhenNotNeeded) {
  const AttentionPool layer(9);
  LayerHarness harness(layer, {HarnessInput{Shape{3, 5, 9}, std::nullopt, false}});
  testing::expect_gradients_match_finite_differences(harness);
}

TEST(AttentionPool, HugeScoresStayFinite) {
  // Scores in the thousands: exp without the max subtraction would overflow.
  const AttentionPool layer(4);
  LayerHarness harness(layer, {HarnessInput{Shape{1, 3, 4}}});
  harness.inputs[0] = {1, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0};
  harness.params[0] = {1000, 0, 0, 0};
  harness.params[1] = {5000};
  const std::vector<float> y = harness.forward();
  testing::expect_close(y, {2, 0, 0, 0}, 1e-6, "pooling dominated by the third token");
}

TEST(AttentionPool, ParametersAreALinearToOneScore) {
  const AttentionPool layer(24);
  const std::vector<Shape> inputs{Shape{2, 9, 24}};
  const std::vector<ParameterSpec> specs = layer.parameters(inputs);
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[0].name, "weight");
  EXPECT_EQ(specs[0].shape, (Shape{1, 24}));
  EXPECT_EQ(specs[0].init, Init::kaiming_uniform);
  EXPECT_EQ(specs[0].fan_in, 24);
  EXPECT_EQ(specs[1].name, "bias");
  EXPECT_EQ(specs[1].shape, (Shape{1}));
  EXPECT_EQ(specs[1].init, Init::bias_uniform);
  EXPECT_EQ(specs[1].fan_in, 24);
}

TEST(AttentionPool, SavesTheWeightsOnlyForTraining) {
  const AttentionPool layer(8);
  LayerHarness training(layer, {HarnessInput{Shape{3, 5, 8}}}, Mode::training);
  EXPECT_EQ(training.prepared().saved_bytes, 15u * sizeof(float));
  EXPECT_TRUE(training.prepared().backward_reads_inputs);
  LayerHarness inference(layer, {HarnessInput{Shape{3, 5, 8}}}, Mode::inference);
  EXPECT_EQ(inference.prepared().saved_bytes, 0u);
}

TEST(AttentionPool, WrongShapesAreNamed) {
  const AttentionPool layer(8);
  for (const Shape& wrong : {Shape{2, 5, 10}, Shape{2, 8}}) {
    const std::vector<Shape> inputs{wrong};
    try {
      (void)layer.output_shape(inputs);
      FAIL() << wrong.str() << " was accepted by AttentionPool(8)";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("attention_pool"), std::string::npos) << message;
      EXPECT_NE(message.find("(N, T, 8)"), std::string::npos) << message;
      EXPECT_NE(message.find(wrong.str()), std::string::npos) << message;
    }
  }
}

TEST(AttentionPool, OptionsRoundTrip) {
  const AttentionPool layer(40);
  const auto rebuilt = make_layer("attention_pool", layer.options());
  EXPECT_EQ(rebuilt->kind(), "attention_pool");
  EXPECT_EQ(rebuilt->options(), layer.options());
  EXPECT_EQ(layer.options(), (Json{{"features", 40}}));
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("attention_pool", Json::object()); },
                                         {"attention_pool", "'features'", "required"}));
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("attention_pool", Json{{"features", -3}}); },
                                         {"attention_pool", "'features'", "positive integer", "found -3"}));
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("attention_pool", Json{{"features", 4}, {"heads", 2}}); },
                                         {"attention_pool", "unknown option 'heads'", "features"}));
}

}  // namespace
}  // namespace ember
