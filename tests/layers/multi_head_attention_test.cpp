#include "layers/multi_head_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "layers/registry.h"
#include "support/layer_harness.h"
#include "support/expect_error.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

// nn.MultiheadAttention(batch_first=True) written out with an explicit T x T softmax, in double.
std::vector<double> attention_reference(const MultiHeadAttentionOptions& o, const Shape& in, const std::vector<float>& x,
                                        const std::vector<std::vector<float>>& p, const std::vector<float>* valid) {
  const std::int64_t N = in[0], T = in[1], d = o.d_model, H = o.heads, D = d / H;
  const std::vector<float>& w_in = p[0];
  const std::vector<float>* b_in = o.bias ? &p[1] : nullptr;
  const std::vector<float>& w_out = p[o.bias ? 2 : 1];
  const std::vector<float>* b_out = o.bias ? &p[3] : nullptr;
  std::vector<double> qkv(static_cast<std::size_t>(N * T * 3 * d));
  for (std::int64_t r = 0; r < N * T; ++r)
    for (std::int64_t j = 0; j < 3 * d; ++j) {
      double sum = b_in ? (*b_in)[static_cast<std::size_t>(j)] : 0.0;
      for (std::int64_t i = 0; i < d; ++i) sum += static_cast<double>(x[static_cast<std::size_t>(r * d + i)]) * w_in[static_cast<std::size_t>(j * d + i)];
      qkv[static_cast<std::size_t>(r * 3 * d + j)] = sum;
    }
  std::vector<double> heads(static_cast<std::size_t>(N * T * d), 0.0);
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int64_t keys = valid ? static_cast<std::int64_t>((*valid)[static_cast<std::size_t>(n)]) : T;
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t t = 0; t < T; ++t) {
        std::vector<double> score(static_cast<std::size_t>(T), -std::numeric_limits<double>::infinity());
        double max = -std::numeric_limits<double>::infinity();
        for (std::int64_t s = 0; s < T; ++s) {
          if ((o.causal && s > t) || s >= keys) continue;
          double dot = 0.0;
          for (std::int64_t e = 0; e < D; ++e) {
            dot += qkv[static_cast<std::size_t>((n * T + t) * 3 * d + h * D + e)] * qkv[static_cast<std::size_t>((n * T + s) * 3 * d + d + h * D + e)];
          }
          score[static_cast<std::size_t>(s)] = dot / std::sqrt(static_cast<double>(D));
          max = std::max(max, score[static_cast<std::size_t>(s)]);
        }
        if (max == -std::numeric_limits<double>::infinity()) continue;
        double total = 0.0;
        for (double& v : score) total += (v = std::exp(v - max));
        for (std::int64_t e = 0; e < D; ++e) {
          double acc = 0.0;
          for (std::int64_t s = 0; s < T; ++s) acc += score[static_cast<std::size_t>(s)] / total * qkv[static_cast<std::size_t>((n * T + s) * 3 * d + 2 * d + h * D + e)];
          heads[static_cast<std::size_t>((n * T + t) * d + h * D + e)] = acc;
        }
      }
  }
  std::vector<double> y(static_cast<std::size_t>(N * T * d));
  for (std::int64_t r = 0; r < N * T; ++r)
    for (std::int64_t j = 0; j < d; ++j) {
      double sum = b_out ? (*b_out)[static_cast<std::size_t>(j)] : 0.0;
      for (std::int64_t i = 0; i < d; ++i) sum += heads[static_cast<std::size_t>(r * d + i)] * w_out[static_cast<std::size_t>(j * d + i)];
      y[static_cast<std::size_t>(r * d + j)] = sum;
    }
  return y;
}

struct MhaCase {
  const char* name;
  std::int64_t batch, tokens, d_model, heads;
  bool causal, bias, padding;
};

MultiHeadAttentionOptions options_of(const MhaCase& c) {
  MultiHeadAttentionOptions o;
  o.d_model = c.d_model;
  o.heads = c.heads;
  o.causal = c.causal;
  o.bias = c.bias;
  o.key_padding_mask = c.padding;
  return o;
}

