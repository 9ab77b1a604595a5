#include "layers/conv2d.h"

#include <algorithm>
#include <optional>
#include <string>

#include "engine/checked.h"
#include "engine/error.h"
#include "layers/conv2d_direct.h"
#include "layers/dnnl_util.h"
#include "layers/options.h"
#include "layers/window.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

using dnnl::memory;
using namespace dnnl_util;

// oneDNN's reference implementations are correctness fallbacks: plain loops.
template <class PrimitiveDesc>
bool is_reference(const PrimitiveDesc& pd) {
  return std::string(pd.impl_info_str()).rfind("ref", 0) == 0;
}

// oneDNN's Winograd F(4x4, 3x3) primitive for an inference conv (avx512_core: 3x3,
// stride 1, channel counts multiples of 16), when oneDNN has one that reads the direct
// primitive's input and writes its output layout; else nothing. Its weights are in a
// layout of their own, so it runs only where a session reordered them once (constants):
// the reorder costs about as much as the conv. Measured on Zen 4, batch 16, weights
// hoisted: attn-cnn's 32->32 3x3 28x28 conv 1.3 ms vs 2.0 direct, 32->64 14x14 0.7 vs 0.93.
std::optional<dnnl::convolution_forward::primitive_desc> winograd_forward(const dnnl::convolution_forward::desc& desc,
                                                                          const dnnl::primitive_attr& attr, const dnnl::engine& engine,
                                                                          const dnnl::convolution_forward::primitive_desc& direct) {
  try {
    dnnl::convolution_forward::primitive_desc pd(desc, attr, engine);
    if (is_reference(pd) || pd.src_desc() != direct.src_desc() || pd.dst_desc() != direct.dst_desc() ||
        pd.bias_desc() != direct.bias_desc()) {
      return std::nullopt;
    }
    return pd;
  } catch (const dnnl::error&) {  // unimplemented: no Winograd kernel for this shape or machine
    return std::nullopt;
  }
}

