#pragma once
// Per-channel kernels of batch normalization over a "channel-blocked" layout
// (N, C/b, S, b): element (n, c, s) of an (N, C, S) tensor lives at
//
//   ((n * Cb + c / b) * S + s) * b + c % b,   Cb = ceil(C / b)
//
// b = 1 is plain NCHW (S = H * W) and (N, C, L); b = C (Cb = 1) is NHWC and plain (N, C)
// (S = 1); b = 8 or 16 are oneDNN's nChw8c / nChw16c, whose channels are padded to a
// multiple of b. Padding lanes (c >= C in the last block) are ignored by the sums, and
// written as 0 by the kernels that produce a tensor.
//
// The layer (layers/batch_norm.h) composes them:
//   statistics      per channel: mean and M2 = sum (x - mean)^2 of one micro-batch
//   affine          y = x * scale[c] + shift[c]           (normalize, or inference)
//   backward_sums   per channel: sum dy and sum dy * (x - mean[c])
//   backward_apply  dx = k[c] * dy + p[c] * x + q[c]      (the input gradient)
#include <cstdint>

#include "simd/dispatch.h"

namespace ember::simd {

struct ChannelBlocked {
  std::int64_t samples = 0;   // N
  std::int64_t channels = 0;  // C
  std::int64_t spatial = 1;   // S
  std::int64_t block = 1;     // b, 1 <= b (b = C for NHWC)
  std::int64_t blocks() const { return (channels + block - 1) / block; }
  // Floats the tensor occupies, padding included.
  std::int64_t padded_elements() const { return samples * blocks() * spatial * block; }
  // Elements each channel's statistics are taken over.
  std::int64_t count() const { return samples * spatial; }
};

struct BatchNormKernels {
  // mean, m2 (C): each channel's mean over its count() elements and the sum of squared
  // deviations from it, in two passes (about a first estimate, corrected by the residual
  // mean), not as E[x^2] - mean^2, which cancels for channels with a large mean.
  void (*statistics)(float* mean, float* m2, const float* in, ChannelBlocked shape);
  // out = in * scale[c] + shift[c]; scale, shift (C). out may alias in.
  void (*affine)(float* out, const float* in, const float* scale, const float* shift, ChannelBlocked shape);
  // sum_dy[c] = sum dy, sum_dy_centered[c] = sum dy * (x - mean[c]); all (C).
  void (*backward_sums)(float* sum_dy, float* sum_dy_centered, const float* out_grad, const float* in, const float* mean,
                        ChannelBlocked shape);
  // in_grad = k[c] * out_grad + p[c] * in + q[c]; k, p, q (C). in_grad may alias out_grad.
  void (*backward_apply)(float* in_grad, const float* out_grad, const float* in, const float* k, const float* p,
                         const float* q, ChannelBlocked shape);
};

template <class Arch>
BatchNormKernels make_batch_norm_kernels();
const BatchNormKernels& batch_norm_kernels_for(Isa isa);
const BatchNormKernels& batch_norm_kernels();

}  // namespace ember::simd
