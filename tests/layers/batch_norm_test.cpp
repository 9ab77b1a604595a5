#include "layers/batch_norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <ostream>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "layers/registry.h"
#include "support/expect_error.h"
#include "support/layer_harness.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;
using Tag = dnnl::memory::format_tag;

struct ChannelStatistics {
  std::vector<double> mean, biased_var, unbiased_var;
};

// Per channel over N and the spatial positions of a plain (N, C, ...) tensor, in double.
ChannelStatistics channel_statistics(const Shape& shape, const std::vector<float>& x) {
  const std::int64_t N = shape[0], C = shape[1], S = shape.elements() / (N * C);
  ChannelStatistics s;
  for (std::int64_t c = 0; c < C; ++c) {
    double sum = 0.0;
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t i = 0; i < S; ++i) sum += x[static_cast<std::size_t>((n * C + c) * S + i)];
    const double mean = sum / static_cast<double>(N * S);
    double m2 = 0.0;
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t i = 0; i < S; ++i) {
        const double d = x[static_cast<std::size_t>((n * C + c) * S + i)] - mean;
        m2 += d * d;
      }
    s.mean.push_back(mean);
    s.biased_var.push_back(m2 / static_cast<double>(N * S));
    s.unbiased_var.push_back(m2 / static_cast<double>(N * S - 1));
  }
  return s;
}

// y = (x - mean) / sqrt(var + eps) * weight + bias, in double.
std::vector<double> normalized(const Shape& shape, const std::vector<float>& x, const std::vector<double>& mean,
                               const std::vector<double>& var, const std::vector<float>* weight, const std::vector<float>* bias,
                               double eps) {
  const std::int64_t N = shape[0], C = shape[1], S = shape.elements() / (N * C);
  std::vector<double> y(x.size());
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t i = 0; i < S; ++i) {
        const auto k = static_cast<std::size_t>((n * C + c) * S + i);
        const auto ci = static_cast<std::size_t>(c);
        const double xhat = (x[k] - mean[ci]) / std::sqrt(var[ci] + eps);
        y[k] = xhat * (weight ? (*weight)[ci] : 1.0) + (bias ? (*bias)[ci] : 0.0);
      }
  return y;
}

BatchNormOptions bn(std::int64_t features, std::optional<double> momentum = 0.1, bool affine = true, bool track = true) {
  BatchNormOptions o;
  o.num_features = features;
  o.momentum = momentum;
  o.affine = affine;
  o.track_running_stats = track;
  return o;
}

// Inputs with a mean and a spread per channel far from (0, 1), so the normalization shows.
void offset_channels(LayerHarness& harness, const Shape& shape) {
  const std::int64_t N = shape[0], C = shape[1], S = shape.elements() / (N * C);
  std::vector<float>& x = harness.inputs[0];
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t i = 0; i < S; ++i) {
        float& v = x[static_cast<std::size_t>((n * C + c) * S + i)];
        v = 3.0f * static_cast<float>(c % 3) - 2.0f + (1.0f + 0.5f * static_cast<float>(c % 4)) * v;
      }
}

TEST(BatchNorm, TrainingForwardNormalizesWithBatchStatisticsAndUpdatesRunningStatistics) {
  const Shape shape{4, 5, 3, 2};
  const BatchNorm layer(2, bn(5));
  LayerHarness harness(layer, {HarnessInput{shape}}, Mode::training);
  offset_channels(harness, shape);
  const std::vector<float> y = harness.forward();
  const ChannelStatistics s = channel_statistics(shape, harness.inputs[0]);
  testing::expect_close(y, normalized(shape, harness.inputs[0], s.mean, s.biased_var, &harness.params[0], &harness.params[1], 1e-5),
                        2e-6, "training output");
  // PyTorch: running = (1 - momentum) * running + momentum * batch, the variance unbiased.
  for (std::size_t c = 0; c < 5; ++c) {
    EXPECT_NEAR(harness.buffers[0][c], 0.1 * s.mean[c], 1e-6) << "running_mean[" << c << "]";
    EXPECT_NEAR(harness.buffers[1][c], 0.9 + 0.1 * s.unbiased_var[c], 1e-6) << "running_var[" << c << "]";
  }
  EXPECT_EQ(harness.buffers[2][0], 1.0f);
}

