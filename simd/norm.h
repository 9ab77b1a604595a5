#pragma once
// Layer normalization over the last dimension of a row-major (rows x cols) matrix, forward
// and backward (Ba, Kiros, Hinton 2016; the same arithmetic as torch.nn.LayerNorm):
//
//   mean = sum(x) / cols,  var = sum((x - mean)^2) / cols   (biased, as PyTorch)
//   rstd = 1 / sqrt(var + eps),  xhat = (x - mean) * rstd,  y = xhat * weight + bias
//
//   dbias += sum over rows of dy,  dweight += sum over rows of dy * xhat
//   dxhat = dy * weight
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
#include <cstdint>

#include "simd/dispatch.h"

namespace ember::simd {

struct NormKernels {
  // out, in (rows x cols); mean, rstd (rows), written for backward; weight, bias (cols).
  // The variance is taken about the mean (two passes), not as E[x^2] - mean^2, which
  // cancels catastrophically for rows with a large mean.
  void (*layer_norm_forward)(float* out, float* mean, float* rstd, const float* in, const float* weight,
                             const float* bias, std::int64_t rows, std::int64_t cols, float eps);
  // in_grad, out_grad, in (rows x cols); weight_grad, bias_grad, weight (cols); mean, rstd
  // (rows) from the forward. weight_grad and bias_grad are accumulated (+=): zero them
  // first for a fresh gradient. in_grad may be null (no input gradient wanted) and may
  // alias out_grad.
  void (*layer_norm_backward)(float* in_grad, float* weight_grad, float* bias_grad, const float* out_grad,
                              const float* in, const float* mean, const float* rstd, const float* weight,
                              std::int64_t rows, std::int64_t cols);
};

template <class Arch>
NormKernels make_norm_kernels();
const NormKernels& norm_kernels_for(Isa isa);
const NormKernels& norm_kernels();

}  // namespace ember::simd
