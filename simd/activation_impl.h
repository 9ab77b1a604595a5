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

template <class Arch>
ActivationKernels make_activation_kernels() {
  return ActivationKernels{&relu_forward<Arch>, &relu_backward<Arch>};
}

}  // namespace ember::simd