TEST(BatchNorm, RunningStatisticsFollowMomentumStepByStep) {
  const Shape shape{3, 2, 5};
  const BatchNorm layer(1, bn(2, 0.3));
  LayerHarness harness(layer, {HarnessInput{shape}}, Mode::training);
  std::vector<double> mean{0.0, 0.0}, var{1.0, 1.0};
  for (int step = 0; step < 3; ++step) {
    offset_channels(harness, shape);
    harness.forward();
    const ChannelStatistics s = channel_statistics(shape, harness.inputs[0]);
    for (std::size_t c = 0; c < 2; ++c) {
      mean[c] = 0.7 * mean[c] + 0.3 * s.mean[c];
      var[c] = 0.7 * var[c] + 0.3 * s.unbiased_var[c];
      EXPECT_NEAR(harness.buffers[0][c], mean[c], 1e-5 * (1 + std::fabs(mean[c]))) << "step " << step;
      EXPECT_NEAR(harness.buffers[1][c], var[c], 1e-5 * (1 + var[c])) << "step " << step;
    }
    EXPECT_EQ(harness.buffers[2][0], static_cast<float>(step + 1));
  }
}

TEST(BatchNorm, NullMomentumIsTheCumulativeAverage) {
  const Shape shape{4, 3};
  const BatchNorm layer(1, bn(3, std::nullopt));
  LayerHarness harness(layer, {HarnessInput{shape}}, Mode::training);
  std::vector<double> mean_sum(3, 0.0), var_sum(3, 0.0);
  for (int step = 1; step <= 3; ++step) {
    for (float& x : harness.inputs[0]) x = x * 1.5f + 0.25f * static_cast<float>(step);
    harness.forward();
    const ChannelStatistics s = channel_statistics(shape, harness.inputs[0]);
    for (std::size_t c = 0; c < 3; ++c) {
      mean_sum[c] += s.mean[c];
      var_sum[c] += s.unbiased_var[c];
      // factor 1/k at step k: the average of the k batches' statistics (the initial values
      // weigh 1 - 1/1 = 0).
      EXPECT_NEAR(harness.buffers[0][c], mean_sum[c] / step, 1e-5 * (1 + std::fabs(mean_sum[c]))) << "step " << step;
      EXPECT_NEAR(harness.buffers[1][c], var_sum[c] / step, 1e-5 * (1 + var_sum[c])) << "step " << step;
    }
  }
}

TEST(BatchNorm, InferenceUsesRunningStatistics) {
  const Shape shape{2, 3, 4, 4};
  const BatchNorm layer(2, bn(3));
  LayerHarness harness(layer, {HarnessInput{shape}}, Mode::inference);
  EXPECT_FALSE(harness.prepared().forward_reduces);
  EXPECT_TRUE(harness.prepared().can_run_in_place);
  harness.buffers[0] = {0.5f, -1.0f, 2.0f};
  harness.buffers[1] = {0.25f, 4.0f, 1.5f};
  const std::vector<float> before = harness.buffers[0];
  const std::vector<float> y = harness.forward();
  testing::expect_close(y,
                        normalized(shape, harness.inputs[0], {0.5, -1.0, 2.0}, {0.25, 4.0, 1.5}, &harness.params[0],
                                   &harness.params[1], 1e-5),
                        1e-6, "inference output");
  EXPECT_EQ(harness.buffers[0], before) << "inference must not update running statistics";
}

TEST(BatchNorm, InferenceWithoutRunningStatisticsUsesTheBatch) {
  const Shape shape{3, 4, 5};
  const BatchNorm layer(1, bn(4, 0.1, false, false));
  EXPECT_TRUE(layer.buffers(std::vector<Shape>{shape}).empty());
  EXPECT_TRUE(layer.parameters(std::vector<Shape>{shape}).empty());
  LayerHarness harness(layer, {HarnessInput{shape}}, Mode::inference);
  EXPECT_TRUE(harness.prepared().forward_reduces);
  offset_channels(harness, shape);
  const std::vector<float> y = harness.forward();
  const ChannelStatistics s = channel_statistics(shape, harness.inputs[0]);
  testing::expect_close(y, normalized(shape, harness.inputs[0], s.mean, s.biased_var, nullptr, nullptr, 1e-5), 2e-6, "output");
}

