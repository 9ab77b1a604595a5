#pragma once
// Feature map to token sequence: input (N, C, H, W) -> output (N, H*W, C), token p = h*W + w
// holding the C channels at (h, w), as x.flatten(2).transpose(1, 2) in PyTorch. A
// transpose of each sample's (C, H*W) matrix; backward transposes back. The input arrives
// plain (NCHW), not in a oneDNN blocked layout.
#include "layers/layer.h"

namespace ember {

class TokensFromFeatureMap final : public Layer {
 public:
  static std::unique_ptr<Layer> from_options(const Json& options);

  std::string_view kind() const override { return "tokens_from_feature_map"; }
  Json options() const override { return Json::object(); }
  Shape output_shape(std::span<const Shape> inputs) const override;
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;
};

}  // namespace ember
