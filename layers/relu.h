#pragma once
// ReLU: input (N, ...) -> output (N, ...), max(x, 0). Pointwise: the output keeps the
// input's memory layout (oneDNN blocked layouts included) and may overwrite the input.
#include "layers/layer.h"

namespace ember {

class Relu final : public Layer {
 public:
  static std::unique_ptr<Layer> from_options(const Json& options);
  std::string_view kind() const override { return "relu"; }
  Json options() const override { return Json::object(); }
  Shape output_shape(std::span<const Shape> inputs) const override { return inputs[0]; }
  bool accepts_blocked_inputs() const override { return true; }
  FusedActivation activation() const override { return FusedActivation::relu; }
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;
};

}  // namespace ember