struct GradCase {
  const char* name;
  int spatial_rank;
  BatchNormOptions options;
  Shape input;
  Mode mode;
  std::vector<std::int64_t> micro_batches;
  std::optional<Tag> layout;
};

void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

class BatchNormGradTest : public ::testing::TestWithParam<GradCase> {};

TEST_P(BatchNormGradTest, GradientsMatchFiniteDifferences) {
  const GradCase& c = GetParam();
  const BatchNorm layer(c.spatial_rank, c.options);
  LayerHarness harness(layer, {HarnessInput{c.input, c.layout}}, c.mode, 1, FusedActivation::none, c.micro_batches);
  offset_channels(harness, c.input);
  if (!harness.buffers.empty()) {
    for (std::size_t i = 0; i < harness.buffers[0].size(); ++i) {
      harness.buffers[0][i] = 0.3f * static_cast<float>(i) - 0.5f;
      harness.buffers[1][i] = 0.5f + 0.25f * static_cast<float>(i);
    }
  }
  testing::expect_gradients_match_finite_differences(harness);
}

TEST_P(BatchNormGradTest, ParameterGradientsAccumulate) {
  const GradCase& c = GetParam();
  const BatchNorm layer(c.spatial_rank, c.options);
  LayerHarness harness(layer, {HarnessInput{c.input, c.layout}}, c.mode, 1, FusedActivation::none, c.micro_batches);
  testing::expect_parameter_gradients_accumulate(harness);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BatchNormGradTest,
    ::testing::Values(GradCase{"training_2d", 2, bn(5), Shape{3, 5, 4, 3}, Mode::training, {}, std::nullopt},
                      GradCase{"training_2d_three_micro_batches", 2, bn(5), Shape{4, 5, 3, 3}, Mode::training, {1, 2, 1}, std::nullopt},
                      GradCase{"training_1d_nc", 1, bn(7), Shape{6, 7}, Mode::training, {}, std::nullopt},
                      GradCase{"training_1d_ncl_split", 1, bn(3), Shape{4, 3, 5}, Mode::training, {3, 1}, std::nullopt},
                      GradCase{"training_not_affine", 2, bn(4, 0.1, false), Shape{2, 4, 3, 3}, Mode::training, {}, std::nullopt},
                      GradCase{"training_nchw16c_17_channels", 2, bn(17), Shape{2, 17, 3, 3}, Mode::training, {1, 1}, Tag::nChw16c},
                      GradCase{"training_nchw8c", 2, bn(11), Shape{3, 11, 2, 3}, Mode::training, {}, Tag::nChw8c},
                      GradCase{"training_nhwc", 2, bn(6), Shape{2, 6, 3, 4}, Mode::training, {}, Tag::nhwc},
                      GradCase{"training_1d_ncw16c", 1, bn(17), Shape{3, 17, 5}, Mode::training, {2, 1}, Tag::nCw16c},
                      GradCase{"inference_running_statistics", 2, bn(5), Shape{3, 5, 3, 2}, Mode::inference, {}, std::nullopt},
                      GradCase{"inference_running_statistics_nchw16c", 2, bn(5), Shape{2, 5, 3, 2}, Mode::inference, {}, Tag::nChw16c},
                      GradCase{"inference_batch_statistics", 1, bn(4, 0.1, true, false), Shape{5, 4, 3}, Mode::inference, {2, 3},
                               std::nullopt}),
    [](const ::testing::TestParamInfo<GradCase>& info) { return std::string(info.param.name); });

