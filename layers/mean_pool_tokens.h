#pragma once
// Mean over the tokens: input (N, T, C) -> output (N, C), y[n] = (1/T) sum_t x[n, t], as
// x.mean(dim=1) in PyTorch.
#include "layers/layer.h"

namespace ember {

class MeanPoolTokens final : public Layer {
 public:
  static std::unique_ptr<Layer> from_options(const Json& options);

  std::string_view kind() const override { return "mean_pool_tokens"; }
  Json options() const override { return Json::object(); }
  Shape output_shape(std::span<const Shape> inputs) const override;
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;
};

}  // namespace ember
