#include "layers/conv2d.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <random>
#include <span>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/aligned_buffer.h"
#include "engine/blocked_layout.h"
#include "engine/error.h"
#include "layers/dnnl_util.h"
#include "support/layer_harness.h"
#include "support/expect_error.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

// PyTorch's nn.Conv2d, written out, in double.
std::vector<double> conv2d_reference(const Conv2dOptions& o, const Shape& in, const std::vector<float>& x,
                                     const std::vector<float>& weight, const std::vector<float>* bias, const Shape& out) {
  const std::int64_t N = in[0], C = in[1], H = in[2], W = in[3], K = out[1], P = out[2], Q = out[3];
  std::vector<double> y(static_cast<std::size_t>(out.elements()));
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t k = 0; k < K; ++k)
      for (std::int64_t p = 0; p < P; ++p)
        for (std::int64_t q = 0; q < Q; ++q) {
          double sum = bias != nullptr ? (*bias)[static_cast<std::size_t>(k)] : 0.0;
          for (std::int64_t c = 0; c < C; ++c)
            for (std::int64_t r = 0; r < o.kernel[0]; ++r)
              for (std::int64_t s = 0; s < o.kernel[1]; ++s) {
                const std::int64_t h = p * o.stride[0] - o.padding[0] + r * o.dilation[0];
                const std::int64_t w = q * o.stride[1] - o.padding[1] + s * o.dilation[1];
                if (h < 0 || h >= H || w < 0 || w >= W) continue;
                sum += static_cast<double>(x[static_cast<std::size_t>(((n * C + c) * H + h) * W + w)]) *
                       weight[static_cast<std::size_t>(((k * C + c) * o.kernel[0] + r) * o.kernel[1] + s)];
              }
          y[static_cast<std::size_t>(((n * K + k) * P + p) * Q + q)] = sum;
        }
  return y;
}

struct ConvCase {
  const char* name;
  Conv2dOptions options;
  Shape input;
  std::optional<dnnl::memory::format_tag> layout = std::nullopt;  // the input's, when not plain
};

Conv2dOptions conv(std::int64_t in, std::int64_t out, std::int64_t kh, std::int64_t kw, std::int64_t stride,
                   std::int64_t pad_h, std::int64_t pad_w, std::int64_t dilation, bool bias) {
  Conv2dOptions o;
  o.in_channels = in;
  o.out_channels = out;
  o.kernel = {kh, kw};
  o.stride = {stride, stride};
  o.padding = {pad_h, pad_w};
  o.dilation = {dilation, dilation};
  o.bias = bias;
  return o;
}

class Conv2dTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dTest, ForwardMatchesTheReference) {
  const ConvCase& c = GetParam();
  const Conv2d layer(c.options);
  LayerHarness harness(layer, {HarnessInput{c.input, c.layout}});
  const std::vector<float> y = harness.forward();
  const std::vector<float>* bias = c.options.bias ? &harness.params[1] : nullptr;
  testing::expect_close(y, conv2d_reference(c.options, c.input, harness.inputs[0], harness.params[0], bias, harness.output_shape()),
                        1e-5, "conv2d output");
}

TEST_P(Conv2dTest, GradientsMatchFiniteDifferences) {
  const ConvCase& c = GetParam();
  const Conv2d layer(c.options);
  LayerHarness harness(layer, {HarnessInput{c.input, c.layout}});
  testing::expect_gradients_match_finite_differences(harness);
}

TEST_P(Conv2dTest, ParameterGradientsAccumulate) {
  const ConvCase& c = GetParam();
  const Conv2d layer(c.options);
  LayerHarness harness(layer, {HarnessInput{c.input, c.layout}});
  testing::expect_parameter_gradients_accumulate(harness);
}

