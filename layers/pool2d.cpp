#include "layers/pool2d.h"

#include <algorithm>

#include "engine/error.h"
#include "layers/dnnl_util.h"
#include "layers/options.h"
#include "layers/window.h"

namespace ember {
namespace {

using dnnl::memory;
using namespace dnnl_util;

class PreparedPool2d final : public PreparedLayer {
 public:
  void forward(const ForwardArgs& args) const override {
    PrimitiveArguments arguments(engine_, "pool2d forward");
    arguments.add(DNNL_ARG_SRC, source_, args.inputs[0].data)
        .add(DNNL_ARG_DST, output_, args.output.data)
        .add(DNNL_ARG_SCRATCHPAD, forward_scratchpad_, args.scratch);
    if (has_workspace_) arguments.add(DNNL_ARG_WORKSPACE, workspace_, args.saved);
    arguments.execute(forward_, *args.stream);
  }

  void backward(const BackwardArgs& args) const override {
    if (args.input_grads[0].data == nullptr) return;
    PrimitiveArguments arguments(engine_, "pool2d backward");
    arguments.add(DNNL_ARG_DIFF_DST, output_, args.output_grad.data)
        .add(DNNL_ARG_DIFF_SRC, source_, args.input_grads[0].data)
        .add(DNNL_ARG_SCRATCHPAD, backward_scratchpad_, args.scratch);
    if (has_workspace_) arguments.add(DNNL_ARG_WORKSPACE, workspace_, args.saved);
    arguments.execute(backward_, *args.stream);
  }