// The whole batch's statistics, whatever the split: results agree to rounding, and one
// split repeated agrees bitwise.
TEST(BatchNorm, SplittingTheBatchGivesTheSameResults) {
  const Shape shape{6, 9, 5, 4};
  const BatchNorm layer(2, bn(9));
  LayerHarness one(layer, {HarnessInput{shape}}, Mode::training, 1, FusedActivation::none, {6});
  LayerHarness three(layer, {HarnessInput{shape}}, Mode::training, 1, FusedActivation::none, {1, 3, 2});
  LayerHarness three_again(layer, {HarnessInput{shape}}, Mode::training, 1, FusedActivation::none, {1, 3, 2});
  offset_channels(one, shape);
  three.inputs = three_again.inputs = one.inputs;
  three.params = three_again.params = one.params;
  const std::vector<float> dy = testing::random_weights(static_cast<std::size_t>(shape.elements()), 5);

  const std::vector<float> y1 = one.forward(), y3 = three.forward(), y3_again = three_again.forward();
  const LayerHarness::Gradients g1 = one.backward(dy), g3 = three.backward(dy), g3_again = three_again.backward(dy);
  EXPECT_EQ(y3, y3_again);
  EXPECT_EQ(g3.inputs[0], g3_again.inputs[0]);
  EXPECT_EQ(g3.params, g3_again.params);
  EXPECT_EQ(three.buffers, three_again.buffers);
  testing::expect_close(y3, std::vector<double>(y1.begin(), y1.end()), 2e-6, "output, 3 micro-batches vs 1");
  testing::expect_close(g3.inputs[0], std::vector<double>(g1.inputs[0].begin(), g1.inputs[0].end()), 2e-5, "input gradient");
  for (std::size_t p = 0; p < 2; ++p) {
    testing::expect_close(g3.params[p], std::vector<double>(g1.params[p].begin(), g1.params[p].end()), 2e-5, "parameter gradient");
  }
  for (std::size_t b = 0; b < 2; ++b) {
    testing::expect_close(three.buffers[b], std::vector<double>(one.buffers[b].begin(), one.buffers[b].end()), 1e-6, "running statistic");
  }
}

// A blocked input (as a convolution hands it on) gives the plain input's results, and the
// output stays in the input's layout.
TEST(BatchNorm, BlockedInputsMatchPlainOnes) {
  for (const auto& [tag, channels] : {std::pair{Tag::nChw16c, 17}, std::pair{Tag::nChw16c, 32}, std::pair{Tag::nChw8c, 13},
                                      std::pair{Tag::nhwc, 5}}) {
    for (Mode mode : {Mode::training, Mode::inference}) {
      const Shape shape{3, channels, 4, 5};
      const BatchNorm layer(2, bn(channels));
      LayerHarness plain(layer, {HarnessInput{shape}}, mode);
      LayerHarness blocked(layer, {HarnessInput{shape, tag}}, mode);
      offset_channels(plain, shape);
      blocked.inputs = plain.inputs;
      blocked.params = plain.params;
      ASSERT_NE(blocked.prepared().output.blocked, nullptr);
      EXPECT_EQ(blocked.prepared().output.blocked->desc, dnnl::memory::desc(dnnl_util::dims_of(shape), dnnl::memory::data_type::f32, tag));
      const std::vector<float> dy = testing::random_weights(static_cast<std::size_t>(shape.elements()), 7);
      const std::vector<float> y_plain = plain.forward(), y_blocked = blocked.forward();
      testing::expect_close(y_blocked, std::vector<double>(y_plain.begin(), y_plain.end()), 2e-6, "blocked output");
      const LayerHarness::Gradients g_plain = plain.backward(dy), g_blocked = blocked.backward(dy);
      testing::expect_close(g_blocked.inputs[0], std::vector<double>(g_plain.inputs[0].begin(), g_plain.inputs[0].end()), 2e-5,
                            "blocked input gradient");
      for (std::size_t p = 0; p < 2; ++p) {
        testing::expect_close(g_blocked.params[p], std::vector<double>(g_plain.params[p].begin(), g_plain.params[p].end()), 2e-5,
                              "blocked parameter gradient");
      }
    }
  }
}

TEST(BatchNorm, ALayoutThatIsNotChannelBlockedIsRefused) {
  const Shape shape{16, 16, 2, 2};
  const BatchNorm layer(2, bn(16));
  const ValueInfo input{shape, make_blocked_layout(dnnl::memory::desc(dnnl_util::dims_of(shape), dnnl::memory::data_type::f32,
                                                                      Tag::NChw16n16c))};
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  PrepareContext context;
  context.mode = Mode::training;
  context.inputs = std::span<const ValueInfo>(&input, 1);
  context.engine = &engine;
  EXPECT_TRUE(testing::throws_error_with([&] { (void)layer.prepare(context); }, {"batch_norm2d", "input layout", "NChw16n16c"}));
}

