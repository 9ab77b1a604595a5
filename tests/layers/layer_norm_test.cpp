// LayerNorm: a double reference, finite differences, accumulation, options and errors.
#include "layers/layer_norm.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/error.h"
#include "layers/registry.h"
#include "support/layer_harness.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

// torch.nn.LayerNorm over the last dimension, in double.
std::vector<double> layer_norm_reference(const std::vector<float>& x, const std::vector<float>& weight,
                                         const std::vector<float>& bias, std::int64_t rows, std::int64_t cols, double eps) {
  std::vector<double> y(x.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* row = x.data() + r * cols;
    double mean = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) mean += row[c];
    mean /= static_cast<double>(cols);
    double variance = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) variance += (row[c] - mean) * (row[c] - mean);
    variance /= static_cast<double>(cols);
    const double rstd = 1.0 / std::sqrt(variance + eps);
    for (std::int64_t c = 0; c < cols; ++c) {
      y[static_cast<std::size_t>(r * cols + c)] =
          (row[c] - mean) * rstd * weight[static_cast<std::size_t>(c)] + bias[static_cast<std::size_t>(c)];
    }
  }
  return y;
}

struct LayerNormCase {
  const char* name;
  Shape input;
};

class LayerNormTest : public ::testing::TestWithParam<LayerNormCase> {
 protected:
  std::int64_t features() const { return GetParam().input[GetParam().input.rank() - 1]; }
};

TEST_P(LayerNormTest, ForwardMatchesTheReference) {
  const LayerNorm layer(features());
  for (Mode mode : {Mode::training, Mode::inference}) {
    LayerHarness harness(layer, {HarnessInput{GetParam().input}}, mode);
    const std::vector<float> y = harness.forward();
    const std::int64_t rows = GetParam().input.elements() / features();
    testing::expect_close(y, layer_norm_reference(harness.inputs[0], harness.params[0], harness.params[1], rows, features(), 1e-5),
                          2e-5, mode == Mode::training ? "layer_norm output (training)" : "layer_norm output (inference)");
  }
}

TEST_P(LayerNormTest, GradientsMatchFiniteDifferences) {
  const LayerNorm layer(features());
  LayerHarness harness(layer, {HarnessInput{GetParam().input}});
  testing::expect_gradients_match_finite_differences(harness);
}

TEST_P(LayerNormTest, ParameterGradientsAccumulate) {
  const LayerNorm layer(features());
  LayerHarness harness(layer, {HarnessInput{GetParam().input}});
  testing::expect_parameter_gradients_accumulate(harness);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LayerNormTest,
                         ::testing::Values(LayerNormCase{"batch1", Shape{1, 7}},
                                           LayerNormCase{"odd_tokens", Shape{2, 5, 17}},
                                           LayerNormCase{"one_token", Shape{3, 1, 33}},
                                           LayerNormCase{"vector_multiple", Shape{2, 3, 64}},
                                           LayerNormCase{"one_feature", Shape{2, 3, 1}},
                                           LayerNormCase{"image_rows", Shape{2, 3, 4, 10}}),
                         [](const ::testing::TestParamInfo<LayerNormCase>& info) { return std::string(info.param.name); });

TEST(LayerNorm, InputGradientIsSkippedWhenNotNeeded) {
  const LayerNorm layer(12);
  LayerHarness harness(layer, {HarnessInput{Shape{3, 4, 12}, std::nullopt, false}});
  testing::expect_gradients_match_finite_differences(harness);
}

TEST(LayerNorm, RowsWithALargeMeanKeepTheirVariance) {
  // 100 + small values: E[x^2] - mean^2 in float would be off by about 20%.
  const LayerNorm layer(24, 1e-6);
  LayerHarness harness(layer, {HarnessInput{Shape{2, 24}}});
  for (float& v : harness.inputs[0]) v = 100.0f + 0.1f * v;
  for (float& w : harness.params[0]) w = 1.0f;
  for (float& b : harness.params[1]) b = 0.0f;
  const std::vector<float> y = harness.forward();
  testing::expect_close(y, layer_norm_reference(harness.inputs[0], harness.params[0], harness.params[1], 2, 24, 1e-6), 5e-4,
                        "layer_norm of rows around 100");
}

TEST(LayerNorm, ParametersStartLikeTorch) {
  const LayerNorm layer(10);
  const std::vector<Shape> inputs{Shape{2, 3, 10}};
  const std::vector<ParameterSpec> specs = layer.parameters(inputs);
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[0].name, "weight");
  EXPECT_EQ(specs[0].shape, (Shape{10}));
  EXPECT_EQ(specs[0].init, Init::ones);
  EXPECT_EQ(specs[1].name, "bias");
  EXPECT_EQ(specs[1].shape, (Shape{10}));
  EXPECT_EQ(specs[1].init, Init::zeros);
}

TEST(LayerNorm, SavesStatisticsOnlyForTraining) {
  const LayerNorm layer(16);
  LayerHarness training(layer, {HarnessInput{Shape{3, 5, 16}}}, Mode::training);
  EXPECT_EQ(training.prepared().saved_bytes, 2u * 15u * sizeof(float));
  EXPECT_TRUE(training.prepared().backward_reads_inputs);
  LayerHarness inference(layer, {HarnessInput{Shape{3, 5, 16}}}, Mode::inference);
  EXPECT_EQ(inference.prepared().saved_bytes, 0u);
}

TEST(LayerNorm, WrongFeatureCountIsNamed) {
  const LayerNorm layer(64);
  const std::vector<Shape> wrong{Shape{2, 3, 32}};
  try {
    (void)layer.output_shape(wrong);
    FAIL() << "a 32-wide input was accepted by LayerNorm(64)";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("layer_norm"), std::string::npos) << message;
    EXPECT_NE(message.find("(N, ..., 64)"), std::string::npos) << message;
    EXPECT_NE(message.find("(2, 3, 32)"), std::string::npos) << message;
  }
}

TEST(LayerNorm, OptionsRoundTrip) {
  const LayerNorm layer(48, 1e-6);
  const auto rebuilt = make_layer("layer_norm", layer.options());
  EXPECT_EQ(rebuilt->kind(), "layer_norm");
  EXPECT_EQ(rebuilt->options(), layer.options());
  EXPECT_EQ(make_layer("layer_norm", Json{{"features", 8}})->options(), (Json{{"features", 8}, {"eps", 1e-5}}));
}

TEST(LayerNorm, BadOptionsAreNamed) {
  auto message_of = [](const Json& options) {
    try {
      (void)make_layer("layer_norm", options);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_NE(message_of(Json::object()).find("'features' is required"), std::string::npos) << message_of(Json::object());
  EXPECT_NE(message_of(Json{{"features", 0}}).find("features"), std::string::npos);
  EXPECT_NE(message_of(Json{{"features", 8}, {"eps", 0.0}}).find("eps"), std::string::npos);
  EXPECT_NE(message_of(Json{{"features", 8}, {"eps", -1.0}}).find("eps"), std::string::npos);
  EXPECT_NE(message_of(Json{{"features", 8}, {"epsilon", 1e-5}}).find("unknown option 'epsilon'"), std::string::npos);
}

}  // namespace
}  // namespace ember
