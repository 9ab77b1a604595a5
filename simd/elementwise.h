#pragma once
// Vectorized elementwise operations and reductions over contiguous spans.
#include <cstdint>

#include "simd/dispatch.h"

namespace ember::simd {

struct ElementwiseKernels {
  // out = a + b (out may alias a or b)
  void (*add)(float* out, const float* a, const float* b, std::int64_t n);
  // y += alpha * x
  void (*axpy)(float* y, float alpha, const float* x, std::int64_t n);
  // out = alpha * in (out may alias in)
  void (*scale)(float* out, float alpha, const float* in, std::int64_t n);
  // out = in * mask * scale where mask is 0/1 bytes (dropout)
  void (*masked_scale)(float* out, const float* in, const std::uint8_t* mask, float scale, std::int64_t n);
  // out[j] (+)= sum over rows of in (rows x cols, row stride ld); the bias gradient.
  void (*column_sums)(float* out, const float* in, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                      bool accumulate);
  // out (cols x rows, row-major) = in^T, in (rows x cols, row-major), plus bias[j] on
  // every element of out's column j when bias is not null (length rows): a GEMM that
  // computed Y^T hands back Y with the bias its epilogue would have added.
  void (*transpose_add_row)(float* out, const float* in, std::int64_t rows, std::int64_t cols, const float* bias);
  // out[i] = sum over l in 0..count-1, in order, of lanes[l][i]. The fixed order makes the
  // sum of per-lane gradients independent of how many threads produced the lanes.
  void (*sum_lanes)(float* out, const float* const* lanes, std::int64_t count, std::int64_t n);
  // sum of squares, accumulated in double (gradient-norm clipping)
  double (*sum_squares)(const float* in, std::int64_t n);
  // out[i] = float(in[i]) * scale + shift (uint8 pixels to normalized floats)
  void (*u8_to_float)(float* out, const std::uint8_t* in, float scale, float shift, std::int64_t n);
  // true when no element is NaN or +-infinity
  bool (*all_finite)(const float* in, std::int64_t n);
  // index of the first NaN or +-infinity in in[0, n), or -1 when every element is finite
  std::int64_t (*first_non_finite)(const float* in, std::int64_t n);
};

template <class Arch>
ElementwiseKernels make_elementwise_kernels();
const ElementwiseKernels& elementwise_kernels_for(Isa isa);
const ElementwiseKernels& elementwise_kernels();

}  // namespace ember::simd
