#include "layers/pool2d.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include <oneapi/dnnl/dnnl.hpp>

#include "support/layer_harness.h"
#include "support/expect_error.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

// PyTorch's MaxPool2d / AvgPool2d (ceil_mode=False), written out, in double.
std::vector<double> pool2d_reference(const Pool2dOptions& o, const Shape& in, const std::vector<float>& x, const Shape& out) {
  const std::int64_t N = in[0], C = in[1], H = in[2], W = in[3], P = out[2], Q = out[3];
  std::vector<double> y(static_cast<std::size_t>(out.elements()));
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t p = 0; p < P; ++p)
        for (std::int64_t q = 0; q < Q; ++q) {
          const std::int64_t h0 = p * o.stride[0] - o.padding[0], w0 = q * o.stride[1] - o.padding[1];
          double best = -1e300, sum = 0.0;
          std::int64_t inside = 0;
          for (std::int64_t h = h0; h < h0 + o.kernel[0]; ++h)
            for (std::int64_t w = w0; w < w0 + o.kernel[1]; ++w) {
              if (h < 0 || h >= H || w < 0 || w >= W) continue;
              const double v = x[static_cast<std::size_t>(((n * C + c) * H + h) * W + w)];
              best = std::max(best, v);
              sum += v;
              ++inside;
            }
          const double divisor = o.count_include_pad ? static_cast<double>(o.kernel[0] * o.kernel[1]) : static_cast<double>(inside);
          y[static_cast<std::size_t>(((n * C + c) * P + p) * Q + q)] = o.kind == PoolKind::max ? best : sum / divisor;
        }
  return y;
}

// Distinct values 0.05 apart, so max pooling has no ties within a finite-difference step.
void use_distinct_values(std::vector<float>& x) {
  std::vector<std::size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::mt19937 random(3);
  std::shuffle(order.begin(), order.end(), random);
  for (std::size_t i = 0; i < x.size(); ++i) x[order[i]] = 0.05f * static_cast<float>(i) - 0.025f * static_cast<float>(x.size());
}

struct PoolCase {
  const char* name;
  Pool2dOptions options;
  Shape input;
  std::optional<dnnl::memory::format_tag> layout;
};

Pool2dOptions pool(PoolKind kind, std::int64_t kernel, std::int64_t stride, std::int64_t padding, bool include_pad = true) {
  Pool2dOptions o;
  o.kind = kind;
  o.kernel = {kernel, kernel};
  o.stride = {stride, stride};
  o.padding = {padding, padding};
  o.count_include_pad = include_pad;
  return o;
}

class Pool2dTest : public ::testing::TestWithParam<PoolCase> {};

TEST_P(Pool2dTest, ForwardMatchesTheReference) {
  const PoolCase& c = GetParam();
  const Pool2d layer(c.options);
  LayerHarness harness(layer, {HarnessInput{c.input, c.layout}});
  const std::vector<float> y = harness.forward();
  testing::expect_close(y, pool2d_reference(c.options, c.input, harness.inputs[0], harness.output_shape()), 1e-6,
                        "pool output");
}

TEST_P(Pool2dTest, GradientsMatchFiniteDifferences) {
  const PoolCase& c = GetParam();
  const Pool2d layer(c.options);
  LayerHarness harness(layer, {HarnessInput{c.input, c.layout}});
  use_distinct_values(harness.inputs[0]);
  testing::expect_gradients_match_finite_differences(harness);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Pool2dTest,
    ::testing::Values(PoolCase{"seed_cnn_max", pool(PoolKind::max, 2, 2, 0), Shape{2, 32, 28, 28}, std::nullopt},
                      PoolCase{"max_odd_size_batch1", pool(PoolKind::max, 2, 2, 0), Shape{1, 3, 7, 5}, std::nullopt},
                      PoolCase{"max_overlapping_padded", pool(PoolKind::max, 3, 2, 1), Shape{2, 5, 9, 6}, std::nullopt},
                      PoolCase{"max_blocked_channels_17", pool(PoolKind::max, 2, 2, 0), Shape{2, 17, 6, 6},
                               dnnl::memory::format_tag::nChw16c},
                      PoolCase{"avg", pool(PoolKind::average, 2, 2, 0), Shape{2, 3, 8, 6}, std::nullopt},
                      PoolCase{"avg_padded_include_pad", pool(PoolKind::average, 3, 2, 1), Shape{1, 5, 7, 7}, std::nullopt},
                      PoolCase{"avg_padded_exclude_pad", pool(PoolKind::average, 3, 2, 1, false), Shape{2, 4, 7, 6},
                               std::nullopt},
                      PoolCase{"avg_blocked", pool(PoolKind::average, 2, 1, 0), Shape{2, 16, 5, 5},
                               dnnl::memory::format_tag::nChw16c}),
    [](const ::testing::TestParamInfo<PoolCase>& info) { return std::string(info.param.name); });

TEST(Pool2d, InferenceNeedsNoWorkspace) {
  const Pool2d layer(pool(PoolKind::max, 2, 2, 0));
  LayerHarness training(layer, {HarnessInput{Shape{4, 8, 8, 8}}}, Mode::training);
  LayerHarness inference(layer, {HarnessInput{Shape{4, 8, 8, 8}}}, Mode::inference);
  EXPECT_GT(training.prepared().saved_bytes, 0u);
  EXPECT_EQ(inference.prepared().saved_bytes, 0u);
  inference.inputs = training.inputs;
  EXPECT_EQ(training.forward(), inference.forward());
}

TEST(Pool2d, AWindowLargerThanTheInputIsRefused) {
  const Pool2d layer(pool(PoolKind::max, 5, 1, 0));
  const std::vector<Shape> small{Shape{1, 1, 3, 3}};
  EXPECT_TRUE(testing::throws_error_with([&] { (void)layer.output_shape(small); },
                                         {"max_pool2d", "input (1, 1, 3, 3)", "smaller than the kernel 5"}));
  const std::vector<Shape> flat{Shape{1, 9}};
  EXPECT_TRUE(testing::throws_error_with([&] { (void)layer.output_shape(flat); }, {"max_pool2d", "(N, C, H, W)", "found (1, 9)"}));
}

}  // namespace
}  // namespace ember
