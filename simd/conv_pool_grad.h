#pragma once
// The parameter gradients of training's fused direct conv + 2x2 max pool (simd/conv.h's
// direct_conv2d_pool_forward), for a conv whose input needs no gradient (a network's first).
// The pool passes each pooled output's gradient g to its window's winning conv position
// alone, so with win(p) the conv position that won pooled output p:
//
//   weight_grad[o, c, ky, kx] = sum over n, p of g[n, o, p] * in[n, c, win(p) + (ky, kx) - pad]
//   bias_grad[o]              = sum over n, p of g[n, o, p]
//
// (in outside the image reads 0): a quarter of the multiply-adds of the unpooled conv's
// weight gradient. Vectors run along pooled columns; each lane picks its winner's input
// from the window's four candidates by select, not by multiplying the other three by 0.
#include <cstddef>
#include <cstdint>

#include "simd/conv.h"
#include "simd/dispatch.h"

namespace ember::simd {

// Floats of scratch direct_conv2d_pool_weight_grad needs (one image's padded, split input,
// the per-lane sums, one image's winners as floats). Independent of the instruction set
// and of shape.batch.
std::size_t direct_conv2d_pool_grad_scratch_floats(const DirectConvShape& shape);

struct ConvPoolGradKernels {
  // weight_grad (out_channels, in_channels, kernel_h, kernel_w); bias_grad (out_channels)
  // or null; output_grad and winners (batch, out_channels, out_h, out_w), winners from the
  // forward; in (batch,
  // in_channels, height, width); shape.pool set. accumulate: add this batch's sums to the
  // gradients instead of overwriting them. Every sum is formed in one fixed order (per
  // lane over images, rows and column vectors, then the lanes in order), whatever calls
  // it how often, so the bits depend only on the inputs.
  void (*direct_conv2d_pool_weight_grad)(float* weight_grad, float* bias_grad, const float* output_grad,
                                         const std::uint8_t* winners, const float* in, float* scratch,
                                         const DirectConvShape& shape, bool accumulate);
};

template <class Arch>
ConvPoolGradKernels make_conv_pool_grad_kernels();
const ConvPoolGradKernels& conv_pool_grad_kernels_for(Isa isa);
const ConvPoolGradKernels& conv_pool_grad_kernels();

}  // namespace ember::simd
