#pragma once
// Generic bodies of the elementwise kernels (simd/elementwise.h), compiled once per
// instruction set. Every function is a template on Arch (see simd/arch.h).
#include <cstddef>
#include <algorithm>
#include <cstdint>

#include "simd/arch.h"
#include "simd/elementwise.h"

namespace ember::simd {

// out (n) = a (n) + b (n)
template <class Arch>
void add(float* out, const float* a, const float* b, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  std::int64_t i = 0;
  for (; i + width <= n; i += width) (Batch::load_unaligned(a + i) + Batch::load_unaligned(b + i)).store_unaligned(out + i);
  for (; i < n; ++i) out[i] = a[i] + b[i];
}

// y (n) += alpha * x (n)
template <class Arch>
void axpy(float* y, float alpha, const float* x, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const Batch a(alpha);
  std::int64_t i = 0;
  for (; i + width <= n; i += width) xsimd::fma(a, Batch::load_unaligned(x + i), Batch::load_unaligned(y + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] += alpha * x[i];
}

// out (n) = alpha * in (n)
template <class Arch>
void scale(float* out, float alpha, const float* in, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const Batch a(alpha);
  std::int64_t i = 0;
  for (; i + width <= n; i += width) (a * Batch::load_unaligned(in + i)).store_unaligned(out + i);
  for (; i < n; ++i) out[i] = alpha * in[i];
}

// out (n) = in (n) * mask (n, 0 or 1) * scale
template <class Arch>
void masked_scale(float* out, const float* in, const std::uint8_t* mask, float scale_value, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = mask[i] != 0 ? in[i] * scale_value : 0.0f;
}

// out (cols) (+)= column sums of in (rows x cols, row stride ld). Rows are added in
// order, so the result does not depend on the vector width.
template <class Arch>
void column_sums(float* out, const float* in, std::int64_t rows, std::int64_t cols, std::int64_t ld, bool accumulate) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  std::int64_t j = 0;
  for (; j + width <= cols; j += width) {
    Batch sum = accumulate ? Batch::load_unaligned(out + j) : Batch(0.0f);
    for (std::int64_t r = 0; r < rows; ++r) sum += Batch::load_unaligned(in + r * ld + j);
    sum.store_unaligned(out + j);
  }
  for (; j < cols; ++j) {
    float sum = accumulate ? out[j] : 0.0f;
    for (std::int64_t r = 0; r < rows; ++r) sum += in[r * ld + j];
    out[j] = sum;
  }
}

// out (n) = lanes[0] + lanes[1] + ... + lanes[count-1], added in that order. out may be lanes[0].
template <class Arch>
void sum_lanes(float* out, const float* const* lanes, std::int64_t count, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  std::int64_t i = 0;
  for (; i + width <= n; i += width) {
    Batch sum = Batch::load_unaligned(lanes[0] + i);
    for (std::int64_t l = 1; l < count; ++l) sum += Batch::load_unaligned(lanes[l] + i);
    sum.store_unaligned(out + i);
  }
  for (; i < n; ++i) {
    float sum = lanes[0][i];
    for (std::int64_t l = 1; l < count; ++l) sum += lanes[l][i];
    out[i] = sum;
  }
}

// sum over i of in[i]^2, in double: float squares summed in 4 float vector accumulators
// per block of 1024, each block's total promoted to double (bounded rounding, fast).
template <class Arch>
double sum_squares(const float* in, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  double total = 0.0;
  std::int64_t i = 0;
  while (i + 4 * width <= n) {
    Batch s0(0.0f), s1(0.0f), s2(0.0f), s3(0.0f);
    const std::int64_t block_end = std::min<std::int64_t>(n, i + 1024);
    for (; i + 4 * width <= block_end; i += 4 * width) {
      const Batch a = Batch::load_unaligned(in + i), b = Batch::load_unaligned(in + i + width);
      const Batch c = Batch::load_unaligned(in + i + 2 * width), d = Batch::load_unaligned(in + i + 3 * width);
      s0 = xsimd::fma(a, a, s0);
      s1 = xsimd::fma(b, b, s1);
      s2 = xsimd::fma(c, c, s2);
      s3 = xsimd::fma(d, d, s3);
    }
    total += static_cast<double>(xsimd::hadd((s0 + s1) + (s2 + s3)));
  }
  for (; i < n; ++i) total += static_cast<double>(in[i]) * static_cast<double>(in[i]);
  return total;
}

// out (n) = float(in (n)) * scale + shift
template <class Arch>
void u8_to_float(float* out, const std::uint8_t* in, float scale_value, float shift, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i]) * scale_value + shift;
}

template <class Arch>
ElementwiseKernels make_elementwise_kernels() {
  return ElementwiseKernels{&add<Arch>,         &axpy<Arch>,        &scale<Arch>,       &masked_scale<Arch>,
                            &column_sums<Arch>, &sum_lanes<Arch>,   &sum_squares<Arch>, &u8_to_float<Arch>};
}

}  // namespace ember::simd
