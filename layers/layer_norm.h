#pragma once
// LayerNorm over the last dimension, as torch.nn.LayerNorm(features, eps):
// input (N, ..., D) -> output (N, ..., D), y = (x - mean) / sqrt(var + eps) * weight + bias,
// mean and (biased) var over the last D elements of each row, weight (D) starting at ones
// and bias (D) at zeros. Training saves each row's mean and 1/sqrt(var + eps) for backward.
#include "layers/layer.h"

namespace ember {

class LayerNorm final : public Layer {
 public:
  explicit LayerNorm(std::int64_t features, double eps = 1e-5);
  static std::unique_ptr<Layer> from_options(const Json& options);

  std::string_view kind() const override { return "layer_norm"; }
  Json options() const override;
  Shape output_shape(std::span<const Shape> inputs) const override;
  std::vector<ParameterSpec> parameters(std::span<const Shape> inputs) const override;
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;

 private:
  std::int64_t features_;
  double eps_;
};

}  // namespace ember
