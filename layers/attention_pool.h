#pragma once
// Attention pooling over the tokens: input (N, T, C) -> output (N, C).
//   score[n, t] = x[n, t] . w + b          (a Linear C -> 1: weight (1, C), bias (1))
//   a[n] = softmax over t of score[n]      (saved for backward)
//   y[n] = sum_t a[n, t] x[n, t]
// Option "features" is C. Parameters initialized as nn.Linear(C, 1).
#include "layers/layer.h"

namespace ember {

class AttentionPool final : public Layer {
 public:
  explicit AttentionPool(std::int64_t features);
  static std::unique_ptr<Layer> from_options(const Json& options);

  std::string_view kind() const override { return "attention_pool"; }
  Json options() const override { return Json{{"features", features_}}; }
  Shape output_shape(std::span<const Shape> inputs) const override;
  std::vector<ParameterSpec> parameters(std::span<const Shape> inputs) const override;
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;

 private:
  std::int64_t features_;
};

}  // namespace ember
