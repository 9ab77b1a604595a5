#include "layers/global_avg_pool.h"

#include <optional>

#include "engine/error.h"
#include "layers/dnnl_util.h"
#include "layers/options.h"

namespace ember {
namespace {

using dnnl::memory;
using namespace dnnl_util;

class PreparedGlobalAvgPool final : public PreparedLayer {
 public:
  void forward(const ForwardArgs& args) const override {
    // Pooled in the layout oneDNN picked (the input's), then reordered to plain (N, C).
    std::byte* pooled = to_plain_ ? args.scratch + pooled_offset_ : reinterpret_cast<std::byte*>(args.output.data);
    PrimitiveArguments(engine_, "global_avg_pool forward")
        .add(DNNL_ARG_SRC, source_, args.inputs[0].data)
        .add(DNNL_ARG_DST, pooled_, pooled)
        .add(DNNL_ARG_SCRATCHPAD, forward_scratchpad_, args.scratch + scratchpad_offset_)
        .execute(forward_, *args.stream);
    if (to_plain_) {
      PrimitiveArguments(engine_, "global_avg_pool output to plain")
          .add(DNNL_ARG_FROM, pooled_, pooled)
          .add(DNNL_ARG_TO, output_, args.output.data)
          .execute(*to_plain_, *args.stream);
    }
  }

  void backward(const BackwardArgs& args) const override {
    if (args.input_grads[0].data == nullptr) return;
    const std::byte* pooled_grad = reinterpret_cast<const std::byte*>(args.output_grad.data);
    if (grad_to_pooled_) {
      std::byte* blocked = args.scratch + pooled_offset_;
      PrimitiveArguments(engine_, "global_avg_pool gradient to the pooled layout")
          .add(DNNL_ARG_FROM, output_, args.output_grad.data)
          .add(DNNL_ARG_TO, pooled_, blocked)
          .execute(*grad_to_pooled_, *args.stream);
      pooled_grad = blocked;
    }
    PrimitiveArguments(engine_, "global_avg_pool backward")
        .add(DNNL_ARG_DIFF_DST, pooled_, pooled_grad)
        .add(DNNL_ARG_DIFF_SRC, source_, args.input_grads[0].data)
        .add(DNNL_ARG_SCRATCHPAD, backward_scratchpad_, args.scratch + scratchpad_offset_)
        .execute(backward_, *args.stream);
  }

  dnnl::engine engine_;
  memory::desc source_, pooled_, output_, forward_scratchpad_, backward_scratchpad_;
  std::optional<dnnl::reorder> to_plain_, grad_to_pooled_;  // when oneDNN pools into a blocked layout
  std::size_t pooled_offset_ = 0, scratchpad_offset_ = 0;
  dnnl::pooling_forward::primitive_desc forward_pd_;
  dnnl::pooling_forward forward_;
  dnnl::pooling_backward backward_;
};

}  // namespace

std::unique_ptr<Layer> GlobalAvgPool::from_options(const Json& options) {
  LayerOptions(std::string_view("global_avg_pool"), options, {});
  return std::make_unique<GlobalAvgPool>();
}

Shape GlobalAvgPool::output_shape(std::span<const Shape> inputs) const {
  const Shape& x = inputs[0];
  if (x.rank() != 4) throw Error("global_avg_pool expects input (N, C, H, W), found " + x.str());
  return Shape{x[0], x[1]};
}

std::unique_ptr<PreparedLayer> GlobalAvgPool::prepare(const PrepareContext& context) const {
  const ValueInfo& input = context.inputs[0];
  const Shape y = output_shape(std::span<const Shape>(&input.shape, 1));
  const bool training = context.mode == Mode::training;
  auto p = std::make_unique<PreparedGlobalAvgPool>();
  p->engine_ = *context.engine;
  const memory::desc source = input.blocked ? input.blocked->desc : plain_desc(input.shape);
  // (N, C, 1, 1) row-major is (N, C) row-major. oneDNN's direct kernels pool a blocked
  // input only into the same blocked layout (with a plain one it runs its reference
  // kernel, 15% of a resnet step), so it picks, and a reorder makes it plain.
  const memory::desc output = plain_desc(Shape{y[0], y[1], 1, 1});
  const memory::desc any_output({y[0], y[1], 1, 1}, memory::data_type::f32, memory::format_tag::any);
  const memory::dims window{input.shape[2], input.shape[3]};
  const memory::dims strides{1, 1}, no_padding{0, 0};
  const auto attr = user_scratchpad();
  const auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const auto algorithm = dnnl::algorithm::pooling_avg_exclude_padding;
  p->forward_pd_ = dnnl::pooling_forward::primitive_desc(
      dnnl::pooling_forward::desc(prop, algorithm, source, input.blocked ? any_output : output, strides, window, no_padding,
                                  no_padding),
      attr, *context.engine);
  p->forward_ = dnnl::pooling_forward(p->forward_pd_);
  p->source_ = p->forward_pd_.src_desc();
  p->pooled_ = p->forward_pd_.dst_desc();
  p->output_ = output;
  p->forward_scratchpad_ = p->forward_pd_.scratchpad_desc();
  ScratchLayout scratch;
  if (p->pooled_ != output) {
    p->pooled_offset_ = scratch.add(p->pooled_.get_size());
    p->to_plain_ = dnnl::reorder(dnnl::reorder::primitive_desc(*context.engine, p->pooled_, *context.engine, output));
  }
  const std::size_t scratch_base = scratch.total();
  p->scratchpad_offset_ = scratch_base;
  p->forward_scratch_bytes = scratch_base + p->forward_scratchpad_.get_size();
  p->output.shape = y;
  p->backward_reads_inputs = false;
  // One add an input element; backward spreads each mean back, one multiply an element.
  p->forward_flops = input.shape.elements();
  p->backward_flops = p->forward_flops;
  if (training && !context.input_needs_grad.empty() && context.input_needs_grad[0]) {
    const dnnl::pooling_backward::primitive_desc backward_pd(
        dnnl::pooling_backward::desc(algorithm, source, p->pooled_, strides, window, no_padding, no_padding), attr,
        *context.engine, p->forward_pd_);
    p->backward_ = dnnl::pooling_backward(backward_pd);
    p->backward_scratchpad_ = backward_pd.scratchpad_desc();
    p->backward_scratch_bytes = scratch_base + p->backward_scratchpad_.get_size();
    if (p->to_plain_) {
      p->grad_to_pooled_ = dnnl::reorder(dnnl::reorder::primitive_desc(*context.engine, output, *context.engine, p->pooled_));
    }
  }
  return p;
}

}  // namespace ember