// Inference with a fused ReLU (PrepareContext::fused_activation): the ReLU the step program removed runs as a
// oneDNN post-op, so the output is max(0, conv).
TEST_P(Conv2dTest, FusedReluGivesTheRectifiedReference) {
  const ConvCase& c = GetParam();
  const Conv2d layer(c.options);
  LayerHarness harness(layer, {HarnessInput{c.input, c.layout}}, Mode::inference, 1, FusedActivation::relu);
  const std::vector<float> y = harness.forward();
  const std::vector<float>* bias = c.options.bias ? &harness.params[1] : nullptr;
  std::vector<double> reference = conv2d_reference(c.options, c.input, harness.inputs[0], harness.params[0], bias, harness.output_shape());
  const auto negatives = std::count_if(reference.begin(), reference.end(), [](double r) { return r < 0.0; });
  ASSERT_GT(negatives, 0) << "the case must have negative pre-activations, or it cannot tell a fused ReLU from none";
  for (double& r : reference) r = std::max(0.0, r);
  testing::expect_close(y, reference, 1e-5, "conv2d + ReLU output");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Conv2dTest,
    ::testing::Values(ConvCase{"seed_cnn_first_layer", conv(1, 32, 3, 3, 1, 1, 1, 1, true), Shape{2, 1, 28, 28}},
                      ConvCase{"batch1_odd_sizes", conv(3, 5, 3, 3, 1, 1, 1, 1, true), Shape{1, 3, 7, 5}},
                      ConvCase{"channels_not_multiple_of_16", conv(17, 19, 3, 3, 1, 0, 0, 1, true), Shape{2, 17, 6, 6}},
                      ConvCase{"stride_and_asymmetric_padding", conv(4, 6, 5, 3, 2, 2, 1, 1, true), Shape{3, 4, 9, 8}},
                      ConvCase{"dilation_no_bias", conv(2, 3, 3, 3, 1, 2, 2, 2, false), Shape{2, 2, 7, 7}},
                      ConvCase{"one_by_one", conv(16, 32, 1, 1, 1, 0, 0, 1, true), Shape{2, 16, 4, 3}},
                      // Shapes and the blocked input oneDNN has Winograd kernels for
                      // (avx512_core: 3x3, stride 1, channels multiples of 16), which
                      // training then runs in every pass.
                      ConvCase{"winograd_16_to_16", conv(16, 16, 3, 3, 1, 1, 1, 1, true), Shape{2, 16, 9, 7},
                               dnnl::memory::format_tag::nChw16c},
                      ConvCase{"winograd_32_to_16_no_bias", conv(32, 16, 3, 3, 1, 1, 1, 1, false), Shape{3, 32, 6, 6},
                               dnnl::memory::format_tag::nChw16c}),
    [](const ::testing::TestParamInfo<ConvCase>& info) { return std::string(info.param.name); });

// 2x2, stride-2 max pool of (N, C, H, W), floor (PyTorch's MaxPool2d(2)).
std::vector<double> max_pool_2x2(const std::vector<double>& y, const Shape& shape) {
  const std::int64_t rows = shape[0] * shape[1], H = shape[2], W = shape[3];
  std::vector<double> pooled;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t p = 0; p + 1 < H; p += 2)
      for (std::int64_t q = 0; q + 1 < W; q += 2) {
        const auto at = [&](std::int64_t h, std::int64_t w) { return y[static_cast<std::size_t>((r * H + h) * W + w)]; };
        pooled.push_back(std::max(std::max(at(p, q), at(p, q + 1)), std::max(at(p + 1, q), at(p + 1, q + 1))));
      }
  return pooled;
}

struct DirectCase {
  const char* name;
  Conv2dOptions options;
  Shape input;
};

