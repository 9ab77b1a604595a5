#pragma once
// Fused optimizer updates: one vectorized pass over a whole parameter block, with
// PyTorch 1.13's exact update order (torch.optim.SGD / Adam / AdamW, foreach=False).
#include <cstdint>

#include "simd/dispatch.h"

namespace ember::simd {

struct SgdHyper {
  float lr, momentum, dampening, weight_decay;
  bool nesterov;
  bool first_step;  // momentum buffer is initialized to the gradient on the first step
};

struct AdamHyper {
  float lr, beta1, beta2, eps, weight_decay;
  bool decoupled_weight_decay;  // AdamW
  std::int64_t step;            // 1-based step count after this update
};

struct OptimizerKernels {
  // g = grad + wd*p; buf = first ? g : momentum*buf + (1-dampening)*g;
  // g = nesterov ? g + momentum*buf : buf (when momentum != 0); p -= lr*g
  void (*sgd_step)(float* params, const float* grads, float* momentum_buffer, std::int64_t n,
                   const SgdHyper& hyper);
  // Adam:  g = grad + wd*p;  AdamW: p *= 1 - lr*wd.  Then
  // m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
  // p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
  void (*adam_step)(float* params, const float* grads, float* exp_avg, float* exp_avg_sq, std::int64_t n,
                    const AdamHyper& hyper);
};

template <class Arch>
OptimizerKernels make_optimizer_kernels();
const OptimizerKernels& optimizer_kernels_for(Isa isa);
const OptimizerKernels& optimizer_kernels();

}  // namespace ember::simd