// The same Winograd kernels for a training conv, when oneDNN has them for every pass it
// runs (forward, backward weights and, if wanted, backward data), each reading and writing
// the direct primitives' activation layouts; else nothing. Training reorders the weights
// each call anyway, so the Winograd layout costs nothing extra there. Measured on Zen 4,
// one thread, batch 16, attn-cnn's 32->32 3x3 at 28x28: forward 0.90 vs 2.04 ms, backward
// data 0.93 vs 2.03, backward weights 1.00 vs 2.06. The sums are formed differently, so
// outputs differ from direct's by about 1e-6 relative (an instruction set without these
// kernels keeps the direct ones).
std::optional<dnnl::convolution_forward::primitive_desc> winograd_training(const dnnl::convolution_forward::desc& forward,
                                                                           const dnnl::primitive_attr& attr, const dnnl::engine& engine,
                                                                           const dnnl::convolution_forward::primitive_desc& direct,
                                                                           bool input_grad) {
  auto pd = winograd_forward(forward, attr, engine, direct);
  if (!pd) return std::nullopt;
  try {
    const auto& d = forward.data;
    const memory::desc weights_any(memory::dims(d.weights_desc.dims, d.weights_desc.dims + d.weights_desc.ndims),
                                   memory::data_type::f32, memory::format_tag::any);
    const memory::dims strides(d.strides, d.strides + 2), dilates(d.dilates, d.dilates + 2);
    const memory::dims padding_left(d.padding[0], d.padding[0] + 2), padding_right(d.padding[1], d.padding[1] + 2);
    const auto alg = dnnl::algorithm::convolution_winograd;
    const auto weights_desc =
        d.bias_desc.ndims != 0
            ? dnnl::convolution_backward_weights::desc(alg, direct.src_desc(), weights_any, direct.bias_desc(), direct.dst_desc(),
                                                       strides, dilates, padding_left, padding_right)
            : dnnl::convolution_backward_weights::desc(alg, direct.src_desc(), weights_any, direct.dst_desc(), strides, dilates,
                                                       padding_left, padding_right);
    const dnnl::convolution_backward_weights::primitive_desc weights_pd(weights_desc, attr, engine, *pd);
    if (is_reference(weights_pd) || weights_pd.diff_dst_desc() != direct.dst_desc()) return std::nullopt;
    if (input_grad) {
      const dnnl::convolution_backward_data::desc data_desc(alg, direct.src_desc(), weights_any, direct.dst_desc(), strides,
                                                            dilates, padding_left, padding_right);
      const dnnl::convolution_backward_data::primitive_desc data_pd(data_desc, attr, engine, *pd);
      if (is_reference(data_pd) || data_pd.diff_dst_desc() != direct.dst_desc() || data_pd.diff_src_desc() != direct.src_desc()) {
        return std::nullopt;
      }
    }
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
  return pd;
}

// The direct kernel's domain: few input channels, stride 1, no dilation. Measured on Zen 4
// at batch 16 against oneDNN 2.6's avx512_core kernel: 1->6 channels 5x5 (lenet's conv1)
// 0.056 ms vs 0.106 ms, but 1->32 channels 3x3 (attn-cnn's conv1) 0.139 ms vs 0.094 ms:
// once the output channels fill oneDNN's 16-channel vectors, oneDNN's conv alone is
// faster. With a 2x2 max pool after it, the direct kernel pools in registers and writes
// plain NCHW, where oneDNN adds a pooling primitive and a reorder for the next layer, and
// each primitive's per-call overhead: the seed CNN's conv1 (1->32 3x3 28x28, ReLU, pool)
// in a session, 1 thread, 0.020 -> 0.016 ms at batch 1 and ~3% less at batch 16.
bool direct_kernel_options_fit(const Conv2dOptions& o) {
  constexpr std::int64_t most_in_channels = 4;
  return o.in_channels <= most_in_channels && o.stride[0] == 1 && o.stride[1] == 1 && o.dilation[0] == 1 &&
         o.dilation[1] == 1;
}

// Training runs it only fused with the pool, for an input that needs no gradient (the
// kernel has no input gradient): measured on Zen 4, the seed CNN's conv1 + pool1 (with
// pool1's ReLU moved after it, engine/training_graph.h) in a training step at batch 64, see
// docs/architecture.md.
bool direct_kernel_fits(const Conv2dOptions& o, const PrepareContext& context) {
  constexpr std::int64_t fewer_out_channels_than = 16;
  const bool plain_input = !context.inputs[0].blocked && direct_kernel_options_fit(o);
  if (context.mode == Mode::training) {
    const bool input_grad = !context.input_needs_grad.empty() && context.input_needs_grad[0] != 0;
    return plain_input && context.fuse_max_pool && !input_grad;
  }
  return plain_input && (o.out_channels < fewer_out_channels_than || context.fuse_max_pool);
}

class PreparedConv2d final : public PreparedLayer {
 public:
  void forward(const ForwardArgs& args) const override {
    std::byte* scratch = args.scratch;
    if (args.constants != nullptr) {
      forward_with_constants(args);
      return;
    }
    const void* weights = args.params[0].data;
    if (forward_weights_reorder_) {
      std::byte* reordered = scratch + forward_weights_offset_;
      reorder(forward_weights_reorder_, "conv2d forward weights reorder", weights_plain_, weights, forward_weights_, reordered, *args.stream);
      weights = reordered;
    }
    const void* input = args.inputs[0].data;
    if (input_reorder_) input = reorder_input(input, scratch + forward_input_offset_, *args.stream);
    PrimitiveArguments arguments(engine_, "conv2d forward");
    arguments.add(DNNL_ARG_SRC, conv_source_, input)
        .add(DNNL_ARG_WEIGHTS, forward_weights_, weights)
        .add(DNNL_ARG_DST, output_, args.output.data)
        .add(DNNL_ARG_SCRATCHPAD, forward_scratchpad_, scratch + forward_scratchpad_offset_);
    if (bias_) arguments.add(DNNL_ARG_BIAS, bias_desc_, args.params[1].data);
    arguments.execute(forward_, *args.stream);
  }

  void backward(const BackwardArgs& args) const override {
    std::byte* scratch = args.scratch;
    dnnl::stream& stream = *args.stream;
    const bool accumulate = args.accumulate_param_grads;
    std::byte* scratchpad = scratch + backward_scratchpad_offset_;  // shared by the two primitives, one after the other

    // Weight and bias gradients: straight into the gradient block when the layout is
    // PyTorch's and nothing is accumulated, else via scratch.
    const bool weights_direct = !weights_grad_reorder_ && !accumulate;
    float* weights_grad = weights_direct ? args.param_grads[0].data
                                         : reinterpret_cast<float*>(scratch + weights_grad_offset_);
    float* bias_grad = !bias_ ? nullptr
                       : accumulate ? reinterpret_cast<float*>(scratch + bias_grad_offset_)
                                    : args.param_grads[1].data;
    const void* weights_output_grad = args.output_grad.data;
    if (output_grad_reorder_) {
      std::byte* reordered = scratch + output_grad_offset_;
      reorder(output_grad_reorder_, "conv2d output gradient reorder", output_, args.output_grad.data, weights_output_grad_, reordered, stream);
      weights_output_grad = reordered;
    }
    const void* input = args.inputs[0].data;
    if (input_reorder_) input = reorder_input(input, scratch + backward_input_offset_, stream);
    PrimitiveArguments weight_arguments(engine_, "conv2d backward weights");
    weight_arguments.add(DNNL_ARG_SRC, conv_source_, input)
        .add(DNNL_ARG_DIFF_DST, weights_output_grad_, weights_output_grad)
        .add(DNNL_ARG_DIFF_WEIGHTS, weights_grad_, weights_grad)
        .add(DNNL_ARG_SCRATCHPAD, weights_scratchpad_, scratchpad);
    if (bias_) weight_arguments.add(DNNL_ARG_DIFF_BIAS, bias_desc_, bias_grad);
    weight_arguments.execute(backward_weights_, stream);

    const auto& add = simd::elementwise_kernels().add;
    const std::int64_t weight_count = args.param_grads[0].elements();
    if (weights_grad_reorder_) {
      float* plain = accumulate ? reinterpret_cast<float*>(scratch + weights_plain_offset_) : args.param_grads[0].data;
      reorder(weights_grad_reorder_, "conv2d weight gradient reorder", weights_grad_, weights_grad, weights_plain_, plain, stream);
      if (accumulate) add(args.param_grads[0].data, args.param_grads[0].data, plain, weight_count);
    } else if (accumulate) {
      add(args.param_grads[0].data, args.param_grads[0].data, weights_grad, weight_count);
    }
    if (bias_ && accumulate) add(args.param_grads[1].data, args.param_grads[1].data, bias_grad, args.param_grads[1].elements());

    if (args.input_grads[0].data == nullptr) return;
    const void* weights = args.params[0].data;
    if (data_weights_reorder_) {
      std::byte* reordered = scratch + data_weights_offset_;
      reorder(data_weights_reorder_, "conv2d backward data weights reorder", weights_plain_, weights, data_weights_, reordered, stream);
      weights = reordered;
    }
    const void* data_output_grad = args.output_grad.data;
    if (data_output_grad_reorder_) {
      std::byte* reordered = scratch + data_output_grad_offset_;
      reorder(data_output_grad_reorder_, "conv2d backward data output gradient reorder", output_, args.output_grad.data, data_output_grad_, reordered, stream);
      data_output_grad = reordered;
    }
    // When backward-data works in another layout than the input's, its gradient comes out
    // in scratch and is reordered into the input's layout.
    std::byte* input_grad = input_grad_reorder_ ? scratch + input_grad_offset_ : reinterpret_cast<std::byte*>(args.input_grads[0].data);
    PrimitiveArguments(engine_, "conv2d backward data")
        .add(DNNL_ARG_DIFF_DST, data_output_grad_, data_output_grad)
        .add(DNNL_ARG_WEIGHTS, data_weights_, weights)
        .add(DNNL_ARG_DIFF_SRC, data_source_, input_grad)
        .add(DNNL_ARG_SCRATCHPAD, data_scratchpad_, scratchpad)
        .execute(backward_data_, stream);
    if (input_grad_reorder_) {
      reorder(input_grad_reorder_, "conv2d input gradient reorder", data_source_, input_grad, source_, args.input_grads[0].data, stream);
    }
  }

  // A session's inference: the weights were reordered once, by prepare_constants, for the
  // constants' primitive (Winograd where it pays, else the direct one).
  void forward_with_constants(const ForwardArgs& args) const {
    const void* input = args.inputs[0].data;
    if (input_reorder_) input = reorder_input(input, args.scratch + forward_input_offset_, *args.stream);
    PrimitiveArguments arguments(engine_, "conv2d forward");
    arguments.add(DNNL_ARG_SRC, conv_source_, input)
        .add(DNNL_ARG_WEIGHTS, constant_weights_, args.constants)
        .add(DNNL_ARG_DST, output_, args.output.data)
        .add(DNNL_ARG_SCRATCHPAD, constant_scratchpad_, args.scratch + forward_scratchpad_offset_);
    if (bias_) arguments.add(DNNL_ARG_BIAS, bias_desc_, args.params[1].data);
    arguments.execute(constant_forward_, *args.stream);
  }

  std::string constants_key() const override {
    // The layout's bytes: equal layouts (any micro-batch size) share one copy.
    const auto* bytes = reinterpret_cast<const unsigned char*>(&constant_weights_.data);
    std::string key = "conv2d weights ";
    for (std::size_t i = 0; i < sizeof(constant_weights_.data); ++i) {
      key += "0123456789abcdef"[bytes[i] >> 4];
      key += "0123456789abcdef"[bytes[i] & 15];
    }
    return key;
  }

  void prepare_constants(const ConstantArgs& args) const override {
    reorder(constant_weights_reorder_, "conv2d constant weights reorder", weights_plain_, args.params[0].data, constant_weights_,
            args.constants, *args.stream);
  }

  const void* reorder_input(const void* input, std::byte* reordered, dnnl::stream& stream) const {
    reorder(input_reorder_, "conv2d input reorder", source_, input, conv_source_, reordered, stream);
    return reordered;
  }

  // Every layout change of this layer: one reorder primitive from `from` to `to`.
  void reorder(const dnnl::reorder& primitive, const char* what, const memory::desc& from_desc, const void* from,
               const memory::desc& to_desc, void* to, dnnl::stream& stream) const {
    PrimitiveArguments(engine_, what).add(DNNL_ARG_FROM, from_desc, from).add(DNNL_ARG_TO, to_desc, to).execute(primitive, stream);
  }

  dnnl::engine engine_;
  bool bias_ = true;
  memory::desc source_, weights_plain_, bias_desc_;
  // The input layout the primitives take: source_, unless oneDNN has only its reference
  // loop for source_ (e.g. 6 channels padded to nChw8c on AVX2) and a fast kernel for
  // another layout; then the input is reordered in and its gradient out.
  memory::desc conv_source_;
  dnnl::reorder input_reorder_;
  std::size_t forward_input_offset_ = 0, backward_input_offset_ = 0;
  // Backward-data's gradient layouts, when its fast kernel wants others than the forward's.
  memory::desc data_source_, data_output_grad_;
  dnnl::reorder input_grad_reorder_, data_output_grad_reorder_;
  std::size_t input_grad_offset_ = 0, data_output_grad_offset_ = 0;
  // The layouts the primitives take, queried once in prepare(): primitive_desc's queries
  // build a std::vector on every call.
  memory::desc forward_weights_, output_, forward_scratchpad_;
  memory::desc weights_output_grad_, weights_grad_, weights_scratchpad_, data_weights_, data_scratchpad_;
  dnnl::convolution_forward::primitive_desc forward_pd_;
  dnnl::convolution_forward forward_;
  dnnl::reorder forward_weights_reorder_;
  std::size_t forward_weights_offset_ = 0, forward_scratchpad_offset_ = 0;
  // Inference: the primitive run when a session made the constants (constant_weights_).
  dnnl::convolution_forward constant_forward_;
  memory::desc constant_weights_, constant_scratchpad_;
  dnnl::reorder constant_weights_reorder_;

  dnnl::convolution_backward_weights::primitive_desc weights_pd_;
  dnnl::convolution_backward_weights backward_weights_;
  dnnl::reorder weights_grad_reorder_;
  dnnl::reorder output_grad_reorder_;  // forward's dst layout -> the one backward-weights reads
  std::size_t output_grad_offset_ = 0;
  dnnl::convolution_backward_data::primitive_desc data_pd_;
  dnnl::convolution_backward_data backward_data_;
  dnnl::reorder data_weights_reorder_;
  std::size_t weights_grad_offset_ = 0, weights_plain_offset_ = 0, bias_grad_offset_ = 0, data_weights_offset_ = 0,
              backward_scratchpad_offset_ = 0;
};

}  // namespace