std::vector<HarnessInput> inputs_of(const MhaCase& c) {
  std::vector<HarnessInput> inputs{HarnessInput{Shape{c.batch, c.tokens, c.d_model}}};
  if (c.padding) inputs.push_back(HarnessInput{Shape{c.batch, 1}, std::nullopt, false});
  return inputs;
}

void set_valid_lengths(LayerHarness& harness, const MhaCase& c) {
  if (!c.padding) return;
  for (std::int64_t n = 0; n < c.batch; ++n) harness.inputs[1][static_cast<std::size_t>(n)] = static_cast<float>(std::max<std::int64_t>(1, c.tokens - 2 * n));
}

class MultiHeadAttentionTest : public ::testing::TestWithParam<MhaCase> {};

TEST_P(MultiHeadAttentionTest, ForwardMatchesTheExplicitSoftmax) {
  const MhaCase& c = GetParam();
  const MultiHeadAttention layer(options_of(c));
  for (Mode mode : {Mode::training, Mode::inference}) {
    LayerHarness harness(layer, inputs_of(c), mode);
    set_valid_lengths(harness, c);
    const std::vector<float> y = harness.forward();
    testing::expect_close(y, attention_reference(options_of(c), Shape{c.batch, c.tokens, c.d_model}, harness.inputs[0], harness.params,
                                                 c.padding ? &harness.inputs[1] : nullptr),
                          2e-5, "attention output");
  }
}

TEST_P(MultiHeadAttentionTest, GradientsMatchFiniteDifferences) {
  const MhaCase& c = GetParam();
  const MultiHeadAttention layer(options_of(c));
  LayerHarness harness(layer, inputs_of(c));
  set_valid_lengths(harness, c);
  testing::GradcheckOptions options;
  options.step = 5e-3f;
  testing::expect_gradients_match_finite_differences(harness, options);
}

TEST_P(MultiHeadAttentionTest, ParameterGradientsAccumulate) {
  const MhaCase& c = GetParam();
  const MultiHeadAttention layer(options_of(c));
  LayerHarness harness(layer, inputs_of(c));
  set_valid_lengths(harness, c);
  testing::expect_parameter_gradients_accumulate(harness);
}

INSTANTIATE_TEST_SUITE_P(Shapes, MultiHeadAttentionTest,
                         ::testing::Values(MhaCase{"one_token", 2, 1, 8, 2, false, true, false},
                                           MhaCase{"batch1_odd_tokens", 1, 7, 24, 3, false, true, false},
                                           MhaCase{"attn_cnn_block", 2, 49, 64, 4, false, true, false},
                                           MhaCase{"causal", 2, 33, 16, 2, true, true, false},
                                           MhaCase{"no_bias", 2, 5, 12, 1, false, false, false},
                                           MhaCase{"key_padding", 3, 9, 16, 4, false, true, true},
                                           MhaCase{"long_sequence", 1, 70, 16, 2, true, true, false}),
                         [](const ::testing::TestParamInfo<MhaCase>& info) { return std::string(info.param.name); });

TEST(MultiHeadAttention, OptionsRoundTrip) {
  MultiHeadAttentionOptions o;
  o.d_model = 64;
  o.heads = 4;
  o.causal = true;
  const MultiHeadAttention layer(o);
  const auto rebuilt = make_layer("multi_head_attention", layer.options());
  EXPECT_EQ(rebuilt->options(), layer.options());
}

TEST(MultiHeadAttention, BadConfigurationAndShapesAreNamed) {
  MultiHeadAttentionOptions o;
  o.d_model = 10;
  o.heads = 4;
  EXPECT_TRUE(testing::throws_error_with([&] { MultiHeadAttention{o}; },
                                         {"multi_head_attention", "d_model (10)", "multiple of heads (4)"}));
  o.heads = 2;
  const MultiHeadAttention layer(o);
  const std::vector<Shape> wrong{Shape{2, 5, 12}};
  try {
    (void)layer.output_shape(wrong);
    FAIL() << "a 12-wide input was accepted for d_model 10";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multi_head_attention"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(N, T, 10)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(2, 5, 12)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ember
