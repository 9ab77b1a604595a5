#include "layers/dropout.h"

#include <cstring>
#include <string>

#include "engine/error.h"
#include "layers/options.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

class PreparedDropout final : public PreparedLayer {
 public:
  PreparedDropout(float probability, std::int64_t batch) : probability_(probability), batch_(batch) {}

  void forward(const ForwardArgs& args) const override {
    const std::int64_t n = floats();
    if (args.mode == Mode::inference || probability_ == 0.0f) {
      if (args.output.data != args.inputs[0].data) {
        std::memcpy(args.output.data, args.inputs[0].data, static_cast<std::size_t>(n) * sizeof(float));
      }
      if (args.saved != nullptr) std::memset(args.saved, 1, static_cast<std::size_t>(n));
      return;
    }
    auto* mask = reinterpret_cast<std::uint8_t*>(args.saved);
    const std::int64_t per_sample = n / batch_;
    const auto first = static_cast<std::uint64_t>(args.first_sample * per_sample);
    for (std::int64_t i = 0; i < n; ++i) {
      mask[i] = args.random.uniform(first + static_cast<std::uint64_t>(i)) >= probability_ ? 1 : 0;
    }
    simd::elementwise_kernels().masked_scale(args.output.data, args.inputs[0].data, mask, 1.0f / (1.0f - probability_), n);
  }

  void backward(const BackwardArgs& args) const override {
    if (args.input_grads[0].data == nullptr) return;
    const auto* mask = reinterpret_cast<const std::uint8_t*>(args.saved);
    simd::elementwise_kernels().masked_scale(args.input_grads[0].data, args.output_grad.data, mask,
                                             1.0f / (1.0f - probability_), floats());
  }

 private:
  std::int64_t floats() const { return static_cast<std::int64_t>(output.bytes() / sizeof(float)); }
  float probability_;
  std::int64_t batch_;
};

}  // namespace

Dropout::Dropout(double probability) : probability_(probability) {
  // p = 1 would scale the survivors by 1/(1 - p) = inf.
  if (!(probability >= 0.0 && probability < 1.0)) {
    throw Error("dropout: option \"p\" must be in [0, 1), found " + std::to_string(probability));
  }
}

std::unique_ptr<Layer> Dropout::from_options(const Json& options) {
  const LayerOptions o("dropout", options, {"p"});
  return std::make_unique<Dropout>(o.number("p", 0.5, 0.0, 1.0));
}

std::unique_ptr<PreparedLayer> Dropout::prepare(const PrepareContext& context) const {
  auto prepared = std::make_unique<PreparedDropout>(static_cast<float>(probability_), context.inputs[0].shape[0]);
  prepared->output = context.inputs[0];
  prepared->backward_reads_inputs = false;
  prepared->saved_bytes = context.mode == Mode::training ? context.inputs[0].bytes() / sizeof(float) : 0;
  prepared->can_run_in_place = context.mode == Mode::inference;
  if (context.mode == Mode::training) {  // a multiply by the kept mask an element, each way
    prepared->forward_flops = context.inputs[0].shape.elements();
    prepared->backward_flops = prepared->forward_flops;
  }
  return prepared;
}

}  // namespace ember
