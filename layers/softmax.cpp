#include "layers/softmax.h"

#include "layers/options.h"
#include "simd/softmax.h"

namespace ember {
namespace {

class PreparedSoftmax final : public PreparedLayer {
 public:
  PreparedSoftmax(std::int64_t rows, std::int64_t cols) : rows_(rows), cols_(cols) {}
  void forward(const ForwardArgs& args) const override {
    simd::softmax_kernels().softmax_forward(args.output.data, args.inputs[0].data, rows_, cols_);
  }
  void backward(const BackwardArgs& args) const override {
    if (args.input_grads[0].data == nullptr) return;
    simd::softmax_kernels().softmax_backward(args.input_grads[0].data, args.output_grad.data, args.output.data, rows_, cols_);
  }

 private:
  std::int64_t rows_, cols_;
};

}  // namespace

std::unique_ptr<Layer> Softmax::from_options(const Json& options) {
  LayerOptions::require_none("softmax", options);
  return std::make_unique<Softmax>();
}

std::unique_ptr<PreparedLayer> Softmax::prepare(const PrepareContext& context) const {
  const Shape& x = context.inputs[0].shape;
  const std::int64_t cols = x[x.rank() - 1];
  auto prepared = std::make_unique<PreparedSoftmax>(x.elements() / cols, cols);
  prepared->output.shape = x;
  prepared->backward_reads_inputs = false;
  prepared->backward_reads_output = true;
  return prepared;
}

}  // namespace ember
