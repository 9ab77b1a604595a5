#include "layers/flatten.h"

#include <cstring>

#include "layers/options.h"

namespace ember {
namespace {

// The data does not change, only the shape: a copy, or nothing when the executor let the
// output share the input's memory.
void copy(float* to, const float* from, std::int64_t n) {
  if (to != from) std::memcpy(to, from, static_cast<std::size_t>(n) * sizeof(float));
}

class PreparedFlatten final : public PreparedLayer {
 public:
  void forward(const ForwardArgs& args) const override {
    copy(args.output.data, args.inputs[0].data, args.output.elements());
  }
  void backward(const BackwardArgs& args) const override {
    if (args.input_grads[0].data != nullptr) copy(args.input_grads[0].data, args.output_grad.data, args.output_grad.elements());
  }
};

}  // namespace

std::unique_ptr<Layer> Flatten::from_options(const Json& options) {
  LayerOptions::require_none("flatten", options);
  return std::make_unique<Flatten>();
}

Shape Flatten::output_shape(std::span<const Shape> inputs) const {
  return Shape{inputs[0][0], inputs[0].sample_elements()};
}

std::unique_ptr<PreparedLayer> Flatten::prepare(const PrepareContext& context) const {
  auto prepared = std::make_unique<PreparedFlatten>();
  prepared->output.shape = output_shape(std::span<const Shape>(&context.inputs[0].shape, 1));
  prepared->backward_reads_inputs = false;
  prepared->can_run_in_place = true;
  return prepared;
}

}  // namespace ember
