#pragma once
// Global average pooling, as torch.nn.AdaptiveAvgPool2d(1) followed by flatten(1):
// input (N, C, H, W) -> output (N, C), each output the mean of its channel's H x W values.
// On oneDNN (average pooling with a window of the whole image), so the input may stay in
// the layout a convolution left it in; the output is plain.
#include "layers/layer.h"

namespace ember {

class GlobalAvgPool final : public Layer {
 public:
  static std::unique_ptr<Layer> from_options(const Json& options);
  std::string_view kind() const override { return "global_avg_pool"; }
  Json options() const override { return Json::object(); }
  Shape output_shape(std::span<const Shape> inputs) const override;
  bool accepts_blocked_inputs() const override { return true; }
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;
};

}  // namespace ember
