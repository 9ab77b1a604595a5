#pragma once
// Generic bodies of the activation kernels (simd/activation.h), compiled once per
// instruction set. Every function is a template on Arch (see simd/arch.h).
#include <cstddef>
#include <cstdint>

#include "simd/activation.h"
#include "simd/arch.h"

namespace ember::simd {

// out (n) = max(in (n), 0)
template <class Arch>
void relu_forward(float* out, const float* in, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const Batch zero(0.0f);
  std::int64_t i = 0;
  for (; i + width <= n; i += width) xsimd::max(Batch::load_unaligned(in + i), zero).store_unaligned(out + i);
  for (; i < n; ++i) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

// in_grad (n) = out_grad where out > 0, else 0
template <class Arch>
void relu_backward(float* in_grad, const float* out_grad, const float* out, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const Batch zero(0.0f);
  std::int64_t i = 0;
  for (; i + width <= n; i += width) {
    const auto positive = Batch::load_unaligned(out + i) > zero;
    xsimd::select(positive, Batch::load_unaligned(out_grad + i), zero).store_unaligned(in_grad + i);
  }
  for (; i < n; ++i) in_grad[i] = out[i] > 0.0f ? out_grad[i] : 0.0f;
}

// GELU, one batch at a time. The tail of a span goes through the same batch code from a
// zero-padded copy, so an element's result does not depend on where it sits in the span.
// (The constants are const, so internal to each per-ISA translation unit.) The per-batch
// helpers are always inlined into their loops: out of line, GCC 12 flags the
// _mm512_undefined_* idiom inside xsimd's exp as uninitialized (a false positive).
constexpr float gelu_inverse_sqrt_2 = 0.70710678118654752f;
constexpr float gelu_inverse_sqrt_2pi = 0.39894228040143268f;
constexpr float gelu_sqrt_2_over_pi = 0.79788456080286536f;
constexpr float gelu_tanh_cubic = 0.044715f;

// x Phi(x) = 0.5 x erfc(-x / sqrt(2)): erfc keeps the relative precision of the left tail
// that 1 + erf(x / sqrt(2)) would cancel away.
template <class Arch>
[[gnu::always_inline]] inline xsimd::batch<float, Arch> gelu_erf_value(const xsimd::batch<float, Arch>& x) {
  using Batch = xsimd::batch<float, Arch>;
  return Batch(0.5f) * x * xsimd::erfc(x * Batch(-gelu_inverse_sqrt_2));
}

// Phi(x) + x phi(x)
template <class Arch>
[[gnu::always_inline]] inline xsimd::batch<float, Arch> gelu_erf_derivative(const xsimd::batch<float, Arch>& x) {
  using Batch = xsimd::batch<float, Arch>;
  const Batch cdf = Batch(0.5f) * xsimd::erfc(x * Batch(-gelu_inverse_sqrt_2));
  const Batch pdf = Batch(gelu_inverse_sqrt_2pi) * xsimd::exp(Batch(-0.5f) * x * x);
  return xsimd::fma(x, pdf, cdf);
}

// s = sigmoid(2u) = 0.5 (1 + tanh(u)), u = sqrt(2 / pi) (x + 0.044715 x^3). exp(-2u)
// overflowing to infinity gives s = 0, the right limit.
template <class Arch>
[[gnu::always_inline]] inline xsimd::batch<float, Arch> gelu_tanh_gate(const xsimd::batch<float, Arch>& x) {
  using Batch = xsimd::batch<float, Arch>;
  const Batch u = Batch(gelu_sqrt_2_over_pi) * xsimd::fma(Batch(gelu_tanh_cubic) * x, x * x, x);
  return Batch(1.0f) / (Batch(1.0f) + xsimd::exp(Batch(-2.0f) * u));
}

template <class Arch>
[[gnu::always_inline]] inline xsimd::batch<float, Arch> gelu_tanh_value(const xsimd::batch<float, Arch>& x) {
  return x * gelu_tanh_gate<Arch>(x);
}

// s + 2 x s (1 - s) du/dx,  du/dx = sqrt(2 / pi) (1 + 3 * 0.044715 x^2)
template <class Arch>
[[gnu::always_inline]] inline xsimd::batch<float, Arch> gelu_tanh_derivative(const xsimd::batch<float, Arch>& x) {
  using Batch = xsimd::batch<float, Arch>;
  const Batch s = gelu_tanh_gate<Arch>(x);
  const Batch du = Batch(gelu_sqrt_2_over_pi) * xsimd::fma(Batch(3.0f * gelu_tanh_cubic) * x, x, Batch(1.0f));
  return xsimd::fma(Batch(2.0f) * x * s * (Batch(1.0f) - s), du, s);
}

// out (n) = value(in (n))
template <class Arch, xsimd::batch<float, Arch> (*Value)(const xsimd::batch<float, Arch>&)>
void gelu_map(float* out, const float* in, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  std::int64_t i = 0;
  for (; i + width <= n; i += width) Value(Batch::load_unaligned(in + i)).store_unaligned(out + i);
  if (i < n) {
    alignas(64) float tail[Batch::size] = {};
    for (std::int64_t k = 0; k < n - i; ++k) tail[k] = in[i + k];
    Value(Batch::load_aligned(tail)).store_aligned(tail);
    for (std::int64_t k = 0; k < n - i; ++k) out[i + k] = tail[k];
  }
}

// in_grad (n) = out_grad (n) * derivative(in (n))
template <class Arch, xsimd::batch<float, Arch> (*Derivative)(const xsimd::batch<float, Arch>&)>
void gelu_map_backward(float* in_grad, const float* out_grad, const float* in, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  std::int64_t i = 0;
  for (; i + width <= n; i += width) {
    (Batch::load_unaligned(out_grad + i) * Derivative(Batch::load_unaligned(in + i))).store_unaligned(in_grad + i);
  }
  if (i < n) {
    alignas(64) float x[Batch::size] = {};
    alignas(64) float g[Batch::size] = {};
    for (std::int64_t k = 0; k < n - i; ++k) {
      x[k] = in[i + k];
      g[k] = out_grad[i + k];
    }
    (Batch::load_aligned(g) * Derivative(Batch::load_aligned(x))).store_aligned(g);
    for (std::int64_t k = 0; k < n - i; ++k) in_grad[i + k] = g[k];
  }
}

template <class Arch>
void gelu_forward(float* out, const float* in, std::int64_t n) {
  gelu_map<Arch, &gelu_erf_value<Arch>>(out, in, n);
}

template <class Arch>
void gelu_backward(float* in_grad, const float* out_grad, const float* in, std::int64_t n) {
  gelu_map_backward<Arch, &gelu_erf_derivative<Arch>>(in_grad, out_grad, in, n);
}

template <class Arch>
void gelu_tanh_forward(float* out, const float* in, std::int64_t n) {
  gelu_map<Arch, &gelu_tanh_value<Arch>>(out, in, n);
}

template <class Arch>
void gelu_tanh_backward(float* in_grad, const float* out_grad, const float* in, std::int64_t n) {
  gelu_map_backward<Arch, &gelu_tanh_derivative<Arch>>(in_grad, out_grad, in, n);
}

template <class Arch>
ActivationKernels make_activation_kernels() {
  return ActivationKernels{&relu_forward<Arch>,      &relu_backward<Arch>,      &gelu_forward<Arch>,
                           &gelu_backward<Arch>,     &gelu_tanh_forward<Arch>, &gelu_tanh_backward<Arch>};
}

}  // namespace ember::simd