// Inference of a conv with few channels runs simd's direct kernel (plain NCHW output),
// with PrepareContext's fusions: conv, max(0, conv), and the 2x2 max pool of either; with
// 16 or more output channels only when the pool is fused (else oneDNN's blocked output).
TEST(Conv2d, InferenceWithFewChannelsMatchesTheReferenceWithEveryFusion) {
  const DirectCase cases[] = {{"lenet_conv1", conv(1, 6, 5, 5, 1, 0, 0, 1, true), Shape{2, 1, 32, 32}},
                              {"odd_sizes_padded", conv(3, 5, 3, 3, 1, 1, 1, 1, true), Shape{1, 3, 7, 9}},
                              {"no_bias_wide_kernel", conv(4, 9, 2, 5, 1, 1, 2, 1, false), Shape{3, 4, 6, 19}},
                              {"seed_cnn_conv1", conv(1, 32, 3, 3, 1, 1, 1, 1, true), Shape{2, 1, 28, 28}}};
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  for (const DirectCase& c : cases) {
    const Conv2d layer(c.options);
    EXPECT_TRUE(layer.fuses_following_max_pool()) << c.name;
    std::mt19937 random(7);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    auto fill = [&](std::int64_t n) {
      std::vector<float> v(static_cast<std::size_t>(n));
      for (float& x : v) x = uniform(random);
      return v;
    };
    const Shape out_shape = layer.output_shape(std::span<const Shape>(&c.input, 1));
    std::vector<float> x = fill(c.input.elements()), w = fill(c.options.out_channels * c.options.in_channels * c.options.kernel[0] * c.options.kernel[1]),
                       b = fill(c.options.out_channels);
    const std::vector<double> conv_y = conv2d_reference(c.options, c.input, x, w, c.options.bias ? &b : nullptr, out_shape);
    for (bool relu : {false, true}) {
      for (bool pool : {false, true}) {
        const ValueInfo input{c.input, nullptr};
        PrepareContext context;
        context.inputs = std::span<const ValueInfo>(&input, 1);
        context.engine = &engine;
        context.fused_activation = relu ? FusedActivation::relu : FusedActivation::none;
        context.fuse_max_pool = pool;
        const auto prepared = layer.prepare(context);
        if (c.options.out_channels >= 16 && !pool) {
          EXPECT_NE(prepared->output.blocked, nullptr) << c.name << ": oneDNN without the pool";
          continue;
        }
        ASSERT_EQ(prepared->output.blocked, nullptr) << c.name << ": the direct kernel writes plain NCHW";
        std::vector<double> expected = conv_y;
        if (relu) for (double& e : expected) e = std::max(0.0, e);
        if (pool) expected = max_pool_2x2(expected, out_shape);
        ASSERT_EQ(static_cast<std::size_t>(prepared->output.shape.elements()), expected.size()) << c.name;
        std::vector<float> y(expected.size(), std::numeric_limits<float>::quiet_NaN());
        AlignedBuffer scratch(prepared->forward_scratch_bytes);
        const Tensor inputs[] = {Tensor{x.data(), c.input, nullptr}};
        const Shape w_shape{c.options.out_channels, c.options.in_channels, c.options.kernel[0], c.options.kernel[1]};
        const Tensor params[] = {Tensor{w.data(), w_shape, nullptr}, Tensor{b.data(), Shape{c.options.out_channels}, nullptr}};
        ForwardArgs args;
        args.inputs = inputs;
        args.output = Tensor{y.data(), prepared->output.shape, nullptr};
        args.params = std::span<const Tensor>(params, c.options.bias ? 2 : 1);
        args.scratch = scratch.data();
        args.stream = &stream;
        prepared->forward(args);
        testing::expect_close(y, expected, 1e-5, std::string(c.name) + (relu ? " relu" : "") + (pool ? " pool" : ""));
      }
    }
  }
}

