#include "layers/mean_pool_tokens.h"

#include "engine/error.h"
#include "layers/options.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

class PreparedMeanPoolTokens final : public PreparedLayer {
 public:
  PreparedMeanPoolTokens(std::int64_t batch, std::int64_t tokens, std::int64_t channels)
      : batch_(batch), tokens_(tokens), channels_(channels) {}

  // y[n] (C) = (1/T) column sums of x[n] (T x C)
  void forward(const ForwardArgs& args) const override {
    const simd::ElementwiseKernels& k = simd::elementwise_kernels();
    const float inverse = 1.0f / static_cast<float>(tokens_);
    for (std::int64_t n = 0; n < batch_; ++n) {
      float* y = args.output.data + n * channels_;
      k.column_sums(y, args.inputs[0].data + n * tokens_ * channels_, tokens_, channels_, channels_, false);
      k.scale(y, inverse, y, channels_);
    }
  }

  // dx[n, t] (C) = dy[n] / T for every t
  void backward(const BackwardArgs& args) const override {
    if (args.input_grads[0].data == nullptr) return;
    const simd::ElementwiseKernels& k = simd::elementwise_kernels();
    const float inverse = 1.0f / static_cast<float>(tokens_);
    for (std::int64_t n = 0; n < batch_; ++n) {
      const float* dy = args.output_grad.data + n * channels_;
      for (std::int64_t t = 0; t < tokens_; ++t) {
        k.scale(args.input_grads[0].data + (n * tokens_ + t) * channels_, inverse, dy, channels_);
      }
    }
  }

 private:
  std::int64_t batch_, tokens_, channels_;
};

}  // namespace

std::unique_ptr<Layer> MeanPoolTokens::from_options(const Json& options) {
  LayerOptions::require_none("mean_pool_tokens", options);
  return std::make_unique<MeanPoolTokens>();
}

Shape MeanPoolTokens::output_shape(std::span<const Shape> inputs) const {
  const Shape& x = inputs[0];
  if (x.rank() != 3) throw Error("mean_pool_tokens expects input (N, T, C), found " + x.str());
  return Shape{x[0], x[2]};
}

std::unique_ptr<PreparedLayer> MeanPoolTokens::prepare(const PrepareContext& context) const {
  const Shape& x = context.inputs[0].shape;
  auto prepared = std::make_unique<PreparedMeanPoolTokens>(x[0], x[1], x[2]);
  prepared->output.shape = output_shape(std::span<const Shape>(&x, 1));
  prepared->backward_reads_inputs = false;
  return prepared;
}

}  // namespace ember
