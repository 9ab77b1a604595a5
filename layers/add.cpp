#include "layers/add.h"

#include <array>
#include <cstring>
#include <optional>

#include "engine/error.h"
#include "layers/dnnl_util.h"
#include "layers/options.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

// The output takes the first input's layout (plain or oneDNN's blocked one): residual
// connections add two conv feature maps, and keeping them blocked keeps the next conv on
// oneDNN's direct kernels. Padding lanes of blocked layouts are zero in both inputs, so
// adding whole buffers keeps them zero. When the second input's layout differs it is
// reordered into the first's (and its gradient back) with oneDNN.
class PreparedAdd final : public PreparedLayer {
 public:
  void forward(const ForwardArgs& args) const override {
    const float* second = args.inputs[1].data;
    if (second_to_first_) {
      second = reinterpret_cast<const float*>(args.scratch);
      dnnl_util::PrimitiveArguments(*engine_, "add: reorder of the second input")
          .add(DNNL_ARG_FROM, second_desc_, args.inputs[1].data)
          .add(DNNL_ARG_TO, first_desc_, second)
          .execute(*second_to_first_, *args.stream);
    }
    simd::elementwise_kernels().add(args.output.data, args.inputs[0].data, second, floats_);
  }

  // d(a + b)/da = d(a + b)/db = 1: both input gradients are the output gradient.
  void backward(const BackwardArgs& args) const override {
    if (args.input_grads[0].data != nullptr) {
      std::memcpy(args.input_grads[0].data, args.output_grad.data, static_cast<std::size_t>(floats_) * sizeof(float));
    }
    if (args.input_grads[1].data == nullptr) return;
    if (!gradient_to_second_) {
      std::memcpy(args.input_grads[1].data, args.output_grad.data, static_cast<std::size_t>(floats_) * sizeof(float));
      return;
    }
    dnnl_util::PrimitiveArguments(*engine_, "add: reorder of the second input's gradient")
        .add(DNNL_ARG_FROM, first_desc_, args.output_grad.data)
        .add(DNNL_ARG_TO, second_desc_, args.input_grads[1].data)
        .execute(*gradient_to_second_, *args.stream);
  }

  std::int64_t floats_ = 0;  // of the output's buffer, padding included
  const dnnl::engine* engine_ = nullptr;
  dnnl::memory::desc first_desc_, second_desc_;
  std::optional<dnnl::reorder> second_to_first_, gradient_to_second_;
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
  const ValueInfo& first = context.inputs[0];
  const ValueInfo& second = context.inputs[1];
  prepared->output.shape = output_shape(std::array<Shape, 2>{first.shape, second.shape});
  prepared->output.blocked = first.blocked;
  prepared->floats_ = static_cast<std::int64_t>(first.bytes() / sizeof(float));
  prepared->first_desc_ = first.blocked ? first.blocked->desc : dnnl_util::plain_desc(first.shape);
  prepared->second_desc_ = second.blocked ? second.blocked->desc : dnnl_util::plain_desc(second.shape);
  if (prepared->first_desc_ != prepared->second_desc_) {
    const dnnl::engine& engine = *context.engine;
    prepared->engine_ = &engine;
    prepared->second_to_first_ = dnnl::reorder(
        dnnl::reorder::primitive_desc(engine, prepared->second_desc_, engine, prepared->first_desc_));
    if (context.mode == Mode::training) {
      prepared->gradient_to_second_ = dnnl::reorder(
          dnnl::reorder::primitive_desc(engine, prepared->first_desc_, engine, prepared->second_desc_));
    }
    prepared->forward_scratch_bytes = first.bytes();
  }
  prepared->backward_reads_inputs = false;
  prepared->can_run_in_place = true;  // elementwise: each output element reads only its own inputs
  prepared->forward_flops = prepared->output.shape.elements();  // backward hands the gradient on
  return prepared;
}

}  // namespace ember
