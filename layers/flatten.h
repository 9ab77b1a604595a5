#pragma once
// Flatten: input (N, d1, d2, ...) -> output (N, d1 * d2 * ...), row-major order (as
// PyTorch's flatten of an NCHW tensor).
#include "layers/layer.h"

namespace ember {

class Flatten final : public Layer {
 public:
  static std::unique_ptr<Layer> from_options(const Json& options);
  std::string_view kind() const override { return "flatten"; }
  Json options() const override { return Json::object(); }
  Shape output_shape(std::span<const Shape> inputs) const override;
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;
};

}  // namespace ember
