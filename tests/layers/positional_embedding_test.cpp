// PositionalEmbedding: y = x + P against a plain sum, finite differences, accumulation.
#include "layers/positional_embedding.h"

#include <gtest/gtest.h>

#include "engine/error.h"
#include "layers/registry.h"
#include "support/layer_harness.h"
#include "support/expect_error.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

struct EmbeddingCase {
  const char* name;
  Shape input;  // (N, T, D)
};

class PositionalEmbeddingTest : public ::testing::TestWithParam<EmbeddingCase> {
 protected:
  PositionalEmbedding layer() const { return PositionalEmbedding(GetParam().input[1], GetParam().input[2]); }
};

TEST_P(PositionalEmbeddingTest, ForwardAddsTheSameTableToEverySample) {
  const PositionalEmbedding l = layer();
  LayerHarness harness(l, {HarnessInput{GetParam().input}});
  const std::vector<float> y = harness.forward();
  const std::size_t per_sample = harness.params[0].size();
  std::vector<double> reference;
  for (std::size_t i = 0; i < y.size(); ++i) {
    reference.push_back(static_cast<double>(harness.inputs[0][i]) + harness.params[0][i % per_sample]);
  }
  testing::expect_close(y, reference, 1e-7, "x + P");
}

TEST_P(PositionalEmbeddingTest, GradientsMatchFiniteDifferences) {
  const PositionalEmbedding l = layer();
  LayerHarness harness(l, {HarnessInput{GetParam().input}});
  testing::expect_gradients_match_finite_differences(harness);
}

TEST_P(PositionalEmbeddingTest, ParameterGradientsAccumulate) {
  const PositionalEmbedding l = layer();
  LayerHarness harness(l, {HarnessInput{GetParam().input}});
  testing::expect_parameter_gradients_accumulate(harness);
}

INSTANTIATE_TEST_SUITE_P(Shapes, PositionalEmbeddingTest,
                         ::testing::Values(EmbeddingCase{"batch1", Shape{1, 4, 8}},
                                           EmbeddingCase{"odd_tokens", Shape{3, 7, 17}},
                                           EmbeddingCase{"one_token", Shape{2, 1, 33}},
                                           EmbeddingCase{"one_feature", Shape{2, 5, 1}},
                                           EmbeddingCase{"vit_like", Shape{2, 49, 64}}),
                         [](const ::testing::TestParamInfo<EmbeddingCase>& info) { return std::string(info.param.name); });

TEST(PositionalEmbedding, TheTableIsAParameterNamedWeightWithSmallNormalInit) {
  const PositionalEmbedding layer(10, 6);
  const std::vector<Shape> inputs{Shape{2, 10, 6}};
  const std::vector<ParameterSpec> specs = layer.parameters(inputs);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].name, "weight");
  EXPECT_EQ(specs[0].shape, (Shape{10, 6}));
  EXPECT_EQ(specs[0].init, Init::normal_scaled);
  EXPECT_FLOAT_EQ(specs[0].scale, 0.02f);
}

TEST(PositionalEmbedding, MayRunInPlaceAndReadsNothingInBackward) {
  const PositionalEmbedding layer(3, 4);
  LayerHarness harness(layer, {HarnessInput{Shape{2, 3, 4}}});
  EXPECT_TRUE(harness.prepared().can_run_in_place);
  EXPECT_FALSE(harness.prepared().backward_reads_inputs);
  EXPECT_FALSE(harness.prepared().backward_reads_output);
}

TEST(PositionalEmbedding, WrongShapesAreNamed) {
  const PositionalEmbedding layer(5, 8);
  for (const Shape& wrong : {Shape{2, 6, 8}, Shape{2, 5, 9}, Shape{2, 40}}) {
    const std::vector<Shape> inputs{wrong};
    try {
      (void)layer.output_shape(inputs);
      FAIL() << wrong.str() << " was accepted by PositionalEmbedding(5, 8)";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("positional_embedding"), std::string::npos) << message;
      EXPECT_NE(message.find("(N, 5, 8)"), std::string::npos) << message;
      EXPECT_NE(message.find(wrong.str()), std::string::npos) << message;
    }
  }
}

TEST(PositionalEmbedding, OptionsRoundTrip) {
  const PositionalEmbedding layer(49, 64);
  const auto rebuilt = make_layer("positional_embedding", layer.options());
  EXPECT_EQ(rebuilt->kind(), "positional_embedding");
  EXPECT_EQ(rebuilt->options(), layer.options());
  EXPECT_EQ(layer.options(), (Json{{"tokens", 49}, {"features", 64}}));
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("positional_embedding", Json{{"tokens", 49}}); },
                                         {"positional_embedding", "'features'", "required"}));
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("positional_embedding", Json{{"tokens", 0}, {"features", 4}}); },
                                         {"positional_embedding", "'tokens'", "positive integer", "found 0"}));
  EXPECT_TRUE(testing::throws_error_with(
      [] { (void)make_layer("positional_embedding", Json{{"tokens", 4}, {"features", 4}, {"scale", 1}}); },
      {"positional_embedding", "unknown option 'scale'", "tokens, features"}));
}

}  // namespace
}  // namespace ember