Conv2d::Conv2d(const Conv2dOptions& options) : options_(options) {
  if (options.in_channels <= 0) throw_option_error("conv2d", "in_channels", "a positive integer", options.in_channels);
  if (options.out_channels <= 0) throw_option_error("conv2d", "out_channels", "a positive integer", options.out_channels);
  auto check_pair = [](const char* name, const std::array<std::int64_t, 2>& value, std::int64_t minimum) {
    if (value[0] < minimum || value[1] < minimum) {
      throw_option_error("conv2d", name, std::string(minimum > 0 ? "positive integers" : "non-negative integers"), pair_json(value));
    }
  };
  check_pair("kernel", options.kernel, 1);
  check_pair("stride", options.stride, 1);
  check_pair("padding", options.padding, 0);
  check_pair("dilation", options.dilation, 1);
}

std::unique_ptr<Layer> Conv2d::from_options(const Json& json) {
  const LayerOptions o("conv2d", json, {"in_channels", "out_channels", "kernel", "stride", "padding", "dilation", "bias"});
  Conv2dOptions options;
  options.in_channels = o.positive_integer("in_channels");
  options.out_channels = o.positive_integer("out_channels");
  options.kernel = o.pair("kernel", 1);
  options.stride = o.pair("stride", 1, {1, 1});
  options.padding = o.pair("padding", 0, {0, 0});
  options.dilation = o.pair("dilation", 1, {1, 1});
  options.bias = o.boolean("bias", true);
  return std::make_unique<Conv2d>(options);
}

