#include "layers/attention_pool.h"

#include <algorithm>
#include <string>

#include "engine/error.h"
#include "layers/options.h"
#include "layers/scratch_layout.h"
#include "simd/elementwise.h"
#include "simd/gemm.h"
#include "simd/softmax.h"

namespace ember {
namespace {

class PreparedAttentionPool final : public PreparedLayer {
 public:
  PreparedAttentionPool(std::int64_t batch, std::int64_t tokens, std::int64_t channels, bool training)
      : batch_(batch), tokens_(tokens), channels_(channels), training_(training) {}

  void forward(const ForwardArgs& args) const override {
    float* gemm_scratch = reinterpret_cast<float*>(args.scratch + forward_gemm_offset_);
    float* scores = reinterpret_cast<float*>(args.scratch + scores_offset_);
    // The attention weights: kept in `saved` for backward in training.
    float* weights = reinterpret_cast<float*>(training_ ? args.saved : args.scratch + weights_offset_);
    const float* x = args.inputs[0].data;

    // scores (N*T x 1) = X (N*T x C) w^T + b
    simd::GemmEpilogue epilogue;
    epilogue.bias = args.params[1].data;
    simd::gemm(simd::Transpose::no, simd::Transpose::yes, batch_ * tokens_, 1, channels_, x, channels_, args.params[0].data,
               channels_, scores, 1, epilogue, gemm_scratch, 1);
    simd::softmax_kernels().softmax_forward(weights, scores, batch_, tokens_);

    // y[n] (C) = sum_t a[n, t] x[n, t]
    const simd::ElementwiseKernels& k = simd::elementwise_kernels();
    for (std::int64_t n = 0; n < batch_; ++n) {
      float* y = args.output.data + n * channels_;
      const float* a = weights + n * tokens_;
      const float* xn = x + n * tokens_ * channels_;
      k.scale(y, a[0], xn, channels_);
      for (std::int64_t t = 1; t < tokens_; ++t) k.axpy(y, a[t], xn + t * channels_, channels_);
    }
  }

  //   da[n, t] = dy[n] . x[n, t]
  //   ds[n] = a[n] * (da[n] - sum_t a[n, t] da[n, t])     (softmax backward)
  //   dx[n, t] = a[n, t] dy[n] + ds[n, t] w
  //   dw (1 x C) (+)= ds^T (1 x N*T) X (N*T x C);  db (+)= sum of ds
  void backward(const BackwardArgs& args) const override {
    float* gemm_scratch = reinterpret_cast<float*>(args.scratch + backward_gemm_offset_);
    float* da = reinterpret_cast<float*>(args.scratch + weights_grad_offset_);
    float* ds = reinterpret_cast<float*>(args.scratch + scores_grad_offset_);
    const float* a = reinterpret_cast<const float*>(args.saved);
    const float* x = args.inputs[0].data;
    const float* dy = args.output_grad.data;
    const float* w = args.params[0].data;

    for (std::int64_t n = 0; n < batch_; ++n) {
      // da[n] (T x 1) = X[n] (T x C) dy[n]^T
      simd::gemm(simd::Transpose::no, simd::Transpose::yes, tokens_, 1, channels_, x + n * tokens_ * channels_, channels_,
                 dy + n * channels_, channels_, da + n * tokens_, 1, simd::GemmEpilogue{}, gemm_scratch, 1);
    }
    simd::softmax_kernels().softmax_backward(ds, da, a, batch_, tokens_);

    const simd::ElementwiseKernels& k = simd::elementwise_kernels();
    if (float* dx = args.input_grads[0].data; dx != nullptr) {
      for (std::int64_t n = 0; n < batch_; ++n) {
        for (std::int64_t t = 0; t < tokens_; ++t) {
          const std::int64_t row = n * tokens_ + t;
          k.scale(dx + row * channels_, a[row], dy + n * channels_, channels_);
          k.axpy(dx + row * channels_, ds[row], w, channels_);
        }
      }
    }
    simd::GemmEpilogue weight_grad;
    weight_grad.accumulate = args.accumulate_param_grads;
    simd::gemm(simd::Transpose::yes, simd::Transpose::no, 1, channels_, batch_ * tokens_, ds, 1, x, channels_,
               args.param_grads[0].data, channels_, weight_grad, gemm_scratch, 1);
    k.column_sums(args.param_grads[1].data, ds, batch_ * tokens_, 1, 1, args.accumulate_param_grads);
  }

