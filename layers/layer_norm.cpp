#include "layers/layer_norm.h"

#include <algorithm>
#include <string>

#include "engine/error.h"
#include "layers/options.h"
#include "simd/norm.h"

namespace ember {
namespace {

class PreparedLayerNorm final : public PreparedLayer {
 public:
  PreparedLayerNorm(std::int64_t rows, std::int64_t cols, float eps, bool training)
      : rows_(rows), cols_(cols), eps_(eps), training_(training) {}

  // Per row statistics go to `saved` in training (backward reads them), to scratch otherwise.
  void forward(const ForwardArgs& args) const override {
    float* mean = reinterpret_cast<float*>(training_ ? args.saved : args.scratch);
    float* rstd = mean + rows_;
    simd::norm_kernels().layer_norm_forward(args.output.data, mean, rstd, args.inputs[0].data, args.params[0].data,
                                            args.params[1].data, rows_, cols_, eps_);
  }

  void backward(const BackwardArgs& args) const override {
    const float* mean = reinterpret_cast<const float*>(args.saved);
    const float* rstd = mean + rows_;
    float* weight_grad = args.param_grads[0].data;
    float* bias_grad = args.param_grads[1].data;
    // The kernel accumulates parameter gradients.
    if (!args.accumulate_param_grads) {
      std::fill(weight_grad, weight_grad + cols_, 0.0f);
      std::fill(bias_grad, bias_grad + cols_, 0.0f);
    }
    simd::norm_kernels().layer_norm_backward(args.input_grads[0].data, weight_grad, bias_grad, args.output_grad.data,
                                             args.inputs[0].data, mean, rstd, args.params[0].data, rows_, cols_);
  }

 private:
  std::int64_t rows_, cols_;
  float eps_;
  bool training_;
};

}  // namespace

LayerNorm::LayerNorm(std::int64_t features, double eps) : features_(features), eps_(eps) {
  if (features <= 0) throw_option_error("layer_norm", "features", "a positive integer", features);
  // eps = 0 would divide by zero on a constant row.
  if (!(eps > 0.0 && eps < 1.0)) throw_option_error("layer_norm", "eps", "a number in (0, 1)", eps);
}

std::unique_ptr<Layer> LayerNorm::from_options(const Json& options) {
  const LayerOptions o("layer_norm", options, {"features", "eps"});
  return std::make_unique<LayerNorm>(o.positive_integer("features"), o.number("eps", 1e-5, 0.0, 1.0));
}

Json LayerNorm::options() const { return Json{{"features", features_}, {"eps", eps_}}; }

Shape LayerNorm::output_shape(std::span<const Shape> inputs) const {
  const Shape& x = inputs[0];
  if (x.rank() < 2 || x[x.rank() - 1] != features_) {
    throw Error("layer_norm expects input (N, ..., " + std::to_string(features_) + "), found " + x.str());
  }
  return x;
}

std::vector<ParameterSpec> LayerNorm::parameters(std::span<const Shape>) const {
  return {{"weight", Shape{features_}, Init::ones, features_}, {"bias", Shape{features_}, Init::zeros, features_}};
}

std::unique_ptr<PreparedLayer> LayerNorm::prepare(const PrepareContext& context) const {
  const Shape& x = context.inputs[0].shape;
  const Shape y = output_shape(std::span<const Shape>(&x, 1));
  const std::int64_t rows = x.elements() / features_;
  auto prepared = std::make_unique<PreparedLayerNorm>(rows, features_, static_cast<float>(eps_), context.mode == Mode::training);
  prepared->output.shape = y;
  // Per element: the mean, the centred squares (two passes) and the affine (forward); the
  // two row sums, the parameter gradients and the input gradient (backward).
  prepared->forward_flops = 6 * x.elements();
  prepared->backward_flops = 10 * x.elements();
  const auto statistics = static_cast<std::size_t>(2 * rows) * sizeof(float);
  if (context.mode == Mode::training) {
    prepared->saved_bytes = statistics;
  } else {
    prepared->forward_scratch_bytes = statistics;
  }
  return prepared;
}

}  // namespace ember
