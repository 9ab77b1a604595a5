#pragma once
// Generic bodies of the normalization kernels (simd/norm.h), compiled once per
// instruction set. Every function is a template on Arch (see simd/arch.h), and every name
// is specific to this family: a template of the same name and signature in another
// family's _impl.h would be one symbol to the linker.
#include <cmath>
#include <cstdint>

#include "simd/arch.h"
#include "simd/norm.h"

namespace ember::simd {

// sum of x[j] over one row; two accumulators.
template <class Arch>
float layer_norm_row_sum(const float* x, std::int64_t cols) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  Batch s0(0.0f), s1(0.0f);
  std::int64_t j = 0;
  for (; j + 2 * width <= cols; j += 2 * width) {
    s0 += Batch::load_unaligned(x + j);
    s1 += Batch::load_unaligned(x + j + width);
  }
  for (; j + width <= cols; j += width) s0 += Batch::load_unaligned(x + j);
  float sum = xsimd::hadd(s0 + s1);
  for (; j < cols; ++j) sum += x[j];
  return sum;
}

// sum of (x[j] - shift) over one row, and of its squares; two accumulators each.
template <class Arch>
void layer_norm_row_moments(const float* x, float shift, std::int64_t cols, float& sum, float& sum_squares) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const Batch s(shift);
  Batch s0(0.0f), s1(0.0f), q0(0.0f), q1(0.0f);
  std::int64_t j = 0;
  for (; j + 2 * width <= cols; j += 2 * width) {
    const Batch a = Batch::load_unaligned(x + j) - s;
    const Batch b = Batch::load_unaligned(x + j + width) - s;
    s0 += a;
    s1 += b;
    q0 = xsimd::fma(a, a, q0);
    q1 = xsimd::fma(b, b, q1);
  }
  for (; j + width <= cols; j += width) {
    const Batch a = Batch::load_unaligned(x + j) - s;
    s0 += a;
    q0 = xsimd::fma(a, a, q0);
  }
  sum = xsimd::hadd(s0 + s1);
  sum_squares = xsimd::hadd(q0 + q1);
  for (; j < cols; ++j) {
    const float a = x[j] - shift;
    sum += a;
    sum_squares += a * a;
  }
}

// out, in (rows x cols); mean, rstd (rows); weight, bias (cols)
template <class Arch>
void layer_norm_forward(float* out, float* mean, float* rstd, const float* in, const float* weight, const float* bias,
                        std::int64_t rows, std::int64_t cols, float eps) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const auto count = static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* x = in + r * cols;
    float* y = out + r * cols;
    // Divided, not multiplied by 1/cols: a constant row then gets its value back exactly.
    const float first = layer_norm_row_sum<Arch>(x, cols) / count;
    // Second pass about the first estimate; the residual mean of (x - first) is the
    // correction for its rounding (Var = E[(x - first)^2] - (E[x] - first)^2).
    float residual = 0.0f, squares = 0.0f;
    layer_norm_row_moments<Arch>(x, first, cols, residual, squares);
    const float correction = residual / count;
    const float variance = squares / count - correction * correction;
    const float m = first + correction;
    const float s = 1.0f / sqrtf((variance > 0.0f ? variance : 0.0f) + eps);
    mean[r] = m;
    rstd[r] = s;
    const Batch mb(m), sb(s);
    std::int64_t j = 0;
    for (; j + width <= cols; j += width) {
      const Batch xhat = (Batch::load_unaligned(x + j) - mb) * sb;
      xsimd::fma(xhat, Batch::load_unaligned(weight + j), Batch::load_unaligned(bias + j)).store_unaligned(y + j);
    }
    for (; j < cols; ++j) y[j] = (x[j] - m) * s * weight[j] + bias[j];
  }
}

// in_grad, out_grad, in (rows x cols); weight_grad, bias_grad, weight (cols); mean, rstd (rows)
template <class Arch>
void layer_norm_backward(float* in_grad, float* weight_grad, float* bias_grad, const float* out_grad, const float* in,
                         const float* mean, const float* rstd, const float* weight, std::int64_t rows, std::int64_t cols) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const float inverse_cols = 1.0f / static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* x = in + r * cols;
    const float* dy = out_grad + r * cols;
    const Batch mb(mean[r]), sb(rstd[r]);

    // Pass 1: sum(dxhat) and sum(dxhat * xhat), dxhat = dy * weight.
    float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
    if (in_grad != nullptr) {
      Batch a0(0.0f), a1(0.0f), b0(0.0f), b1(0.0f);
      std::int64_t j = 0;
      for (; j + 2 * width <= cols; j += 2 * width) {
        const Batch d0 = Batch::load_unaligned(dy + j) * Batch::load_unaligned(weight + j);
        const Batch d1 = Batch::load_unaligned(dy + j + width) * Batch::load_unaligned(weight + j + width);
        a0 += d0;
        a1 += d1;
        b0 = xsimd::fma(d0, (Batch::load_unaligned(x + j) - mb) * sb, b0);
        b1 = xsimd::fma(d1, (Batch::load_unaligned(x + j + width) - mb) * sb, b1);
      }
      for (; j + width <= cols; j += width) {
        const Batch d0 = Batch::load_unaligned(dy + j) * Batch::load_unaligned(weight + j);
        a0 += d0;
        b0 = xsimd::fma(d0, (Batch::load_unaligned(x + j) - mb) * sb, b0);
      }
      sum_dxhat = xsimd::hadd(a0 + a1);
      sum_dxhat_xhat = xsimd::hadd(b0 + b1);
      for (; j < cols; ++j) {
        const float d = dy[j] * weight[j];
        sum_dxhat += d;
        sum_dxhat_xhat += d * ((x[j] - mean[r]) * rstd[r]);
      }
    }

    // Pass 2: parameter gradients, then dx (dy is read before dx is written: they may alias).
    const float mean_dxhat = sum_dxhat * inverse_cols;
    const float mean_dxhat_xhat = sum_dxhat_xhat * inverse_cols;
    const Batch mean_d(mean_dxhat), mean_dx(mean_dxhat_xhat);
    float* dx = in_grad != nullptr ? in_grad + r * cols : nullptr;
    std::int64_t j = 0;
    for (; j + width <= cols; j += width) {
      const Batch g = Batch::load_unaligned(dy + j);
      const Batch xhat = (Batch::load_unaligned(x + j) - mb) * sb;
      (Batch::load_unaligned(bias_grad + j) + g).store_unaligned(bias_grad + j);
      xsimd::fma(g, xhat, Batch::load_unaligned(weight_grad + j)).store_unaligned(weight_grad + j);
      if (dx != nullptr) {
        const Batch dxhat = g * Batch::load_unaligned(weight + j);
        (sb * xsimd::fnma(xhat, mean_dx, dxhat - mean_d)).store_unaligned(dx + j);
      }
    }
    for (; j < cols; ++j) {
      const float g = dy[j];
      const float xhat = (x[j] - mean[r]) * rstd[r];
      bias_grad[j] += g;
      weight_grad[j] += g * xhat;
      if (dx != nullptr) dx[j] = rstd[r] * ((g * weight[j] - mean_dxhat) - xhat * mean_dxhat_xhat);
    }
  }
}

template <class Arch>
NormKernels make_norm_kernels() {
  return NormKernels{&layer_norm_forward<Arch>, &layer_norm_backward<Arch>};
}

}  // namespace ember::simd