  dnnl::engine engine_;
  bool has_workspace_ = false;
  // The layouts the primitives take, queried once in prepare(): primitive_desc's queries
  // build a std::vector on every call.
  memory::desc source_, output_, workspace_, forward_scratchpad_, backward_scratchpad_;
  dnnl::pooling_forward::primitive_desc forward_pd_;
  dnnl::pooling_forward forward_;
  dnnl::pooling_backward::primitive_desc backward_pd_;
  dnnl::pooling_backward backward_;
};

Pool2dOptions parse(PoolKind kind, const Json& json) {
  const bool average = kind == PoolKind::average;
  const LayerOptions o(average ? "avg_pool2d" : "max_pool2d", json,
                       average ? std::initializer_list<std::string_view>{"kernel", "stride", "padding", "count_include_pad"}
                               : std::initializer_list<std::string_view>{"kernel", "stride", "padding"});
  Pool2dOptions options;
  options.kind = kind;
  options.kernel = o.pair("kernel", 1);
  options.stride = o.pair("stride", 1, options.kernel);
  options.padding = o.pair("padding", 0, {0, 0});
  if (average) options.count_include_pad = o.boolean("count_include_pad", true);
  return options;
}

}  // namespace

Pool2d::Pool2d(const Pool2dOptions& options) : options_(options) {
  const std::string kind(this->kind());
  auto check_pair = [&](const char* name, const std::array<std::int64_t, 2>& value, std::int64_t minimum) {
    if (value[0] < minimum || value[1] < minimum) {
      throw_option_error(kind, name, std::string(minimum > 0 ? "positive integers" : "non-negative integers"), pair_json(value));
    }
  };
  check_pair("kernel", options.kernel, 1);
  check_pair("stride", options.stride, 1);
  check_pair("padding", options.padding, 0);
  for (std::size_t a = 0; a < 2; ++a) {
    if (options.padding[a] > options.kernel[a] / 2) {  // 2 padding > kernel, without overflow
      throw_option_error(kind, "padding", "at most half the kernel " + pair_json(options.kernel).dump() + " in each axis",
                         pair_json(options.padding));
    }
  }
}

std::unique_ptr<Layer> Pool2d::max_from_options(const Json& json) { return std::make_unique<Pool2d>(parse(PoolKind::max, json)); }

std::unique_ptr<Layer> Pool2d::average_from_options(const Json& json) {
  return std::make_unique<Pool2d>(parse(PoolKind::average, json));
}

Json Pool2d::options() const {
  Json json{{"kernel", pair_json(options_.kernel)}, {"stride", pair_json(options_.stride)}, {"padding", pair_json(options_.padding)}};
  if (options_.kind == PoolKind::average) json["count_include_pad"] = options_.count_include_pad;
  return json;
}

bool Pool2d::is_max_pool_2x2() const {
  const std::array<std::int64_t, 2> two{2, 2}, zero{0, 0};
  return options_.kind == PoolKind::max && options_.kernel == two && options_.stride == two && options_.padding == zero;
}

Shape Pool2d::output_shape(std::span<const Shape> inputs) const {
  const Shape& x = inputs[0];
  if (x.rank() != 4) throw Error(std::string(kind()) + " expects input (N, C, H, W), found " + x.str());
  Shape y{x[0], x[1], 0, 0};
  for (int axis = 0; axis < 2; ++axis) {
    const auto a = static_cast<std::size_t>(axis);
    const std::int64_t size = sliding_window_output(x[2 + axis], options_.kernel[a], options_.stride[a], options_.padding[a], 1,
                                                    std::string(kind()) + ": " + (axis == 0 ? "height" : "width"));
    if (size < 1) {
      throw Error(std::string(kind()) + ": input " + x.str() + " is smaller than the kernel " + std::to_string(options_.kernel[a]));
    }
    y[2 + axis] = size;
  }
  return y;
}

std::unique_ptr<PreparedLayer> Pool2d::prepare(const PrepareContext& context) const {
  const ValueInfo& input = context.inputs[0];
  const Shape out_shape = output_shape(std::span<const Shape>(&input.shape, 1));
  const bool training = context.mode == Mode::training;
  auto p = std::make_unique<PreparedPool2d>();
  p->engine_ = *context.engine;
  const memory::desc source = input.blocked ? input.blocked->desc : plain_desc(input.shape);
  const memory::desc output_any(dims_of(out_shape), memory::data_type::f32, memory::format_tag::any);
  const memory::dims strides{options_.stride[0], options_.stride[1]};
  const memory::dims kernel{options_.kernel[0], options_.kernel[1]};
  const memory::dims padding_left{options_.padding[0], options_.padding[1]};
  memory::dims padding_right(2);
  for (std::size_t a = 0; a < 2; ++a) {
    padding_right[a] = std::max<std::int64_t>(
        0, (out_shape[2 + static_cast<int>(a)] - 1) * options_.stride[a] + options_.kernel[a] - input.shape[2 + static_cast<int>(a)] -
               options_.padding[a]);
  }
  const auto algorithm = options_.kind == PoolKind::max ? dnnl::algorithm::pooling_max
                         : options_.count_include_pad   ? dnnl::algorithm::pooling_avg_include_padding
                                                        : dnnl::algorithm::pooling_avg_exclude_padding;
  const auto attr = user_scratchpad();
  const auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const dnnl::pooling_forward::desc forward_desc(prop, algorithm, source, output_any, strides, kernel, padding_left, padding_right);
  p->forward_pd_ = dnnl::pooling_forward::primitive_desc(forward_desc, attr, *context.engine);
  p->forward_ = dnnl::pooling_forward(p->forward_pd_);
  p->source_ = p->forward_pd_.src_desc();
  p->output_ = p->forward_pd_.dst_desc();
  p->workspace_ = p->forward_pd_.workspace_desc();
  p->forward_scratchpad_ = p->forward_pd_.scratchpad_desc();
  p->has_workspace_ = training && options_.kind == PoolKind::max;
  p->saved_bytes = p->has_workspace_ ? p->forward_pd_.workspace_desc().get_size() : 0;
  p->forward_scratch_bytes = p->forward_pd_.scratchpad_desc().get_size();
  const memory::desc output_desc = p->forward_pd_.dst_desc();
  p->output.shape = out_shape;
  if (output_desc != plain_desc(out_shape)) p->output.blocked = make_blocked_layout(output_desc);
  p->backward_reads_inputs = false;  // max pooling reads its workspace, average pooling nothing
  // One compare or add per window element of each output; backward: average pooling
  // spreads each gradient over its window, max pooling puts it in one place.
  const std::int64_t window_elements = out_shape.elements() * options_.kernel[0] * options_.kernel[1];
  p->forward_flops = window_elements;
  p->backward_flops = options_.kind == PoolKind::max ? out_shape.elements() : window_elements;

  if (training && !context.input_needs_grad.empty() && context.input_needs_grad[0]) {
    const dnnl::pooling_backward::desc backward_desc(algorithm, source, output_desc, strides, kernel, padding_left, padding_right);
    p->backward_pd_ = dnnl::pooling_backward::primitive_desc(backward_desc, attr, *context.engine, p->forward_pd_);
    p->backward_ = dnnl::pooling_backward(p->backward_pd_);
    p->backward_scratchpad_ = p->backward_pd_.scratchpad_desc();
    p->backward_scratch_bytes = p->backward_pd_.scratchpad_desc().get_size();
  }
  return p;
}

}  // namespace ember
