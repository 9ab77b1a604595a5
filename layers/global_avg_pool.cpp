#include "layers/global_avg_pool.h"

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
    PrimitiveArguments(engine_, "global_avg_pool forward")
        .add(DNNL_ARG_SRC, source_, args.inputs[0].data)
        .add(DNNL_ARG_DST, output_, args.output.data)
        .add(DNNL_ARG_SCRATCHPAD, forward_scratchpad_, args.scratch)
        .execute(forward_, *args.stream);
  }

  void backward(const BackwardArgs& args) const override {
    if (args.input_grads[0].data == nullptr) return;
    PrimitiveArguments(engine_, "global_avg_pool backward")
        .add(DNNL_ARG_DIFF_DST, output_, args.output_grad.data)
        .add(DNNL_ARG_DIFF_SRC, source_, args.input_grads[0].data)
        .add(DNNL_ARG_SCRATCHPAD, backward_scratchpad_, args.scratch)
        .execute(backward_, *args.stream);
  }

  dnnl::engine engine_;
  memory::desc source_, output_, forward_scratchpad_, backward_scratchpad_;
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
  // (N, C, 1, 1) row-major is (N, C) row-major.
  const memory::desc output = plain_desc(Shape{y[0], y[1], 1, 1});
  const memory::dims window{input.shape[2], input.shape[3]};
  const memory::dims strides{1, 1}, no_padding{0, 0};
  const auto attr = user_scratchpad();
  const auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const auto algorithm = dnnl::algorithm::pooling_avg_exclude_padding;
  p->forward_pd_ = dnnl::pooling_forward::primitive_desc(
      dnnl::pooling_forward::desc(prop, algorithm, source, output, strides, window, no_padding, no_padding), attr, *context.engine);
  p->forward_ = dnnl::pooling_forward(p->forward_pd_);
  p->source_ = p->forward_pd_.src_desc();
  p->output_ = p->forward_pd_.dst_desc();
  p->forward_scratchpad_ = p->forward_pd_.scratchpad_desc();
  p->forward_scratch_bytes = p->forward_scratchpad_.get_size();
  p->output.shape = y;
  p->backward_reads_inputs = false;
  if (training && !context.input_needs_grad.empty() && context.input_needs_grad[0]) {
    const dnnl::pooling_backward::primitive_desc backward_pd(
        dnnl::pooling_backward::desc(algorithm, source, output, strides, window, no_padding, no_padding), attr, *context.engine,
        p->forward_pd_);
    p->backward_ = dnnl::pooling_backward(backward_pd);
    p->backward_scratchpad_ = backward_pd.scratchpad_desc();
    p->backward_scratch_bytes = p->backward_scratchpad_.get_size();
  }
  return p;
}

}  // namespace ember
