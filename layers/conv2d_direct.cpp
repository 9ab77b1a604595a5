#include "layers/conv2d_direct.h"

#include <cstdint>

#include "engine/error.h"
#include "simd/conv.h"
#include "simd/conv_pool_grad.h"

namespace ember {
namespace {

// Inference of a conv with few input channels (a network's first): the bias and a fused
// ReLU and pool in the kernel. oneDNN's blocked kernels spend most of each vector on
// padding channels there.
class PreparedDirectConv2d final : public PreparedLayer {
 public:
  void forward(const ForwardArgs& args) const override {
    simd::DirectConvShape shape = shape_;
    shape.batch = args.inputs[0].shape[0];
    simd::conv_kernels().direct_conv2d_forward(args.output.data, args.inputs[0].data, args.params[0].data,
                                               bias_ ? args.params[1].data : nullptr, reinterpret_cast<float*>(args.scratch), shape);
  }
  void backward(const BackwardArgs&) const override { throw Error("conv2d: the direct kernel is prepared for inference only"); }

  simd::DirectConvShape shape_;
  bool bias_ = true;
};

// Training's conv + 2x2 max pool. Saved: the winners, one byte per pooled output.
class PreparedDirectConvPoolTraining final : public PreparedLayer {
 public:
  void forward(const ForwardArgs& args) const override {
    simd::DirectConvShape shape = shape_;
    shape.batch = args.inputs[0].shape[0];
    simd::conv_kernels().direct_conv2d_pool_forward(args.output.data, reinterpret_cast<std::uint8_t*>(args.saved), args.inputs[0].data,
                                                    args.params[0].data, bias_ ? args.params[1].data : nullptr,
                                                    reinterpret_cast<float*>(args.scratch), shape);
  }

  void backward(const BackwardArgs& args) const override {
    if (args.input_grads[0].data != nullptr) {
      throw Error("conv2d: the fused conv + max pool was prepared for an input that needs no gradient, and one was asked for");
    }
    simd::DirectConvShape shape = shape_;
    shape.batch = args.inputs[0].shape[0];
    simd::conv_pool_grad_kernels().direct_conv2d_pool_weight_grad(
        args.param_grads[0].data, bias_ ? args.param_grads[1].data : nullptr, args.output_grad.data,
        reinterpret_cast<const std::uint8_t*>(args.saved), args.inputs[0].data, reinterpret_cast<float*>(args.scratch), shape,
        args.accumulate_param_grads);
  }

  simd::DirectConvShape shape_;
  bool bias_ = true;
};

template <class Prepared>
std::unique_ptr<Prepared> prepared_with_shape(const Conv2dOptions& o, const PrepareContext& context) {
  auto p = std::make_unique<Prepared>();
  const Shape& in = context.inputs[0].shape;
  p->shape_ = simd::DirectConvShape{in[0], o.in_channels, o.out_channels, in[2], in[3], o.kernel[0], o.kernel[1],
                                    o.padding[0], o.padding[1], context.fused_activation == FusedActivation::relu,
                                    context.fuse_max_pool};
  p->bias_ = o.bias;
  p->output.shape = Shape{in[0], o.out_channels, p->shape_.out_h(), p->shape_.out_w()};
  p->forward_scratch_bytes = simd::direct_conv2d_scratch_floats(p->shape_) * sizeof(float);
  return p;
}

}  // namespace

std::unique_ptr<PreparedLayer> prepare_direct_conv2d(const Conv2dOptions& o, const PrepareContext& context) {
  if (context.mode == Mode::inference) {
    auto p = prepared_with_shape<PreparedDirectConv2d>(o, context);
    p->backward_reads_inputs = false;
    return p;
  }
  const bool input_grad = !context.input_needs_grad.empty() && context.input_needs_grad[0] != 0;
  if (!context.fuse_max_pool || context.fused_activation != FusedActivation::none || input_grad) {
    throw Error("conv2d: training runs the direct kernel only with a fused max pool, no fused activation, and an input that "
                "needs no gradient");
  }
  auto p = prepared_with_shape<PreparedDirectConvPoolTraining>(o, context);
  p->forward_scratch_bytes = simd::direct_conv2d_pool_forward_scratch_floats(p->shape_) * sizeof(float);
  p->saved_bytes = static_cast<std::size_t>(p->output.shape.elements());
  p->backward_scratch_bytes = simd::direct_conv2d_pool_grad_scratch_floats(p->shape_) * sizeof(float);
  p->backward_reads_inputs = true;
  return p;
}

}  // namespace ember
