#include "layers/tokens_from_feature_map.h"

#include <algorithm>

#include "engine/error.h"
#include "layers/options.h"

namespace ember {
namespace {

// to (cols x rows) = transpose of from (rows x cols), in square tiles so that both the
// reads and the writes stay within a few cache lines at a time.
void transpose(float* to, const float* from, std::int64_t rows, std::int64_t cols) {
  constexpr std::int64_t tile = 16;
  for (std::int64_t r0 = 0; r0 < rows; r0 += tile) {
    const std::int64_t r1 = std::min(rows, r0 + tile);
    for (std::int64_t c0 = 0; c0 < cols; c0 += tile) {
      const std::int64_t c1 = std::min(cols, c0 + tile);
      for (std::int64_t c = c0; c < c1; ++c) {
        for (std::int64_t r = r0; r < r1; ++r) to[c * rows + r] = from[r * cols + c];
      }
    }
  }
}

class PreparedTokensFromFeatureMap final : public PreparedLayer {
 public:
  PreparedTokensFromFeatureMap(std::int64_t batch, std::int64_t channels, std::int64_t positions)
      : batch_(batch), channels_(channels), positions_(positions) {}

  // y[n] (H*W x C) = x[n] (C x H*W) transposed
  void forward(const ForwardArgs& args) const override {
    const std::int64_t per_sample = channels_ * positions_;
    for (std::int64_t n = 0; n < batch_; ++n) {
      transpose(args.output.data + n * per_sample, args.inputs[0].data + n * per_sample, channels_, positions_);
    }
  }

  // dx[n] (C x H*W) = dy[n] (H*W x C) transposed
  void backward(const BackwardArgs& args) const override {
    if (args.input_grads[0].data == nullptr) return;
    const std::int64_t per_sample = channels_ * positions_;
    for (std::int64_t n = 0; n < batch_; ++n) {
      transpose(args.input_grads[0].data + n * per_sample, args.output_grad.data + n * per_sample, positions_, channels_);
    }
  }

 private:
  std::int64_t batch_, channels_, positions_;
};

}  // namespace

std::unique_ptr<Layer> TokensFromFeatureMap::from_options(const Json& options) {
  LayerOptions::require_none("tokens_from_feature_map", options);
  return std::make_unique<TokensFromFeatureMap>();
}

Shape TokensFromFeatureMap::output_shape(std::span<const Shape> inputs) const {
  const Shape& x = inputs[0];
  if (x.rank() != 4) throw Error("tokens_from_feature_map expects input (N, C, H, W), found " + x.str());
  return Shape{x[0], x[2] * x[3], x[1]};
}

std::unique_ptr<PreparedLayer> TokensFromFeatureMap::prepare(const PrepareContext& context) const {
  const Shape& x = context.inputs[0].shape;
  auto prepared = std::make_unique<PreparedTokensFromFeatureMap>(x[0], x[1], x[2] * x[3]);
  prepared->output.shape = output_shape(std::span<const Shape>(&x, 1));
  prepared->backward_reads_inputs = false;
  return prepared;
}

}  // namespace ember