bool Conv2d::fuses_following_max_pool() const { return direct_kernel_options_fit(options_); }

Json Conv2d::options() const {
  return Json{{"in_channels", options_.in_channels}, {"out_channels", options_.out_channels},
              {"kernel", pair_json(options_.kernel)},  {"stride", pair_json(options_.stride)},
              {"padding", pair_json(options_.padding)}, {"dilation", pair_json(options_.dilation)},
              {"bias", options_.bias}};
}

Shape Conv2d::output_shape(std::span<const Shape> inputs) const {
  const Shape& x = inputs[0];
  if (x.rank() != 4 || x[1] != options_.in_channels) {
    throw Error("conv2d expects input (N, " + std::to_string(options_.in_channels) + ", H, W), found " + x.str() +
                (x.rank() == 4 ? " (in_channels " + std::to_string(options_.in_channels) + ", found " + std::to_string(x[1]) + ")" : ""));
  }
  Shape y{x[0], options_.out_channels, 0, 0};
  for (int axis = 0; axis < 2; ++axis) {
    const auto a = static_cast<std::size_t>(axis);
    const std::int64_t size = sliding_window_output(x[2 + axis], options_.kernel[a], options_.stride[a], options_.padding[a],
                                                    options_.dilation[a], std::string("conv2d: ") + (axis == 0 ? "height" : "width"));
    if (size < 1) {
      throw Error("conv2d: input " + x.str() + " is smaller than the dilated kernel (" + std::to_string(options_.kernel[a]) +
                  ", dilation " + std::to_string(options_.dilation[a]) + ") after padding " +
                  std::to_string(options_.padding[a]));
    }
    y[2 + axis] = size;
  }
  return y;
}