TEST(Conv2d, MaxPoolFusionOnlyWhereTheDirectKernelRuns) {
  // 16 or more output channels: the direct kernel only with the pool fused (the seed CNN's conv1).
  EXPECT_TRUE(Conv2d(conv(1, 32, 3, 3, 1, 1, 1, 1, true)).fuses_following_max_pool());
  EXPECT_FALSE(Conv2d(conv(5, 6, 3, 3, 1, 1, 1, 1, true)).fuses_following_max_pool()) << "more than 4 input channels";
  EXPECT_FALSE(Conv2d(conv(1, 6, 3, 3, 2, 1, 1, 1, true)).fuses_following_max_pool()) << "stride 2";
  EXPECT_FALSE(Conv2d(conv(1, 6, 3, 3, 1, 1, 1, 2, true)).fuses_following_max_pool()) << "dilation 2";
  const Conv2d layer(conv(1, 6, 3, 3, 1, 1, 1, 1, true));
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  const ValueInfo input{Shape{2, 1, 6, 6}, nullptr};
  const char needs_grad = 1;
  PrepareContext context;
  context.mode = Mode::training;
  context.inputs = std::span<const ValueInfo>(&input, 1);
  context.input_needs_grad = std::span<const char>(&needs_grad, 1);
  context.engine = &engine;
  context.fuse_max_pool = true;
  try {
    (void)layer.prepare(context);
    ADD_FAILURE() << "fuse_max_pool was accepted in training for an input that needs a gradient";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in training only where the input needs no gradient"), std::string::npos) << e.what();
  }
}

// Inference as a session runs it: prepare, then prepare_constants once (the weights in the
// layout of the constants' primitive), then forward with ForwardArgs::constants. Returns
// the output in plain order.
std::vector<float> session_forward(const Conv2d& layer, const Conv2dOptions& o, const Shape& in, const std::vector<float>& x,
                                   const std::vector<float>& w, const std::vector<float>& b, bool with_constants) {
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  auto reorder = [&](const dnnl::memory::desc& from_desc, const void* from, const dnnl::memory::desc& to_desc, void* to) {
    const dnnl::reorder primitive(dnnl::reorder::primitive_desc(engine, from_desc, engine, to_desc));
    dnnl_util::PrimitiveArguments(engine, "test reorder").add(DNNL_ARG_FROM, from_desc, from).add(DNNL_ARG_TO, to_desc, to).execute(primitive, stream);
    stream.wait();
  };
  // As in the models: the input in nChw16c, the layout the conv before it writes.
  const dnnl::memory::desc blocked_desc(dnnl_util::dims_of(in), dnnl::memory::data_type::f32, dnnl::memory::format_tag::nChw16c);
  const ValueInfo input{in, make_blocked_layout(blocked_desc)};
  AlignedBuffer blocked_x(blocked_desc.get_size());
  reorder(dnnl_util::plain_desc(in), x.data(), blocked_desc, blocked_x.data());
  PrepareContext context;
  context.inputs = std::span<const ValueInfo>(&input, 1);
  context.engine = &engine;
  const auto prepared = layer.prepare(context);
  const Shape w_shape{o.out_channels, o.in_channels, o.kernel[0], o.kernel[1]};
  const Tensor params[] = {Tensor{const_cast<float*>(w.data()), w_shape, nullptr},
                           Tensor{const_cast<float*>(b.data()), Shape{o.out_channels}, nullptr}};
  AlignedBuffer constants(prepared->constant_bytes);
  if (with_constants) {
    EXPECT_GT(prepared->constant_bytes, 0u) << "oneDNN's layouts are blocked here: there are weights to reorder once";
    prepared->prepare_constants(ConstantArgs{std::span<const Tensor>(params, 2), constants.data(), &stream});
  }
  AlignedBuffer output(prepared->output.bytes()), scratch(prepared->forward_scratch_bytes);
  const Tensor inputs[] = {Tensor{reinterpret_cast<float*>(blocked_x.data()), in, input.blocked.get()}};
  ForwardArgs args;
  args.inputs = inputs;
  args.output = Tensor{reinterpret_cast<float*>(output.data()), prepared->output.shape, prepared->output.blocked.get()};
  args.params = std::span<const Tensor>(params, 2);
  args.scratch = scratch.data();
  args.stream = &stream;
  args.constants = with_constants ? constants.data() : nullptr;
  prepared->forward(args);
  stream.wait();
  std::vector<float> plain(static_cast<std::size_t>(prepared->output.shape.elements()));
  if (!prepared->output.blocked) {
    std::memcpy(plain.data(), output.data(), plain.size() * sizeof(float));
    return plain;
  }
  reorder(prepared->output.blocked->desc, output.data(), dnnl_util::plain_desc(prepared->output.shape), plain.data());
  return plain;
}

