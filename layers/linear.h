#pragma once
// Linear: input (N, in_features) -> output (N, out_features), y = x W^T + b, with W
// (out_features, in_features) and b (out_features) as in PyTorch. An input of higher
// rank (N, ..., in_features) is treated as rows of in_features. In inference a following
// ReLU or GELU may be fused (PrepareContext::fused_activation): the GEMM applies it to
// each tile of the output while the tile is still in registers.
#include "layers/layer.h"

namespace ember {

class Linear final : public Layer {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias);
  static std::unique_ptr<Layer> from_options(const Json& options);

  std::string_view kind() const override { return "linear"; }
  Json options() const override;
  Shape output_shape(std::span<const Shape> inputs) const override;
  std::vector<ParameterSpec> parameters(std::span<const Shape> inputs) const override;
  bool fuses_following(FusedActivation activation) const override { return activation != FusedActivation::none; }
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;

 private:
  std::int64_t in_features_;
  std::int64_t out_features_;
  bool bias_;
};

}  // namespace ember
