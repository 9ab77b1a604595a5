#pragma once
// Generic bodies of the elementwise kernels (simd/elementwise.h), compiled once per
// instruction set. Every function is a template on Arch (see simd/arch.h).
#include <cstddef>
#include <algorithm>
#include <bit>
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

// out[c][r] = in[r][c] (+ bias[r]): out is cols x rows. Small matrices (a Linear's
// output for one micro-batch): blocks of 8 x 8 keep both sides' lines in L1.
template <class Arch>
void transpose_add_row(float* out, const float* in, std::int64_t rows, std::int64_t cols, const float* bias) {
  constexpr std::int64_t block = 8;
  for (std::int64_t r0 = 0; r0 < rows; r0 += block) {
    const std::int64_t r1 = std::min(rows, r0 + block);
    for (std::int64_t c0 = 0; c0 < cols; c0 += block) {
      const std::int64_t c1 = std::min(cols, c0 + block);
      for (std::int64_t c = c0; c < c1; ++c) {
        for (std::int64_t r = r0; r < r1; ++r) {
          out[c * rows + r] = bias != nullptr ? in[r * cols + c] + bias[r] : in[r * cols + c];
        }
      }
    }
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

// sum over i of in[i]^2 in double: each square is exact in double, so the result is as
// good as a double sum can be (gradient-norm clipping must not depend on the order of
// a float reduction).
template <class Arch>
double sum_squares(const float* in, std::int64_t n) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  std::int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const double a = in[i], b = in[i + 1], c = in[i + 2], d = in[i + 3];
    s0 += a * a;
    s1 += b * b;
    s2 += c * c;
    s3 += d * d;
  }
  for (; i < n; ++i) s0 += static_cast<double>(in[i]) * static_cast<double>(in[i]);
  return (s0 + s1) + (s2 + s3);
}

// true when no element is NaN or infinite: x * 0 is 0 for every finite x and NaN otherwise.
template <class Arch>
bool all_finite(const float* in, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  Batch acc(0.0f);
  std::int64_t i = 0;
  for (; i + width <= n; i += width) acc = xsimd::fma(Batch::load_unaligned(in + i), Batch(0.0f), acc);
  float tail = 0.0f;
  for (; i < n; ++i) tail += in[i] * 0.0f;
  return xsimd::hadd(acc) == 0.0f && tail == 0.0f;
}

// Index of the first NaN or infinity, -1 if none. The vector loop only asks whether a
// block of four vectors holds one (x * 0 is NaN exactly for non-finite x, and NaN
// propagates through the sum); the block that does is searched element by element, so
// the result is the first position whatever the vector width.
template <class Arch>
std::int64_t first_non_finite(const float* in, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  constexpr std::int64_t block = 4 * width;
  // Exponent all ones: infinity or NaN. Integer test, so no floating-point mode changes it.
  auto non_finite = [](float x) { return (std::bit_cast<std::uint32_t>(x) & 0x7fffffffu) >= 0x7f800000u; };
  const Batch zero(0.0f);
  std::int64_t i = 0;
  for (; i + block <= n; i += block) {
    const Batch probe = Batch::load_unaligned(in + i) * zero + Batch::load_unaligned(in + i + width) * zero +
                        Batch::load_unaligned(in + i + 2 * width) * zero + Batch::load_unaligned(in + i + 3 * width) * zero;
    if (xsimd::any(xsimd::isnan(probe))) break;
  }
  for (; i < n; ++i) {
    if (non_finite(in[i])) return i;
  }
  return -1;
}

// out (n) = float(in (n)) * scale + shift
template <class Arch>
void u8_to_float(float* out, const std::uint8_t* in, float scale_value, float shift, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i]) * scale_value + shift;
}

template <class Arch>
ElementwiseKernels make_elementwise_kernels() {
  return ElementwiseKernels{&add<Arch>,         &axpy<Arch>,        &scale<Arch>,       &masked_scale<Arch>,
                            &column_sums<Arch>, &transpose_add_row<Arch>, &sum_lanes<Arch>,   &sum_squares<Arch>, &u8_to_float<Arch>,
                            &all_finite<Arch>,  &first_non_finite<Arch>};
}

}  // namespace ember::simd
