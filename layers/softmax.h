#pragma once
// Softmax over the last dimension: input (N, ..., C) -> output (N, ..., C).
#include "layers/layer.h"

namespace ember {

class Softmax final : public Layer {
 public:
  static std::unique_ptr<Layer> from_options(const Json& options);
  std::string_view kind() const override { return "softmax"; }
  Json options() const override { return Json::object(); }
  Shape output_shape(std::span<const Shape> inputs) const override { return inputs[0]; }
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;
};

}  // namespace ember
