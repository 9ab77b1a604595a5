#include "layers/add.h"

#include <array>
#include <cstring>

#include "engine/error.h"
#include "layers/options.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

class PreparedAdd final : public PreparedLayer {
 public:
  void forward(const ForwardArgs& args) const override {
    simd::elementwise_kernels().add(args.output.data, args.inputs[0].data, args.inputs[1].data, args.output.elements());
  }

  // d(a + b)/da = d(a + b)/db = 1: both input gradients are the output gradient.
  void backward(const BackwardArgs& args) const override {
    const auto bytes = static_cast<std::size_t>(args.output_grad.elements()) * sizeof(float);
    for (const Tensor& grad : args.input_grads) {
      if (grad.data != nullptr) std::memcpy(grad.data, args.output_grad.data, bytes);
    }
  }
};

}  // namespace

std::unique_ptr<Layer> Add::from_options(const Json& options) {
  LayerOptions::require_none("add", options);
  return std::make_unique<Add>();
}

Shape Add::output_shape(std::span<const Shape> inputs) const {
  if (inputs.size() != 2) throw Error("add takes 2 inputs, found " + std::to_string(inputs.size()));
  if (!(inputs[0] == inputs[1])) {
    throw Error("add needs inputs of one shape, found " + inputs[0].str() + " and " + inputs[1].str());
  }
  return inputs[0];
}

std::unique_ptr<PreparedLayer> Add::prepare(const PrepareContext& context) const {
  auto prepared = std::make_unique<PreparedAdd>();
  prepared->output.shape = output_shape(std::array<Shape, 2>{context.inputs[0].shape, context.inputs[1].shape});
  prepared->backward_reads_inputs = false;
  prepared->can_run_in_place = true;  // elementwise: each output element reads only its own inputs
  return prepared;
}

}  // namespace ember
