#pragma once
// Learned positional embedding: input (N, T, D) -> output (N, T, D), y[n] = x[n] + P, with
// P (T, D) the parameter "weight", initialized N(0, 0.02^2) as in ViT. T and D are the
// options "tokens" and "features".
#include "layers/layer.h"

namespace ember {

class PositionalEmbedding final : public Layer {
 public:
  static constexpr float init_std = 0.02f;

  PositionalEmbedding(std::int64_t tokens, std::int64_t features);
  static std::unique_ptr<Layer> from_options(const Json& options);

  std::string_view kind() const override { return "positional_embedding"; }
  Json options() const override { return Json{{"tokens", tokens_}, {"features", features_}}; }
  Shape output_shape(std::span<const Shape> inputs) const override;
  std::vector<ParameterSpec> parameters(std::span<const Shape> inputs) const override;
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;

 private:
  std::int64_t tokens_;
  std::int64_t features_;
};

}  // namespace ember
