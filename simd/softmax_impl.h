#pragma once
// Generic bodies of the row softmax kernels (simd/softmax.h), compiled once per
// instruction set. Every function is a template on Arch (see simd/arch.h).
//
// exp is xsimd's (Cephes-style range reduction and polynomial); tests/simd measure its
// error against std::exp over the range softmax uses.
#include <cmath>
#include <cstdint>
#include <limits>

#include "simd/arch.h"
#include "simd/softmax.h"

namespace ember::simd {

// The largest lane (xsimd 8.1 has no reduce_max).
template <class Arch>
float lane_max(const xsimd::batch<float, Arch>& v) {
  alignas(64) float lanes[xsimd::batch<float, Arch>::size];
  v.store_aligned(lanes);
  float best = lanes[0];
  for (std::size_t i = 1; i < xsimd::batch<float, Arch>::size; ++i) best = lanes[i] > best ? lanes[i] : best;
  return best;
}

template <class Arch>
float row_max(const float* in, std::int64_t cols) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  float best = -std::numeric_limits<float>::infinity();
  std::int64_t j = 0;
  if (cols >= width) {
    Batch m = Batch::load_unaligned(in);
    for (j = width; j + width <= cols; j += width) m = xsimd::max(m, Batch::load_unaligned(in + j));
    best = lane_max<Arch>(m);
  }
  for (; j < cols; ++j) best = in[j] > best ? in[j] : best;
  return best;
}

// out (cols) = exp(in - shift); returns the sum of out (float accumulators).
template <class Arch>
float exp_shifted(float* out, const float* in, float shift, std::int64_t cols) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  Batch sum(0.0f);
  const Batch s(shift);
  std::int64_t j = 0;
  for (; j + width <= cols; j += width) {
    const Batch e = xsimd::exp(Batch::load_unaligned(in + j) - s);
    e.store_unaligned(out + j);
    sum += e;
  }
  float total = xsimd::hadd(sum);
  for (; j < cols; ++j) {
    out[j] = expf(in[j] - shift);
    total += out[j];
  }
  return total;
}

// out, in (rows x cols): y = exp(x - max) / sum(exp(x - max)) per row
template <class Arch>
void softmax_forward(float* out, const float* in, std::int64_t rows, std::int64_t cols) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* x = in + r * cols;
    float* y = out + r * cols;
    const float sum = exp_shifted<Arch>(y, x, row_max<Arch>(x, cols), cols);
    const float inverse = 1.0f / sum;
    std::int64_t j = 0;
    for (; j + width <= cols; j += width) (Batch::load_unaligned(y + j) * Batch(inverse)).store_unaligned(y + j);
    for (; j < cols; ++j) y[j] *= inverse;
  }
}

template <class Arch>
float dot(const float* a, const float* b, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  Batch s0(0.0f), s1(0.0f);
  std::int64_t j = 0;
  for (; j + 2 * width <= n; j += 2 * width) {
    s0 = xsimd::fma(Batch::load_unaligned(a + j), Batch::load_unaligned(b + j), s0);
    s1 = xsimd::fma(Batch::load_unaligned(a + j + width), Batch::load_unaligned(b + j + width), s1);
  }
  for (; j + width <= n; j += width) s0 = xsimd::fma(Batch::load_unaligned(a + j), Batch::load_unaligned(b + j), s0);
  float total = xsimd::hadd(s0 + s1);
  for (; j < n; ++j) total += a[j] * b[j];
  return total;
}

// in_grad, out_grad, out (rows x cols): dx = y * (dy - sum(dy * y)) per row
template <class Arch>
void softmax_backward(float* in_grad, const float* out_grad, const float* out, std::int64_t rows, std::int64_t cols) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* dy = out_grad + r * cols;
    const float* y = out + r * cols;
    float* dx = in_grad + r * cols;
    const Batch inner(dot<Arch>(dy, y, cols));
    std::int64_t j = 0;
    for (; j + width <= cols; j += width) {
      (Batch::load_unaligned(y + j) * (Batch::load_unaligned(dy + j) - inner)).store_unaligned(dx + j);
    }
    const float inner_scalar = inner.get(0);
    for (; j < cols; ++j) dx[j] = y[j] * (dy[j] - inner_scalar);
  }
}

// out, in (rows x cols): y = x - max - log(sum(exp(x - max))) per row
template <class Arch>
void log_softmax_forward(float* out, const float* in, std::int64_t rows, std::int64_t cols) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* x = in + r * cols;
    float* y = out + r * cols;
    const float max = row_max<Arch>(x, cols);
    const float log_sum = logf(exp_shifted<Arch>(y, x, max, cols));
    // (x - max) - log_sum, not x - (max + log_sum): for logits ~1e4 the sum max + log_sum
    // would round away most of log_sum's digits.
    std::int64_t j = 0;
    for (; j + width <= cols; j += width) {
      ((Batch::load_unaligned(x + j) - Batch(max)) - Batch(log_sum)).store_unaligned(y + j);
    }
    for (; j < cols; ++j) y[j] = (x[j] - max) - log_sum;
  }
}

// in_grad, out_grad, out (rows x cols): dx = dy - exp(y) * sum(dy) per row
template <class Arch>
void log_softmax_backward(float* in_grad, const float* out_grad, const float* out, std::int64_t rows, std::int64_t cols) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* dy = out_grad + r * cols;
    const float* y = out + r * cols;
    float* dx = in_grad + r * cols;
    float total = 0.0f;
    {
      Batch s(0.0f);
      std::int64_t j = 0;
      for (; j + width <= cols; j += width) s += Batch::load_unaligned(dy + j);
      total = xsimd::hadd(s);
      for (; j < cols; ++j) total += dy[j];
    }
    const Batch sum(total);
    std::int64_t j = 0;
    for (; j + width <= cols; j += width) {
      xsimd::fnma(xsimd::exp(Batch::load_unaligned(y + j)), sum, Batch::load_unaligned(dy + j)).store_unaligned(dx + j);
    }
    for (; j < cols; ++j) dx[j] = dy[j] - expf(y[j]) * total;
  }
}

// out (n) = exp(in (n))
template <class Arch>
void exp_kernel(float* out, const float* in, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  std::int64_t i = 0;
  for (; i + width <= n; i += width) xsimd::exp(Batch::load_unaligned(in + i)).store_unaligned(out + i);
  for (; i < n; ++i) out[i] = expf(in[i]);
}

template <class Arch>
SoftmaxKernels make_softmax_kernels() {
  return SoftmaxKernels{&softmax_forward<Arch>, &softmax_backward<Arch>, &log_softmax_forward<Arch>,
                        &log_softmax_backward<Arch>, &exp_kernel<Arch>};
}

}  // namespace ember::simd
