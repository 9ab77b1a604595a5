#include "layers/gelu.h"

#include "layers/options.h"
#include "simd/activation.h"

namespace ember {
namespace {

class PreparedGelu final : public PreparedLayer {
 public:
  explicit PreparedGelu(GeluApproximation approximate) : approximate_(approximate) {}

  void forward(const ForwardArgs& args) const override {
    const simd::ActivationKernels& k = simd::activation_kernels();
    (approximate_ == GeluApproximation::tanh ? k.gelu_tanh_forward : k.gelu_forward)(args.output.data, args.inputs[0].data,
                                                                                     floats());
  }

  void backward(const BackwardArgs& args) const override {
    if (args.input_grads[0].data == nullptr) return;
    const simd::ActivationKernels& k = simd::activation_kernels();
    (approximate_ == GeluApproximation::tanh ? k.gelu_tanh_backward : k.gelu_backward)(
        args.input_grads[0].data, args.output_grad.data, args.inputs[0].data, floats());
  }

 private:
  // Padding of blocked layouts included.
  std::int64_t floats() const { return static_cast<std::int64_t>(output.bytes() / sizeof(float)); }
  GeluApproximation approximate_;
};

}  // namespace

std::unique_ptr<Layer> Gelu::from_options(const Json& options) {
  const LayerOptions o("gelu", options, {"approximate"});
  const std::string approximate = o.choice("approximate", {"none", "tanh"}, "none");
  return std::make_unique<Gelu>(approximate == "tanh" ? GeluApproximation::tanh : GeluApproximation::none);
}

Json Gelu::options() const { return Json{{"approximate", approximate_ == GeluApproximation::tanh ? "tanh" : "none"}}; }

std::unique_ptr<PreparedLayer> Gelu::prepare(const PrepareContext& context) const {
  auto prepared = std::make_unique<PreparedGelu>(approximate_);
  prepared->output = context.inputs[0];
  prepared->backward_reads_inputs = true;
  prepared->can_run_in_place = context.mode == Mode::inference;
  return prepared;
}

}  // namespace ember
