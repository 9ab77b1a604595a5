#include "layers/linear.h"

#include <algorithm>
#include <string>

#include "engine/aligned_buffer.h"
#include "engine/error.h"
#include "layers/options.h"
#include "simd/elementwise.h"
#include "simd/gemm.h"

namespace ember {
namespace {

// W packed for the GEMM (PreparedLayer::constant_bytes): W^T as B for the forward, and in
// training also W as B for the backward's dX = dY W, after it (64-byte aligned). Their
// layouts depend on (instruction set, in, out) only, so one copy serves every micro-batch
// size.
struct LinearConstants {
  std::size_t forward_floats = 0;    // W^T packed: gemm_pack_b(yes, in, out)
  std::size_t backward_offset = 0;   // bytes to W packed (gemm_pack_b(no, out, in)); 0: none
  std::size_t bytes = 0;
};

LinearConstants linear_constants(std::int64_t in, std::int64_t out, Mode mode) {
  using simd::Transpose;
  LinearConstants c;
  c.forward_floats = simd::gemm_packed_b_floats(Transpose::yes, in, out);
  c.bytes = c.forward_floats * sizeof(float);
  if (mode == Mode::training) {
    c.backward_offset = align_up(c.bytes);
    c.bytes = c.backward_offset + simd::gemm_packed_b_floats(Transpose::no, out, in) * sizeof(float);
  }
  return c;
}

class PreparedLinear final : public PreparedLayer {
 public:
  PreparedLinear(std::int64_t rows, std::int64_t in, std::int64_t out, bool bias, simd::Activation activation, Mode mode)
      : rows_(rows), in_(in), out_(out), bias_(bias), activation_(activation), mode_(mode),
        constants_(linear_constants(in, out, mode)) {}

  // Y (rows x out) = X (rows x in) W^T + b; against W^T packed (prepare_constants),
  // bitwise the same as from W itself. Except in training where the unpacked GEMM takes
  // the dot orientation (a few rows: it packs nothing), whose sums a packed call does not
  // reproduce (simd/gemm_plan.h): the step must give today's bits.
  void forward(const ForwardArgs& args) const override {
    using simd::Transpose;
    simd::GemmEpilogue epilogue;
    epilogue.bias = bias_ ? args.params[1].data : nullptr;
    epilogue.activation = activation_;
    float* scratch = reinterpret_cast<float*>(args.scratch);
    const bool packed = args.constants != nullptr &&
                        (mode_ == Mode::inference || !simd::gemm_uses_dot(Transpose::no, Transpose::yes, rows_, out_));
    if (packed) {
      simd::gemm_packed(Transpose::no, Transpose::yes, rows_, out_, in_, args.inputs[0].data, in_,
                        reinterpret_cast<const float*>(args.constants), args.output.data, out_, epilogue, scratch,
                        args.threads);
      return;
    }
    simd::gemm(Transpose::no, Transpose::yes, rows_, out_, in_, args.inputs[0].data, in_, args.params[0].data, in_,
               args.output.data, out_, epilogue, scratch, args.threads);
  }

  std::string constants_key() const override { return mode_ == Mode::training ? "gemm_packed_w_t_and_w" : "gemm_packed_w_t"; }
  void prepare_constants(const ConstantArgs& args) const override {
    using simd::Transpose;
    const float* w = args.params[0].data;
    simd::gemm_pack_b(Transpose::yes, in_, out_, w, in_, reinterpret_cast<float*>(args.constants), args.threads);
    if (constants_.backward_offset > 0) {
      simd::gemm_pack_b(Transpose::no, out_, in_, w, in_,
                        reinterpret_cast<float*>(args.constants + constants_.backward_offset), args.threads);
    }
  }

  // dX (rows x in) = dY W (against W packed, when given: the same bits);
  // dW (out x in) (+)= dY^T X;  db (+)= column sums of dY
  void backward(const BackwardArgs& args) const override {
    using simd::Transpose;
    float* scratch = reinterpret_cast<float*>(args.scratch);
    const float* dy = args.output_grad.data;
    if (args.input_grads[0].data != nullptr) {
      if (args.constants != nullptr) {
        const auto* packed_w = reinterpret_cast<const float*>(args.constants + constants_.backward_offset);
        simd::gemm_packed(Transpose::no, Transpose::no, rows_, in_, out_, dy, out_, packed_w, args.input_grads[0].data,
                          in_, simd::GemmEpilogue{}, scratch, 1);
      } else {
        simd::gemm(Transpose::no, Transpose::no, rows_, in_, out_, dy, out_, args.params[0].data, in_,
                   args.input_grads[0].data, in_, simd::GemmEpilogue{}, scratch, 1);
      }
    }
    simd::GemmEpilogue weights;
    weights.accumulate = args.accumulate_param_grads;
    simd::gemm(Transpose::yes, Transpose::no, out_, in_, rows_, dy, out_, args.inputs[0].data, in_,
               args.param_grads[0].data, in_, weights, scratch, 1);
    if (bias_) {
      simd::elementwise_kernels().column_sums(args.param_grads[1].data, dy, rows_, out_, out_, args.accumulate_param_grads);
    }
  }

