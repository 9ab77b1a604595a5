#pragma once
// Row-wise softmax and log-softmax over a row-major (rows x cols) matrix, numerically
// stable (each row's max is subtracted before exp), forward and backward.
//
//   softmax:      y = exp(x - max) / sum(exp(x - max))
//                 dx = y * (dy - sum(dy * y))
//   log_softmax:  y = x - max - log(sum(exp(x - max)))
//                 dx = dy - exp(y) * sum(dy)
#include <cstdint>

#include "simd/dispatch.h"

namespace ember::simd {

struct SoftmaxKernels {
  void (*softmax_forward)(float* out, const float* in, std::int64_t rows, std::int64_t cols);
  void (*softmax_backward)(float* in_grad, const float* out_grad, const float* out, std::int64_t rows,
                           std::int64_t cols);
  void (*log_softmax_forward)(float* out, const float* in, std::int64_t rows, std::int64_t cols);
  void (*log_softmax_backward)(float* in_grad, const float* out_grad, const float* out,
                               std::int64_t rows, std::int64_t cols);
  // out[i] = exp(in[i]) with the vectorized exp the softmaxes use (error bound in tests).
  void (*exp)(float* out, const float* in, std::int64_t n);
};

template <class Arch>
SoftmaxKernels make_softmax_kernels();
const SoftmaxKernels& softmax_kernels_for(Isa isa);
const SoftmaxKernels& softmax_kernels();

}  // namespace ember::simd
