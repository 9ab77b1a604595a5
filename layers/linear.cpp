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

// W packed for the GEMM (PreparedLayer::constant_bytes): in inference W^T as B for the
// forward; in training W as B for the backward's dX = dY W (the training forward reads W
// in place, below). Their layouts depend on (instruction set, in, out) only, so one copy
// serves every micro-batch size.
struct LinearConstants {
  std::size_t forward_floats = 0;    // inference: W^T packed, gemm_pack_b(yes, in, out)
  std::size_t backward_floats = 0;   // training: W packed, gemm_pack_b(no, out, in)
  std::size_t bytes = 0;
};

LinearConstants linear_constants(std::int64_t in, std::int64_t out, Mode mode) {
  using simd::Transpose;
  LinearConstants c;
  if (mode == Mode::training) {
    c.backward_floats = simd::gemm_packed_b_floats(Transpose::no, out, in);
  } else {
    c.forward_floats = simd::gemm_packed_b_floats(Transpose::yes, in, out);
  }
  c.bytes = (c.forward_floats + c.backward_floats) * sizeof(float);
  return c;
}

// The training forward as Y^T (out x rows) = W X^T, W read in place (its rows broadcast):
// no packed W^T to make each step. Every element of Y is the same FMA chain along `in`
// either way (simd/gemm_plan.h), so Y has the bits of X W^T wherever neither product
// takes the dot orientation (a few rows, or a few outputs), which keeps X W^T.
bool forward_transposed(Mode mode, std::int64_t rows, std::int64_t out) {
  using simd::Transpose;
  return mode == Mode::training && !simd::gemm_uses_dot(Transpose::no, Transpose::yes, rows, out) &&
         !simd::gemm_uses_dot(Transpose::no, Transpose::yes, out, rows);
}

class PreparedLinear final : public PreparedLayer {
 public:
  PreparedLinear(std::int64_t rows, std::int64_t in, std::int64_t out, bool bias, simd::Activation activation, Mode mode)
      : rows_(rows), in_(in), out_(out), bias_(bias), activation_(activation), mode_(mode),
        constants_(linear_constants(in, out, mode)) {}

  // Y (rows x out) = X (rows x in) W^T + b. Inference: against W^T packed
  // (prepare_constants), bitwise the same as from W itself. Training: as Y^T = W X^T
  // (forward_transposed) or, for a few rows, in the dot orientation from W.
  void forward(const ForwardArgs& args) const override {
    using simd::Transpose;
    simd::GemmEpilogue epilogue;
    epilogue.bias = bias_ ? args.params[1].data : nullptr;
    epilogue.activation = activation_;
    float* scratch = reinterpret_cast<float*>(args.scratch);
    if (forward_transposed(mode_, rows_, out_)) {
      // The bias is added after the sums, as the GEMM's epilogue would add it.
      float* yt = scratch;
      simd::gemm(Transpose::no, Transpose::yes, out_, rows_, in_, args.params[0].data, in_, args.inputs[0].data, in_, yt,
                 rows_, simd::GemmEpilogue{}, scratch + transposed_output_floats(), args.threads);
      simd::elementwise_kernels().transpose_add_row(args.output.data, yt, out_, rows_, epilogue.bias);
      return;
    }
    if (mode_ == Mode::inference && args.constants != nullptr) {
      simd::gemm_packed(Transpose::no, Transpose::yes, rows_, out_, in_, args.inputs[0].data, in_,
                        reinterpret_cast<const float*>(args.constants), args.output.data, out_, epilogue, scratch,
                        args.threads, args.runner);
      return;
    }
    simd::gemm(Transpose::no, Transpose::yes, rows_, out_, in_, args.inputs[0].data, in_, args.params[0].data, in_,
               args.output.data, out_, epilogue, scratch, args.threads, args.runner);
  }

  // Floats of Y^T at the start of the training forward's scratch (a multiple of 16, so
  // the GEMM's scratch after it stays 64-byte aligned).
  std::size_t transposed_output_floats() const {
    return static_cast<std::size_t>((rows_ * out_ + 15) / 16 * 16);
  }

  std::string constants_key() const override { return mode_ == Mode::training ? "gemm_packed_w" : "gemm_packed_w_t"; }
  void prepare_constants(const ConstantArgs& args) const override {
    using simd::Transpose;
    const float* w = args.params[0].data;
    auto* packed = reinterpret_cast<float*>(args.constants);
    if (mode_ == Mode::training) {
      simd::gemm_pack_b(Transpose::no, out_, in_, w, in_, packed, args.threads);
    } else {
      simd::gemm_pack_b(Transpose::yes, in_, out_, w, in_, packed, args.threads);
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
        const auto* packed_w = reinterpret_cast<const float*>(args.constants);
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
    if (forward_transposed(context.mode, rows, out_features_)) {
      forward_floats = std::max(forward_floats, prepared->transposed_output_floats() +
                                                    simd::gemm_scratch_floats(Transpose::no, Transpose::yes, out_features_,
                                                                              rows, in_features_, threads));
    }
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
