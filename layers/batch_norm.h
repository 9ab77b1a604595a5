#pragma once
// BatchNorm1d and BatchNorm2d, as torch.nn.BatchNorm1d / BatchNorm2d(num_features, eps,
// momentum, affine, track_running_stats):
//   batch_norm2d: input (N, C, H, W);  batch_norm1d: input (N, C) or (N, C, L)
//   y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]
//
// Training (and inference without running statistics) normalizes with the statistics of
// the whole batch, biased variance, over N and the spatial positions: a batch-level layer
// (PreparedLayer::forward_reduces): each micro-batch's (mean, M2) per channel, combined in
// micro-batch order (Chan, Golub, LeVeque), then the normalization. Backward likewise sums
// dy and dy * xhat per channel over the batch before any input gradient:
//   dx = weight * invstd * (dy - sum(dy) / M - xhat * sum(dy * xhat) / M),  M = N * spatial.
// Training updates the buffers running_mean and running_var (unbiased variance) with
// `momentum`, or with the cumulative average 1 / num_batches_tracked when momentum is null,
// and counts num_batches_tracked. Inference with running statistics is a per-channel affine.
//
// The input may be plain, NHWC-like or oneDNN's nChw8c / nChw16c (any layout that keeps
// channels in blocks, simd/batch_norm.h); the output keeps the input's layout.
#include <optional>
#include <string>

#include "layers/layer.h"

namespace ember {

struct BatchNormOptions {
  std::int64_t num_features = 0;
  double eps = 1e-5;
  std::optional<double> momentum = 0.1;  // nullopt: cumulative moving average
  bool affine = true;
  bool track_running_stats = true;
};

class BatchNorm final : public Layer {
 public:
  // spatial_rank: 2 for batch_norm2d; 1 for batch_norm1d (input rank 2 or 3).
  BatchNorm(int spatial_rank, const BatchNormOptions& options);
  static std::unique_ptr<Layer> from_options_1d(const Json& options);
  static std::unique_ptr<Layer> from_options_2d(const Json& options);

  std::string_view kind() const override { return spatial_rank_ == 2 ? "batch_norm2d" : "batch_norm1d"; }
  Json options() const override;
  Shape output_shape(std::span<const Shape> inputs) const override;
  std::vector<ParameterSpec> parameters(std::span<const Shape> inputs) const override;
  std::vector<ParameterSpec> buffers(std::span<const Shape> inputs) const override;
  bool accepts_blocked_inputs() const override { return true; }
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;

  const BatchNormOptions& batch_norm_options() const { return options_; }

 private:
  int spatial_rank_;
  BatchNormOptions options_;
};

}  // namespace ember