std::vector<ParameterSpec> Conv2d::parameters(std::span<const Shape>) const {
  const std::int64_t fan_in = checked_multiply(checked_multiply(options_.in_channels, options_.kernel[0], "conv2d: fan-in"),
                                               options_.kernel[1], "conv2d: fan-in");
  std::vector<ParameterSpec> specs{{"weight",
                                    Shape{options_.out_channels, options_.in_channels, options_.kernel[0], options_.kernel[1]},
                                    Init::kaiming_uniform, fan_in}};
  if (options_.bias) specs.push_back({"bias", Shape{options_.out_channels}, Init::bias_uniform, fan_in});
  return specs;
}

namespace {

// The convolution's multiply-adds, twice (bias and a fused ReLU or pool left out):
// forward 2 N C_out C_in kH kW H_out W_out; backward the same for the weight gradient, and
// again for the input gradient when one is wanted.

// Training's fused pool: the weight gradient sums over the pooled outputs only (each
// window's winner), a quarter of the multiply-adds.
void state_flops(PreparedLayer& p, const Conv2dOptions& o, const Shape& out_shape, const PrepareContext& context) {
  const std::int64_t taps = o.in_channels * o.kernel[0] * o.kernel[1];
  const std::int64_t multiply_adds = out_shape.elements() * taps;
  p.forward_flops = 2 * multiply_adds;
  const bool input_grad = !context.input_needs_grad.empty() && context.input_needs_grad[0] != 0;
  p.backward_flops = (input_grad ? 4 : 2) * multiply_adds;
  if (context.mode == Mode::training && context.fuse_max_pool) p.backward_flops = 2 * p.output.shape.elements() * taps;
}

}  // namespace

