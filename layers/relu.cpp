#include "layers/relu.h"

#include "layers/options.h"
#include "simd/activation.h"

namespace ember {
namespace {

class PreparedRelu final : public PreparedLayer {
 public:
  void forward(const ForwardArgs& args) const override {
    simd::activation_kernels().relu_forward(args.output.data, args.inputs[0].data, floats());
  }
  // ReLU's derivative from its output: y > 0 exactly where x > 0.
  void backward(const BackwardArgs& args) const override {
    if (args.input_grads[0].data == nullptr) return;
    simd::activation_kernels().relu_backward(args.input_grads[0].data, args.output_grad.data, args.output.data, floats());
  }

 private:
  // Padding of blocked layouts included: relu(0) = 0 keeps it zero.
  std::int64_t floats() const { return static_cast<std::int64_t>(output.bytes() / sizeof(float)); }
};

}  // namespace

std::unique_ptr<Layer> Relu::from_options(const Json& options) {
  LayerOptions::require_none("relu", options);
  return std::make_unique<Relu>();
}

std::unique_ptr<PreparedLayer> Relu::prepare(const PrepareContext& context) const {
  auto prepared = std::make_unique<PreparedRelu>();
  prepared->output = context.inputs[0];
  prepared->backward_reads_inputs = false;
  prepared->backward_reads_output = true;
  prepared->can_run_in_place = true;
  // One compare (forward: max(0, x); backward: the mask) an element.
  prepared->forward_flops = context.inputs[0].shape.elements();
  prepared->backward_flops = prepared->forward_flops;
  return prepared;
}

}  // namespace ember