// A session's conv reorders its weights once (constants) and may run oneDNN's Winograd
// F(4x4, 3x3) on them (avx512_core: 3x3, stride 1, channels multiples of 16: attn-cnn's
// conv2 and conv3), which rounds differently from the direct conv the executor runs.
// Measured on Zen 4 (random inputs and weights in [-1, 1], 288 terms per output): largest
// error against the double reference 3.4e-5 with Winograd, 1.3e-6 of the largest output
// (direct: 9.7e-6, 3.7e-7). The bound is 1e-5 of the largest output; each call must give
// the same bits.
TEST(Conv2d, SessionConstantsAndWinogradMatchTheReference) {
  const DirectCase cases[] = {{"attn_cnn_conv2", conv(32, 32, 3, 3, 1, 1, 1, 1, true), Shape{16, 32, 28, 28}},
                              {"attn_cnn_conv3", conv(32, 64, 3, 3, 1, 1, 1, 1, true), Shape{3, 32, 14, 14}},
                              {"lenet_conv2", conv(6, 16, 5, 5, 1, 0, 0, 1, true), Shape{2, 6, 14, 14}}};
  for (const DirectCase& c : cases) {
    const Conv2d layer(c.options);
    std::mt19937 random(3);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    auto fill = [&](std::int64_t n) {
      std::vector<float> v(static_cast<std::size_t>(n));
      for (float& e : v) e = uniform(random);
      return v;
    };
    const std::vector<float> x = fill(c.input.elements()),
                             w = fill(c.options.out_channels * c.options.in_channels * c.options.kernel[0] * c.options.kernel[1]),
                             b = fill(c.options.out_channels);
    const Shape out_shape = layer.output_shape(std::span<const Shape>(&c.input, 1));
    const std::vector<double> reference = conv2d_reference(c.options, c.input, x, w, &b, out_shape);
    double largest = 0.0;
    for (double r : reference) largest = std::max(largest, std::abs(r));
    for (bool with_constants : {false, true}) {
      const std::vector<float> y = session_forward(layer, c.options, c.input, x, w, b, with_constants);
      ASSERT_EQ(y.size(), reference.size());
      double worst = 0.0;
      for (std::size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::abs(y[i] - reference[i]));
      std::printf("%s %s: largest error %.3g, %.3g of the largest output\n", c.name, with_constants ? "constants" : "per-call reorder",
                  worst, worst / largest);
      EXPECT_LT(worst, 1e-5 * largest) << c.name << (with_constants ? " with constants" : "");
      EXPECT_EQ(y, session_forward(layer, c.options, c.input, x, w, b, with_constants)) << c.name << ": not deterministic";
    }
  }
}

// Training takes oneDNN's Winograd kernels where it has them (avx512_core): its forward
// then rounds differently from the direct per-call session path, while on an instruction
// set without them both are the same direct kernel and agree bitwise. (The gradient and
// reference checks of the winograd_* cases above hold either way.)
TEST(Conv2d, TrainingRunsWinogradWhereOneDnnHasIt) {
  const Conv2dOptions o = conv(32, 32, 3, 3, 1, 1, 1, 1, true);
  const Shape in{2, 32, 12, 12};
  const Conv2d layer(o);
  LayerHarness harness(layer, {HarnessInput{in, dnnl::memory::format_tag::nChw16c}});
  const std::vector<float> trained = harness.forward();
  const std::vector<float> direct = session_forward(layer, o, in, harness.inputs[0], harness.params[0], harness.params[1], false);
  const bool has_winograd = dnnl::get_effective_cpu_isa() >= dnnl::cpu_isa::avx512_core;
  EXPECT_EQ(trained != direct, has_winograd) << "oneDNN's instruction set: " << static_cast<int>(dnnl::get_effective_cpu_isa());
}

