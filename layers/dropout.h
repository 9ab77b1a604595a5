#pragma once
// Dropout: input (N, ...) -> output (N, ...). Training zeroes each element with
// probability p and scales the rest by 1/(1-p); inference is the identity. The mask of a
// sample depends only on the step's seed and the sample's index in the batch, so it is
// the same however the batch is split into micro-batches or threads.
#include "layers/layer.h"

namespace ember {

class Dropout final : public Layer {
 public:
  explicit Dropout(double probability);
  static std::unique_ptr<Layer> from_options(const Json& options);

  std::string_view kind() const override { return "dropout"; }
  Json options() const override { return Json{{"p", probability_}}; }
  Shape output_shape(std::span<const Shape> inputs) const override { return inputs[0]; }
  bool accepts_blocked_inputs() const override { return true; }
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;

 private:
  double probability_;
};

}  // namespace ember