  // Offsets in the scratch buffers (ScratchLayout, set by prepare()). Forward: the GEMM's
  // packing space, the scores and, in inference, the weights; backward: the packing
  // space and the (N x T) gradients of the weights and of the scores.
  std::size_t forward_gemm_offset_ = 0, scores_offset_ = 0, weights_offset_ = 0;
  std::size_t backward_gemm_offset_ = 0, weights_grad_offset_ = 0, scores_grad_offset_ = 0;

 private:
  std::int64_t batch_, tokens_, channels_;
  bool training_;
};

}  // namespace

AttentionPool::AttentionPool(std::int64_t features) : features_(features) {
  if (features <= 0) throw_option_error("attention_pool", "features", "a positive integer", features);
}

std::unique_ptr<Layer> AttentionPool::from_options(const Json& options) {
  const LayerOptions o("attention_pool", options, {"features"});
  return std::make_unique<AttentionPool>(o.positive_integer("features"));
}

Shape AttentionPool::output_shape(std::span<const Shape> inputs) const {
  const Shape& x = inputs[0];
  if (x.rank() != 3 || x[2] != features_) {
    throw Error("attention_pool expects input (N, T, " + std::to_string(features_) + "), found " + x.str());
  }
  return Shape{x[0], x[2]};
}

std::vector<ParameterSpec> AttentionPool::parameters(std::span<const Shape>) const {
  return {{"weight", Shape{1, features_}, Init::kaiming_uniform, features_},
          {"bias", Shape{1}, Init::bias_uniform, features_}};
}

std::unique_ptr<PreparedLayer> AttentionPool::prepare(const PrepareContext& context) const {
  const Shape& x = context.inputs[0].shape;
  const std::int64_t batch = x[0], tokens = x[1];
  const bool training = context.mode == Mode::training;
  auto prepared = std::make_unique<PreparedAttentionPool>(batch, tokens, features_, training);
  prepared->output.shape = output_shape(std::span<const Shape>(&x, 1));
  // One GEMM packing space serves every GEMM of the layer (one thread each).
  using simd::Transpose;
  const std::size_t gemm_bytes =
      std::max({simd::gemm_scratch_floats(Transpose::no, Transpose::yes, batch * tokens, 1, features_, 1),
                simd::gemm_scratch_floats(Transpose::no, Transpose::yes, tokens, 1, features_, 1),
                simd::gemm_scratch_floats(Transpose::yes, Transpose::no, 1, features_, batch * tokens, 1)}) *
      sizeof(float);
  const std::size_t matrix_bytes = static_cast<std::size_t>(batch * tokens) * sizeof(float);
  ScratchLayout forward_scratch;
  prepared->forward_gemm_offset_ = forward_scratch.add(gemm_bytes);
  prepared->scores_offset_ = forward_scratch.add(matrix_bytes);
  if (!training) prepared->weights_offset_ = forward_scratch.add(matrix_bytes);
  prepared->forward_scratch_bytes = forward_scratch.total();
  if (training) {
    prepared->saved_bytes = matrix_bytes;  // the attention weights
    ScratchLayout backward_scratch;
    prepared->backward_gemm_offset_ = backward_scratch.add(gemm_bytes);
    prepared->weights_grad_offset_ = backward_scratch.add(matrix_bytes);
    prepared->scores_grad_offset_ = backward_scratch.add(matrix_bytes);
    prepared->backward_scratch_bytes = backward_scratch.total();
  }
  return prepared;
}

}  // namespace ember
