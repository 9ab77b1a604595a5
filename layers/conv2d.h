#pragma once
// Conv2d on oneDNN: input (N, C_in, H, W) -> output (N, C_out, H_out, W_out) with
// H_out = floor((H + 2 padding - dilation (kernel - 1) - 1) / stride) + 1 (PyTorch's
// nn.Conv2d). Weights (C_out, C_in, kH, kW) and bias (C_out) are kept in PyTorch's
// layout; the output stays in the layout oneDNN chose (nChw16c, ...). In inference a
// following ReLU may be fused (PrepareContext::fused_activation): output max(0, conv(input)).
// Inference with at most 4 input channels and fewer than 16 output channels (a first conv,
// where oneDNN's blocked kernels waste most of each vector), stride 1 and no dilation runs
// simd's direct kernel instead, output in plain NCHW, and may fuse a following 2x2 max
// pool (PrepareContext::fuse_max_pool). Training runs the direct kernel only with the pool
// fused, for an input that needs no gradient (layers/conv2d_direct.h).
#include <array>

#include "layers/layer.h"

namespace ember {

struct Conv2dOptions {
  std::int64_t in_channels = 1;
  std::int64_t out_channels = 1;
  std::array<std::int64_t, 2> kernel{1, 1};
  std::array<std::int64_t, 2> stride{1, 1};
  std::array<std::int64_t, 2> padding{0, 0};
  std::array<std::int64_t, 2> dilation{1, 1};
  bool bias = true;
};

class Conv2d final : public Layer {
 public:
  explicit Conv2d(const Conv2dOptions& options);
  static std::unique_ptr<Layer> from_options(const Json& options);

  std::string_view kind() const override { return "conv2d"; }
  Json options() const override;
  Shape output_shape(std::span<const Shape> inputs) const override;
  std::vector<ParameterSpec> parameters(std::span<const Shape> inputs) const override;
  bool accepts_blocked_inputs() const override { return true; }
  // In inference, as a oneDNN post-op: the ReLU runs on the output while it is in cache.
  bool fuses_following(FusedActivation activation) const override { return activation == FusedActivation::relu; }
  // With few input channels (the direct kernel, simd/conv.h): the pool runs on the conv's
  // output while it is in registers (in training, for an input that needs no gradient).
  bool fuses_following_max_pool() const override;
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;

 private:
  std::unique_ptr<PreparedLayer> prepare_layer(const PrepareContext& context) const;
  Conv2dOptions options_;
};

}  // namespace ember