TEST(Conv2d, NoGradientForAnInputThatNeedsNone) {
  const Conv2d layer(conv(1, 8, 3, 3, 1, 1, 1, 1, true));
  LayerHarness harness(layer, {HarnessInput{Shape{2, 1, 6, 6}, std::nullopt, false}});
  // Backward-data would write the (absent) input gradient; weights must still be right.
  testing::expect_gradients_match_finite_differences(harness);
}

TEST(Conv2d, TakesABlockedInput) {
  const Conv2dOptions o = conv(16, 8, 3, 3, 1, 1, 1, 1, true);
  const Conv2d layer(o);
  LayerHarness harness(layer, {HarnessInput{Shape{2, 16, 5, 5}, dnnl::memory::format_tag::nChw16c}});
  const std::vector<float> y = harness.forward();
  testing::expect_close(y, conv2d_reference(o, Shape{2, 16, 5, 5}, harness.inputs[0], harness.params[0], &harness.params[1], harness.output_shape()),
                        1e-5, "conv2d output");
  testing::expect_gradients_match_finite_differences(harness);
}

// LeNet's second convolution: 6 channels arrive in nChw8c (padded to 8), a layout oneDNN
// 2.6 has only its reference loop for on AVX2. The layer reorders the input into the layout
// of a fast kernel and the input gradient back; the results must not change.
TEST(Conv2d, TakesAPaddedBlockedInputThatNeedsAReorder) {
  const Conv2dOptions o = conv(6, 16, 5, 5, 1, 0, 0, 1, true);
  const Conv2d layer(o);
  LayerHarness harness(layer, {HarnessInput{Shape{3, 6, 14, 14}, dnnl::memory::format_tag::nChw8c}});
  const std::vector<float> y = harness.forward();
  testing::expect_close(y, conv2d_reference(o, Shape{3, 6, 14, 14}, harness.inputs[0], harness.params[0], &harness.params[1], harness.output_shape()),
                        1e-5, "conv2d output");
  testing::expect_gradients_match_finite_differences(harness);
  testing::expect_parameter_gradients_accumulate(harness);
}

TEST(Conv2d, FusedReluIsRefusedInTraining) {
  const Conv2d layer(conv(1, 8, 3, 3, 1, 1, 1, 1, true));
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  const ValueInfo input{Shape{2, 1, 6, 6}, nullptr};
  const char needs_grad = 1;
  PrepareContext context;
  context.mode = Mode::training;
  context.inputs = std::span<const ValueInfo>(&input, 1);
  context.input_needs_grad = std::span<const char>(&needs_grad, 1);
  context.engine = &engine;
  context.fused_activation = FusedActivation::relu;
  EXPECT_TRUE(layer.fuses_following(FusedActivation::relu));
  try {
    (void)layer.prepare(context);
    ADD_FAILURE() << "a fused ReLU was accepted in training";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv2d"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("inference only"), std::string::npos) << e.what();
  }
}

TEST(Conv2d, WrongInputShapeIsNamed) {
  const Conv2d layer(conv(3, 4, 3, 3, 1, 0, 0, 1, true));
  const std::vector<Shape> wrong_channels{Shape{1, 2, 8, 8}};
  EXPECT_TRUE(testing::throws_error_with([&] { (void)layer.output_shape(wrong_channels); },
                                         {"conv2d", "(N, 3, H, W)", "in_channels 3, found 2", "found (1, 2, 8, 8)"}));
  const std::vector<Shape> wrong_rank{Shape{3, 8, 8}};
  EXPECT_TRUE(testing::throws_error_with([&] { (void)layer.output_shape(wrong_rank); }, {"conv2d", "(N, 3, H, W)", "found (3, 8, 8)"}));
  const std::vector<Shape> too_small{Shape{1, 3, 2, 2}};
  EXPECT_TRUE(testing::throws_error_with([&] { (void)layer.output_shape(too_small); },
                                         {"conv2d", "input (1, 3, 2, 2)", "smaller than the dilated kernel (3"}));
}

}  // namespace
}  // namespace ember
