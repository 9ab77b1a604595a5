#pragma once
// Pointwise activations (ReLU, GELU), forward and backward, over contiguous spans of n floats.
// Layout-agnostic: they work on any memory layout, including oneDNN's blocked ones.
#include <cstdint>

#include "simd/dispatch.h"

namespace ember::simd {

struct ActivationKernels {
  // out = max(in, 0); in-place (out == in) allowed.
  void (*relu_forward)(float* out, const float* in, std::int64_t n);
  // in_grad = out_grad where out > 0, else 0 (out is the forward output); in_grad may
  // alias out_grad.
  void (*relu_backward)(float* in_grad, const float* out_grad, const float* out, std::int64_t n);

  // GELU (Hendrycks and Gimpel 2016), as torch.nn.GELU. out may alias in; in_grad may
  // alias out_grad; backward takes the forward *input*.
  //   exact ("none"):  y = x * Phi(x) = 0.5 x erfc(-x / sqrt(2))
  //                    dy/dx = Phi(x) + x phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
  //   tanh:            y = 0.5 x (1 + tanh(u)),  u = sqrt(2 / pi) (x + 0.044715 x^3)
  //                    computed as x * sigmoid(2u) (the same function, without the
  //                    cancellation of 1 + tanh(u) for negative x)
  //                    dy/dx = s + 2 x s (1 - s) du/dx,  s = sigmoid(2u)
  void (*gelu_forward)(float* out, const float* in, std::int64_t n);
  void (*gelu_backward)(float* in_grad, const float* out_grad, const float* in, std::int64_t n);
  void (*gelu_tanh_forward)(float* out, const float* in, std::int64_t n);
  void (*gelu_tanh_backward)(float* in_grad, const float* out_grad, const float* in, std::int64_t n);
};

template <class Arch>
ActivationKernels make_activation_kernels();
const ActivationKernels& activation_kernels_for(Isa isa);
const ActivationKernels& activation_kernels();

}  // namespace ember::simd
