#pragma once
// MaxPool2d and AvgPool2d on oneDNN: input (N, C, H, W) -> output (N, C, H_out, W_out),
// H_out = floor((H + 2 padding - kernel) / stride) + 1 (PyTorch, ceil_mode=False). Max
// pooling keeps oneDNN's workspace (the argmax) from forward to backward as a planned
// tensor; inputs and outputs stay in whatever layout oneDNN uses.
#include <array>

#include "layers/layer.h"

namespace ember {

enum class PoolKind { max, average };

struct Pool2dOptions {
  PoolKind kind = PoolKind::max;
  std::array<std::int64_t, 2> kernel{2, 2};
  std::array<std::int64_t, 2> stride{2, 2};
  std::array<std::int64_t, 2> padding{0, 0};
  bool count_include_pad = true;  // average only, PyTorch's default
};

class Pool2d final : public Layer {
 public:
  explicit Pool2d(const Pool2dOptions& options);
  static std::unique_ptr<Layer> max_from_options(const Json& options);
  static std::unique_ptr<Layer> average_from_options(const Json& options);

  std::string_view kind() const override { return options_.kind == PoolKind::max ? "max_pool2d" : "avg_pool2d"; }
  Json options() const override;
  Shape output_shape(std::span<const Shape> inputs) const override;
  bool accepts_blocked_inputs() const override { return true; }
  bool is_max_pool_2x2() const override;
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;

 private:
  Pool2dOptions options_;
};

}  // namespace ember
