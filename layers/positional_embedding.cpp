#include "layers/positional_embedding.h"

#include <cstring>
#include <string>

#include "engine/error.h"
#include "layers/options.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

class PreparedPositionalEmbedding final : public PreparedLayer {
 public:
  PreparedPositionalEmbedding(std::int64_t batch, std::int64_t per_sample) : batch_(batch), per_sample_(per_sample) {}

  // y[n] (T x D) = x[n] + P; the output may be the input's memory.
  void forward(const ForwardArgs& args) const override {
    const simd::ElementwiseKernels& k = simd::elementwise_kernels();
    for (std::int64_t n = 0; n < batch_; ++n) {
      k.add(args.output.data + n * per_sample_, args.inputs[0].data + n * per_sample_, args.params[0].data, per_sample_);
    }
  }

  // dx = dy;  dP (+)= sum over the batch of dy[n]
  void backward(const BackwardArgs& args) const override {
    const float* dy = args.output_grad.data;
    float* dx = args.input_grads[0].data;
    if (dx != nullptr && dx != dy) std::memcpy(dx, dy, static_cast<std::size_t>(batch_ * per_sample_) * sizeof(float));
    simd::elementwise_kernels().column_sums(args.param_grads[0].data, dy, batch_, per_sample_, per_sample_,
                                            args.accumulate_param_grads);
  }

 private:
  std::int64_t batch_, per_sample_;
};

}  // namespace

PositionalEmbedding::PositionalEmbedding(std::int64_t tokens, std::int64_t features) : tokens_(tokens), features_(features) {
  if (tokens <= 0) throw_option_error("positional_embedding", "tokens", "a positive integer", tokens);
  if (features <= 0) throw_option_error("positional_embedding", "features", "a positive integer", features);
}

std::unique_ptr<Layer> PositionalEmbedding::from_options(const Json& options) {
  const LayerOptions o("positional_embedding", options, {"tokens", "features"});
  return std::make_unique<PositionalEmbedding>(o.positive_integer("tokens"), o.positive_integer("features"));
}

Shape PositionalEmbedding::output_shape(std::span<const Shape> inputs) const {
  const Shape& x = inputs[0];
  if (x.rank() != 3 || x[1] != tokens_ || x[2] != features_) {
    throw Error("positional_embedding expects input (N, " + std::to_string(tokens_) + ", " + std::to_string(features_) +
                "), found " + x.str());
  }
  return x;
}

std::vector<ParameterSpec> PositionalEmbedding::parameters(std::span<const Shape>) const {
  return {{"weight", Shape{tokens_, features_}, Init::normal_scaled, features_, init_std}};
}

std::unique_ptr<PreparedLayer> PositionalEmbedding::prepare(const PrepareContext& context) const {
  const Shape& x = context.inputs[0].shape;
  auto prepared = std::make_unique<PreparedPositionalEmbedding>(x[0], tokens_ * features_);
  prepared->output.shape = output_shape(std::span<const Shape>(&x, 1));
  prepared->backward_reads_inputs = false;
  prepared->can_run_in_place = true;
  return prepared;
}

}  // namespace ember
