#pragma once
// GELU, as torch.nn.GELU(approximate): input (N, ...) -> output (N, ...),
//   "none" (default)  y = x Phi(x), Phi the standard normal CDF (exact, through erf)
//   "tanh"            y = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
// Pointwise: the output keeps the input's memory layout (oneDNN blocked layouts
// included, gelu(0) = 0 keeps their padding zero). Backward reads the input, so the
// output may overwrite the input only in inference.
#include "layers/layer.h"

namespace ember {

enum class GeluApproximation { none, tanh };

class Gelu final : public Layer {
 public:
  explicit Gelu(GeluApproximation approximate = GeluApproximation::none) : approximate_(approximate) {}
  static std::unique_ptr<Layer> from_options(const Json& options);

  std::string_view kind() const override { return "gelu"; }
  Json options() const override;
  Shape output_shape(std::span<const Shape> inputs) const override { return inputs[0]; }
  bool accepts_blocked_inputs() const override { return true; }
  FusedActivation activation() const override {
    return approximate_ == GeluApproximation::tanh ? FusedActivation::gelu_tanh : FusedActivation::gelu_erf;
  }
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;

 private:
  GeluApproximation approximate_;
};

}  // namespace ember