TEST(BatchNorm, OptionsRoundTripThroughTheRegistry) {
  const Json options{{"num_features", 8}, {"eps", 1e-3}, {"momentum", nullptr}, {"affine", false}, {"track_running_stats", true}};
  const std::unique_ptr<Layer> layer = make_layer("batch_norm2d", options);
  EXPECT_EQ(layer->kind(), "batch_norm2d");
  EXPECT_EQ(layer->options(), options);
  const std::unique_ptr<Layer> defaults = make_layer("batch_norm1d", Json{{"num_features", 3}});
  EXPECT_EQ(defaults->options(),
            (Json{{"num_features", 3}, {"eps", 1e-5}, {"momentum", 0.1}, {"affine", true}, {"track_running_stats", true}}));
  const std::vector<Shape> shapes{Shape{2, 3}};
  const std::vector<ParameterSpec> buffers = defaults->buffers(shapes);
  ASSERT_EQ(buffers.size(), 3u);
  EXPECT_EQ(buffers[0].name, "running_mean");
  EXPECT_EQ(buffers[1].name, "running_var");
  EXPECT_EQ(buffers[1].init, Init::ones);
  EXPECT_EQ(buffers[2].name, "num_batches_tracked");
  EXPECT_EQ(buffers[2].shape, Shape{1});
}

TEST(BatchNorm, BadOptionsAndShapesAreClearErrors) {
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("batch_norm2d", Json::object()); }, {"batch_norm2d", "num_features", "required"}));
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("batch_norm2d", Json{{"num_features", 0}}); },
                                         {"batch_norm2d", "num_features", "positive integer", "found 0"}));
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("batch_norm1d", Json{{"num_features", 4}, {"eps", 0}}); },
                                         {"batch_norm1d", "eps", "(0, 1)", "found 0"}));
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("batch_norm1d", Json{{"num_features", 4}, {"momentum", 1.5}}); },
                                         {"batch_norm1d", "momentum", "[0.0, 1.0] or null", "found 1.5"}));
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("batch_norm2d", Json{{"num_features", 4}, {"affine", "yes"}}); },
                                         {"batch_norm2d", "affine", "true or false", "found \"yes\""}));
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("batch_norm2d", Json{{"num_features", 4}, {"momentun", 0.1}}); },
                                         {"batch_norm2d", "unknown option 'momentun'"}));
  const BatchNorm two_d(2, bn(4));
  EXPECT_TRUE(testing::throws_error_with([&] { (void)two_d.output_shape(std::vector<Shape>{Shape{2, 4, 3}}); },
                                         {"batch_norm2d", "(N, 4, H, W)", "found (2, 4, 3)"}));
  EXPECT_TRUE(testing::throws_error_with([&] { (void)two_d.output_shape(std::vector<Shape>{Shape{2, 5, 3, 3}}); },
                                         {"batch_norm2d", "found (2, 5, 3, 3)"}));
  const BatchNorm one_d(1, bn(4));
  EXPECT_TRUE(testing::throws_error_with([&] { (void)one_d.output_shape(std::vector<Shape>{Shape{2, 4, 3, 3}}); },
                                         {"batch_norm1d", "(N, 4) or (N, 4, L)", "found (2, 4, 3, 3)"}));
}

TEST(BatchNorm, BatchStatisticsOfOneValuePerChannelAreRefused) {
  const BatchNorm layer(1, bn(3));
  LayerHarness harness(layer, {HarnessInput{Shape{1, 3}}}, Mode::training);
  EXPECT_TRUE(testing::throws_error_with([&] { (void)harness.forward(); }, {"batch_norm1d", "more than one value per channel", "found a batch of 1"}));
  const BatchNorm untracked(1, bn(3, 0.1, true, false));
  LayerHarness inference(untracked, {HarnessInput{Shape{1, 3}}}, Mode::inference);
  EXPECT_TRUE(testing::throws_error_with([&] { (void)inference.forward(); }, {"batch_norm1d", "more than one value per channel"}));
  // With running statistics, inference on one sample is fine.
  const BatchNorm tracked(1, bn(3));
  LayerHarness serving(tracked, {HarnessInput{Shape{1, 3}}}, Mode::inference);
  EXPECT_NO_THROW((void)serving.forward());
}

}  // namespace
}  // namespace ember
