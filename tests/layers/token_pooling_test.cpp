// TokensFromFeatureMap (NCHW -> tokens) and MeanPoolTokens: plain references, finite
// differences, shapes and options.
#include <gtest/gtest.h>

#include "engine/error.h"
#include "layers/mean_pool_tokens.h"
#include "layers/registry.h"
#include "layers/tokens_from_feature_map.h"
#include "support/layer_harness.h"
#include "support/expect_error.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

std::string message_of_output_shape(const Layer& layer, const Shape& input) {
  const std::vector<Shape> inputs{input};
  try {
    (void)layer.output_shape(inputs);
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

class TokensFromFeatureMapTest : public ::testing::TestWithParam<Shape> {};

TEST_P(TokensFromFeatureMapTest, ForwardIsFlattenThenTranspose) {
  const TokensFromFeatureMap layer;
  const Shape& x = GetParam();
  const std::int64_t N = x[0], C = x[1], P = x[2] * x[3];
  LayerHarness harness(layer, {HarnessInput{x}});
  EXPECT_EQ(harness.output_shape(), (Shape{N, P, C}));
  const std::vector<float> y = harness.forward();
  ASSERT_EQ(y.size(), harness.inputs[0].size());
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t p = 0; p < P; ++p)
      for (std::int64_t c = 0; c < C; ++c) {
        ASSERT_EQ(y[static_cast<std::size_t>((n * P + p) * C + c)], harness.inputs[0][static_cast<std::size_t>((n * C + c) * P + p)])
            << "n " << n << " token " << p << " channel " << c;
      }
}

TEST_P(TokensFromFeatureMapTest, GradientsMatchFiniteDifferences) {
  const TokensFromFeatureMap layer;
  LayerHarness harness(layer, {HarnessInput{GetParam()}});
  testing::expect_gradients_match_finite_differences(harness);
}

INSTANTIATE_TEST_SUITE_P(Shapes, TokensFromFeatureMapTest,
                         ::testing::Values(Shape{1, 1, 1, 1}, Shape{2, 3, 5, 7}, Shape{1, 17, 4, 5}, Shape{2, 33, 3, 3},
                                           Shape{1, 20, 6, 3}, Shape{2, 32, 7, 7}));

TEST(TokensFromFeatureMap, NeedsAFeatureMap) {
  const TokensFromFeatureMap layer;
  const std::string message = message_of_output_shape(layer, Shape{2, 3, 4});
  EXPECT_NE(message.find("tokens_from_feature_map"), std::string::npos) << message;
  EXPECT_NE(message.find("(N, C, H, W)"), std::string::npos) << message;
  EXPECT_NE(message.find("(2, 3, 4)"), std::string::npos) << message;
}

TEST(TokensFromFeatureMap, TakesPlainInputsAndOptionsRoundTrip) {
  const TokensFromFeatureMap layer;
  EXPECT_FALSE(layer.accepts_blocked_inputs());
  const auto rebuilt = make_layer("tokens_from_feature_map", layer.options());
  EXPECT_EQ(rebuilt->kind(), "tokens_from_feature_map");
  EXPECT_EQ(rebuilt->options(), layer.options());
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("tokens_from_feature_map", Json{{"channels", 3}}); },
                                         {"tokens_from_feature_map", "unknown option 'channels'", "takes none"}));
}

class MeanPoolTokensTest : public ::testing::TestWithParam<Shape> {};

TEST_P(MeanPoolTokensTest, ForwardIsTheMeanOverTokens) {
  const MeanPoolTokens layer;
  const Shape& x = GetParam();
  const std::int64_t N = x[0], T = x[1], C = x[2];
  LayerHarness harness(layer, {HarnessInput{x}});
  EXPECT_EQ(harness.output_shape(), (Shape{N, C}));
  const std::vector<float> y = harness.forward();
  std::vector<double> reference(static_cast<std::size_t>(N * C), 0.0);
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t c = 0; c < C; ++c) {
        reference[static_cast<std::size_t>(n * C + c)] += harness.inputs[0][static_cast<std::size_t>((n * T + t) * C + c)] / static_cast<double>(T);
      }
  testing::expect_close(y, reference, 1e-6, "mean over tokens");
}

TEST_P(MeanPoolTokensTest, GradientsMatchFiniteDifferences) {
  const MeanPoolTokens layer;
  LayerHarness harness(layer, {HarnessInput{GetParam()}});
  testing::expect_gradients_match_finite_differences(harness);
}

INSTANTIATE_TEST_SUITE_P(Shapes, MeanPoolTokensTest,
                         ::testing::Values(Shape{1, 1, 1}, Shape{1, 1, 33}, Shape{2, 7, 17}, Shape{3, 5, 16},
                                           Shape{2, 49, 40}));

TEST(MeanPoolTokens, NeedsTokens) {
  const MeanPoolTokens layer;
  for (const Shape& wrong : {Shape{4, 10}, Shape{2, 3, 4, 5}}) {
    const std::string message = message_of_output_shape(layer, wrong);
    EXPECT_NE(message.find("mean_pool_tokens"), std::string::npos) << message;
    EXPECT_NE(message.find("(N, T, C)"), std::string::npos) << message;
    EXPECT_NE(message.find(wrong.str()), std::string::npos) << message;
  }
}

TEST(MeanPoolTokens, OptionsRoundTrip) {
  const MeanPoolTokens layer;
  const auto rebuilt = make_layer("mean_pool_tokens", layer.options());
  EXPECT_EQ(rebuilt->kind(), "mean_pool_tokens");
  EXPECT_EQ(rebuilt->options(), layer.options());
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("mean_pool_tokens", Json{{"dim", 1}}); },
                                         {"mean_pool_tokens", "unknown option 'dim'", "takes none"}));
}

}  // namespace
}  // namespace ember