  const LinearConstants& constants() const { return constants_; }

 private:
  std::int64_t rows_, in_, out_;
  bool bias_;
  simd::Activation activation_;  // inference: a following activation applied in the epilogue
  Mode mode_;
  LinearConstants constants_;
};

simd::Activation gemm_activation(FusedActivation activation) {
  switch (activation) {
    case FusedActivation::none: return simd::Activation::none;
    case FusedActivation::relu: return simd::Activation::relu;
    case FusedActivation::gelu_erf: return simd::Activation::gelu;
    case FusedActivation::gelu_tanh: return simd::Activation::gelu_tanh;
  }
  return simd::Activation::none;
}

}  // namespace

Linear::Linear(std::int64_t in_features, std::int64_t out_features, bool bias)
    : in_features_(in_features), out_features_(out_features), bias_(bias) {
  if (in_features <= 0) throw_option_error("linear", "in_features", "a positive integer", in_features);
  if (out_features <= 0) throw_option_error("linear", "out_features", "a positive integer", out_features);
}

std::unique_ptr<Layer> Linear::from_options(const Json& options) {
  const LayerOptions o("linear", options, {"in_features", "out_features", "bias"});
  return std::make_unique<Linear>(o.positive_integer("in_features"), o.positive_integer("out_features"), o.boolean("bias", true));
}

Json Linear::options() const {
  return Json{{"in_features", in_features_}, {"out_features", out_features_}, {"bias", bias_}};
}

Shape Linear::output_shape(std::span<const Shape> inputs) const {
  const Shape& x = inputs[0];
  if (x.rank() < 2 || x[x.rank() - 1] != in_features_) {
    throw Error("linear expects input (N, ..., " + std::to_string(in_features_) + "), found " + x.str() +
                " (in_features " + std::to_string(in_features_) + ", found " +
                std::to_string(x.rank() >= 2 ? x[x.rank() - 1] : x.sample_elements()) + ")");
  }
  Shape y = x;
  y[x.rank() - 1] = out_features_;
  return y;
}

std::vector<ParameterSpec> Linear::parameters(std::span<const Shape>) const {
  std::vector<ParameterSpec> specs{{"weight", Shape{out_features_, in_features_}, Init::kaiming_uniform, in_features_}};
  if (bias_) specs.push_back({"bias", Shape{out_features_}, Init::bias_uniform, in_features_});
  return specs;
}

std::unique_ptr<PreparedLayer> Linear::prepare(const PrepareContext& context) const {
  const Shape& x = context.inputs[0].shape;
  if (context.fused_activation != FusedActivation::none && context.mode == Mode::training) {
    throw Error("linear: a following activation can be fused in inference only; training's backward needs the output before it");
  }
  auto prepared = std::make_unique<PreparedLinear>(x.elements() / in_features_, in_features_, out_features_, bias_,
                                                   gemm_activation(context.fused_activation), context.mode);
  prepared->output.shape = output_shape(std::span<const Shape>(&x, 1));
  prepared->forward_work = x.elements() * out_features_;
  // Bias left out: forward 2 rows in out; backward dW, and dX when one is wanted.
  const bool input_grad = !context.input_needs_grad.empty() && context.input_needs_grad[0] != 0;
  prepared->forward_flops = 2 * prepared->forward_work;
  prepared->backward_flops = (input_grad ? 4 : 2) * prepared->forward_work;
  // Backward runs on one thread (the executor runs samples in parallel); forward may be
  // given more by a session (GEMM results do not depend on the thread count).
  const std::int64_t rows = x.elements() / in_features_;
  using simd::Transpose;
  std::size_t forward_floats = 0;  // for any thread count it may be given, W packed or not
  for (int threads = 1; threads <= context.max_threads; ++threads) {
    forward_floats = std::max(
        {forward_floats, simd::gemm_scratch_floats(Transpose::no, Transpose::yes, rows, out_features_, in_features_, threads),
         simd::gemm_packed_scratch_floats(Transpose::no, Transpose::yes, rows, out_features_, in_features_, threads)});
  }
  prepared->forward_scratch_bytes = forward_floats * sizeof(float);
  prepared->constant_bytes = prepared->constants().bytes;
  prepared->backward_scratch_bytes =
      std::max({simd::gemm_scratch_floats(Transpose::no, Transpose::no, rows, in_features_, out_features_, 1),
                simd::gemm_packed_scratch_floats(Transpose::no, Transpose::no, rows, in_features_, out_features_, 1),
                simd::gemm_scratch_floats(Transpose::yes, Transpose::no, out_features_, in_features_, rows, 1)}) *
      sizeof(float);
  return prepared;
}

}  // namespace ember
