#pragma once
// Direct 2-D convolution for layers with few input channels (a network's first conv:
// 1..4 channels, where oneDNN's blocked kernels waste most of each vector), stride 1,
// dilation 1, any kernel size and zero padding, in plain NCHW:
//
//   out[n, o, y, x] = bias[o] + sum over c, ky, kx of
//                     weight[o, c, ky, kx] * in[n, c, y + ky - pad_h, x + kx - pad_w]
//
// (in outside the image reads 0), then optionally ReLU max(0, .) and optionally a 2x2,
// stride-2 max pool (floor: an odd last row or column is dropped, as PyTorch's
// MaxPool2d(2)). Vectors run along output columns. For the pool, each input row is split
// into its even and odd columns first, so the even and odd conv columns of a pooled
// column come out of contiguous loads and pool with vector max.
//
// Training's pooled forward also writes, per pooled output, which of its window's four conv
// positions won (the "winner": 0 top left, 1 top right, 2 bottom left, 3 bottom right), the
// first of equal maxima in that row-major order, as oneDNN's and PyTorch's max pools pick
// it (a NaN never wins over a number, as oneDNN). The weight gradient then needs only the
// winner's input patch (simd/conv_pool_grad.h).
#include <cstddef>
#include <cstdint>

#include "simd/dispatch.h"

namespace ember::simd {

struct DirectConvShape {
  std::int64_t batch = 1, in_channels = 1, out_channels = 1;
  std::int64_t height = 1, width = 1;           // input
  std::int64_t kernel_h = 1, kernel_w = 1;
  std::int64_t pad_h = 0, pad_w = 0;
  bool relu = false;
  bool pool = false;                            // 2x2 stride-2 max pool after the conv (and ReLU)

  std::int64_t conv_h() const { return height + 2 * pad_h - kernel_h + 1; }
  std::int64_t conv_w() const { return width + 2 * pad_w - kernel_w + 1; }
  std::int64_t out_h() const { return pool ? conv_h() / 2 : conv_h(); }
  std::int64_t out_w() const { return pool ? conv_w() / 2 : conv_w(); }
};

// Floats of scratch direct_conv2d_forward needs for one image's padded, split input.
// Independent of the instruction set (sized for the widest vector). Every scratch given to
// these kernels must be 8-byte aligned: it begins with the taps' offsets as 64-bit
// integers (the executor's scratch is 64-byte aligned; the sizes are whole 64-byte lines).
std::size_t direct_conv2d_scratch_floats(const DirectConvShape& shape);

// Floats of scratch direct_conv2d_pool_forward needs: the above and one image's winners.
std::size_t direct_conv2d_pool_forward_scratch_floats(const DirectConvShape& shape);

struct ConvKernels {
  // out (batch, out_channels, out_h, out_w); in (batch, in_channels, height, width);
  // weight (out_channels, in_channels, kernel_h, kernel_w); bias (out_channels) or null;
  // scratch: direct_conv2d_scratch_floats(shape) floats. Each output is summed in the
  // same order whatever the batch size, so the bits do not depend on it.
  void (*direct_conv2d_forward)(float* out, const float* in, const float* weight, const float* bias, float* scratch,
                                const DirectConvShape& shape);
  // Training, shape.pool set: out as above (the pooled value is the winner's conv value),
  // and winners (batch, out_channels, out_h, out_w) bytes, each 0..3; scratch:
  // direct_conv2d_pool_forward_scratch_floats(shape) floats.
  void (*direct_conv2d_pool_forward)(float* out, std::uint8_t* winners, const float* in, const float* weight, const float* bias,
                                     float* scratch, const DirectConvShape& shape);
};

template <class Arch>
ConvKernels make_conv_kernels();
const ConvKernels& conv_kernels_for(Isa isa);
const ConvKernels& conv_kernels();

}  // namespace ember::simd