std::unique_ptr<PreparedLayer> Conv2d::prepare(const PrepareContext& context) const {
  std::unique_ptr<PreparedLayer> p = prepare_layer(context);
  // The unpooled output: a fused max pool leaves the convolution's arithmetic as it was.
  state_flops(*p, options_, output_shape(std::span<const Shape>(&context.inputs[0].shape, 1)), context);
  return p;
}

std::unique_ptr<PreparedLayer> Conv2d::prepare_layer(const PrepareContext& context) const {
  const ValueInfo& input = context.inputs[0];
  const Shape out_shape = output_shape(std::span<const Shape>(&input.shape, 1));
  const bool training = context.mode == Mode::training;
  const bool fuse_relu = context.fused_activation == FusedActivation::relu;
  if (fuse_relu && training) {
    throw Error("conv2d: a following ReLU can be fused in inference only; training's backward needs the output before the ReLU");
  }
  const bool direct = direct_kernel_fits(options_, context);
  if (context.fuse_max_pool && !direct) {
    throw Error("conv2d: a following max pool can be fused only for a plain input, at most 4 input channels, stride 1 and no "
                "dilation, and in training only where the input needs no gradient (found " + options().dump() + ")");
  }
  if (direct) return prepare_direct_conv2d(options_, context);
  auto p = std::make_unique<PreparedConv2d>();
  p->engine_ = *context.engine;
  p->bias_ = options_.bias;
  p->source_ = input.blocked ? input.blocked->desc : plain_desc(input.shape);
  const memory::dims weight_dims{options_.out_channels, options_.in_channels, options_.kernel[0], options_.kernel[1]};
  p->weights_plain_ = memory::desc(weight_dims, memory::data_type::f32, memory::format_tag::oihw);
  p->bias_desc_ = memory::desc({options_.out_channels}, memory::data_type::f32, memory::format_tag::x);
  const memory::desc weights_any(weight_dims, memory::data_type::f32, memory::format_tag::any);
  const memory::desc output_any(dims_of(out_shape), memory::data_type::f32, memory::format_tag::any);
  const memory::dims strides{options_.stride[0], options_.stride[1]};
  const memory::dims dilates{options_.dilation[0] - 1, options_.dilation[1] - 1};  // oneDNN counts from 0
  const memory::dims padding_left{options_.padding[0], options_.padding[1]};
  memory::dims padding_right(2);
  for (std::size_t a = 0; a < 2; ++a) {
    // What makes oneDNN's size formula give PyTorch's floor: never negative.
    const std::int64_t extent = options_.dilation[a] * (options_.kernel[a] - 1) + 1;
    padding_right[a] = std::max<std::int64_t>(0, (out_shape[2 + static_cast<int>(a)] - 1) * options_.stride[a] + extent -
                                                     input.shape[2 + static_cast<int>(a)] - options_.padding[a]);
  }
  const auto attr = user_scratchpad();
  auto forward_attr = user_scratchpad();
  if (fuse_relu) {
    dnnl::post_ops relu;
    relu.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);  // scale, algorithm, alpha (slope), beta
    forward_attr.set_post_ops(relu);
  }
  const auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  auto algorithm = dnnl::algorithm::convolution_direct;
  auto forward_desc_for = [&](dnnl::algorithm a, const memory::desc& source) {
    return options_.bias ? dnnl::convolution_forward::desc(prop, a, source, weights_any, p->bias_desc_, output_any, strides,
                                                           dilates, padding_left, padding_right)
                         : dnnl::convolution_forward::desc(prop, a, source, weights_any, output_any, strides, dilates,
                                                           padding_left, padding_right);
  };
  p->forward_pd_ = dnnl::convolution_forward::primitive_desc(forward_desc_for(algorithm, p->source_), forward_attr, *context.engine);
  p->conv_source_ = p->source_;
  if (is_reference(p->forward_pd_)) {
    const memory::desc source_any(dims_of(input.shape), memory::data_type::f32, memory::format_tag::any);
    const auto any_desc =
        options_.bias ? dnnl::convolution_forward::desc(prop, algorithm, source_any, weights_any, p->bias_desc_, output_any,
                                                        strides, dilates, padding_left, padding_right)
                      : dnnl::convolution_forward::desc(prop, algorithm, source_any, weights_any, output_any, strides, dilates,
                                                        padding_left, padding_right);
    auto any_pd = dnnl::convolution_forward::primitive_desc(any_desc, forward_attr, *context.engine);
    if (!is_reference(any_pd)) {
      p->forward_pd_ = any_pd;
      p->conv_source_ = any_pd.src_desc();
      p->input_reorder_ = dnnl::reorder(dnnl::reorder::primitive_desc(*context.engine, p->source_, *context.engine, p->conv_source_));
    }
  }
  const bool input_grad = !context.input_needs_grad.empty() && context.input_needs_grad[0] != 0;
  if (training) {
    if (auto winograd = winograd_training(forward_desc_for(dnnl::algorithm::convolution_winograd, p->conv_source_), attr,
                                          *context.engine, p->forward_pd_, input_grad)) {
      p->forward_pd_ = *winograd;
      algorithm = dnnl::algorithm::convolution_winograd;
    }
  }
  p->forward_ = dnnl::convolution_forward(p->forward_pd_);
  p->forward_weights_ = p->forward_pd_.weights_desc();
  p->output_ = p->forward_pd_.dst_desc();
  p->forward_scratchpad_ = p->forward_pd_.scratchpad_desc();
  ScratchLayout forward_scratch;
  if (p->forward_pd_.weights_desc() != p->weights_plain_) {
    p->forward_weights_reorder_ =
        dnnl::reorder(dnnl::reorder::primitive_desc(*context.engine, p->weights_plain_, *context.engine, p->forward_pd_.weights_desc()));
    p->forward_weights_offset_ = forward_scratch.add(p->forward_pd_.weights_desc().get_size());
  }
  std::size_t scratchpad_bytes = p->forward_pd_.scratchpad_desc().get_size();
  if (!training) {
    const auto winograd = winograd_forward(forward_desc_for(dnnl::algorithm::convolution_winograd, p->conv_source_), forward_attr,
                                           *context.engine, p->forward_pd_);
    const auto& constant_pd = winograd ? *winograd : p->forward_pd_;
    p->constant_forward_ = winograd ? dnnl::convolution_forward(*winograd) : p->forward_;
    p->constant_weights_ = constant_pd.weights_desc();
    p->constant_scratchpad_ = constant_pd.scratchpad_desc();
    if (p->constant_weights_ != p->weights_plain_) {
      p->constant_weights_reorder_ =
          dnnl::reorder(dnnl::reorder::primitive_desc(*context.engine, p->weights_plain_, *context.engine, p->constant_weights_));
      p->constant_bytes = p->constant_weights_.get_size();
    }
    scratchpad_bytes = std::max(scratchpad_bytes, p->constant_scratchpad_.get_size());
  }
  p->forward_scratchpad_offset_ = forward_scratch.add(scratchpad_bytes);
  if (p->input_reorder_) p->forward_input_offset_ = forward_scratch.add(p->conv_source_.get_size());
  p->forward_scratch_bytes = forward_scratch.total();
  // forward_work stays 0: a session never gives a convolution more than one thread. oneDNN
  // 2.6's convolutions created for more threads can split a sum differently (measured:
  // attn-cnn's and resnet's outputs change bits at 3 threads), and a session's result may
  // not depend on its thread count.

  const memory::desc output_desc = p->forward_pd_.dst_desc();
  p->output.shape = out_shape;
  if (output_desc != plain_desc(out_shape)) p->output.blocked = make_blocked_layout(output_desc);
  p->backward_reads_inputs = true;

  if (training) {
    ScratchLayout backward_scratch;
    const auto weights_desc =
        options_.bias ? dnnl::convolution_backward_weights::desc(algorithm, p->conv_source_, weights_any, p->bias_desc_, output_desc,
                                                                 strides, dilates, padding_left, padding_right)
                      : dnnl::convolution_backward_weights::desc(algorithm, p->conv_source_, weights_any, output_desc, strides,
                                                                 dilates, padding_left, padding_right);
    p->weights_pd_ = dnnl::convolution_backward_weights::primitive_desc(weights_desc, attr, *context.engine, p->forward_pd_);
    if (is_reference(p->weights_pd_)) {
      // Some instruction sets have no optimized backward-weights for the layout the forward
      // chose (AVX2 with a 1-channel input and nChw8c gradients falls to oneDNN's reference
      // loop, ~200x slower). Let oneDNN pick the gradient's layout and reorder into it.
      const auto any_desc =
          options_.bias ? dnnl::convolution_backward_weights::desc(algorithm, p->conv_source_, weights_any, p->bias_desc_, output_any,
                                                                   strides, dilates, padding_left, padding_right)
                        : dnnl::convolution_backward_weights::desc(algorithm, p->conv_source_, weights_any, output_any, strides,
                                                                   dilates, padding_left, padding_right);
      auto any_pd = dnnl::convolution_backward_weights::primitive_desc(any_desc, attr, *context.engine, p->forward_pd_);
      if (!is_reference(any_pd)) {
        p->weights_pd_ = any_pd;
        if (p->weights_pd_.diff_dst_desc() != output_desc) {
          p->output_grad_reorder_ = dnnl::reorder(
              dnnl::reorder::primitive_desc(*context.engine, output_desc, *context.engine, p->weights_pd_.diff_dst_desc()));
          p->output_grad_offset_ = backward_scratch.add(p->weights_pd_.diff_dst_desc().get_size());
        }
      }
    }
    p->backward_weights_ = dnnl::convolution_backward_weights(p->weights_pd_);
    p->weights_output_grad_ = p->weights_pd_.diff_dst_desc();
    p->weights_grad_ = p->weights_pd_.diff_weights_desc();
    p->weights_scratchpad_ = p->weights_pd_.scratchpad_desc();
    p->weights_grad_offset_ = backward_scratch.add(p->weights_pd_.diff_weights_desc().get_size());
    if (p->weights_pd_.diff_weights_desc() != p->weights_plain_) {
      p->weights_grad_reorder_ = dnnl::reorder(
          dnnl::reorder::primitive_desc(*context.engine, p->weights_pd_.diff_weights_desc(), *context.engine, p->weights_plain_));
      p->weights_plain_offset_ = backward_scratch.add(p->weights_plain_.get_size());
    }
    if (options_.bias) p->bias_grad_offset_ = backward_scratch.add(p->bias_desc_.get_size());
    std::size_t scratchpad = p->weights_pd_.scratchpad_desc().get_size();
    if (input_grad) {
      const dnnl::convolution_backward_data::desc data_desc(algorithm, p->conv_source_, weights_any, output_desc, strides, dilates,
                                                            padding_left, padding_right);
      p->data_pd_ = dnnl::convolution_backward_data::primitive_desc(data_desc, attr, *context.engine, p->forward_pd_);
      if (is_reference(p->data_pd_)) {
        const memory::desc source_any(dims_of(input.shape), memory::data_type::f32, memory::format_tag::any);
        const dnnl::convolution_backward_data::desc any_desc(algorithm, source_any, weights_any, output_any, strides, dilates,
                                                             padding_left, padding_right);
        auto any_pd = dnnl::convolution_backward_data::primitive_desc(any_desc, attr, *context.engine, p->forward_pd_);
        if (!is_reference(any_pd)) p->data_pd_ = any_pd;
      }
      p->backward_data_ = dnnl::convolution_backward_data(p->data_pd_);
      p->data_source_ = p->data_pd_.diff_src_desc();
      p->data_output_grad_ = p->data_pd_.diff_dst_desc();
      if (p->data_output_grad_ != output_desc) {
        p->data_output_grad_reorder_ =
            dnnl::reorder(dnnl::reorder::primitive_desc(*context.engine, output_desc, *context.engine, p->data_output_grad_));
        p->data_output_grad_offset_ = backward_scratch.add(p->data_output_grad_.get_size());
      }
      if (p->data_source_ != p->source_) {
        p->input_grad_reorder_ =
            dnnl::reorder(dnnl::reorder::primitive_desc(*context.engine, p->data_source_, *context.engine, p->source_));
        p->input_grad_offset_ = backward_scratch.add(p->data_source_.get_size());
      }
      p->data_weights_ = p->data_pd_.weights_desc();
      p->data_scratchpad_ = p->data_pd_.scratchpad_desc();
      if (p->data_pd_.weights_desc() != p->weights_plain_) {
        p->data_weights_reorder_ = dnnl::reorder(
            dnnl::reorder::primitive_desc(*context.engine, p->weights_plain_, *context.engine, p->data_pd_.weights_desc()));
        p->data_weights_offset_ = backward_scratch.add(p->data_pd_.weights_desc().get_size());
      }
      scratchpad = std::max(scratchpad, p->data_pd_.scratchpad_desc().get_size());
    }
    p->backward_scratchpad_offset_ = backward_scratch.add(scratchpad);
    if (p->input_reorder_) p->backward_input_offset_ = backward_scratch.add(p->conv_source_.get_size());
    p->backward_scratch_bytes = backward_scratch.total();
  }
  return p;
}

}  // namespace ember
