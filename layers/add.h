#pragma once
// Residual add: inputs (N, ...) and (N, ...) of one shape -> output (N, ...), their sum.
// Takes blocked oneDNN layouts (conv feature maps); the output has the first input's.
#include "layers/layer.h"

namespace ember {

class Add final : public Layer {
 public:
  static std::unique_ptr<Layer> from_options(const Json& options);

  std::string_view kind() const override { return "add"; }
  Json options() const override { return Json::object(); }
  int input_count() const override { return 2; }
  bool accepts_blocked_inputs() const override { return true; }
  Shape output_shape(std::span<const Shape> inputs) const override;
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;
};

}  // namespace ember
