#pragma once
// Pointwise activations, forward and backward, over contiguous spans of n floats.
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
};

template <class Arch>
ActivationKernels make_activation_kernels();
const ActivationKernels& activation_kernels_for(Isa isa);
const ActivationKernels& activation_kernels();

}  // namespace ember::simd
