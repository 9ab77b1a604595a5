#pragma once
// Generic bodies of the fused optimizer updates (simd/optimizer.h), compiled once per
// instruction set. The operation order follows PyTorch 1.13's torch/optim/sgd.py and
// adam.py / adamw.py (_single_tensor_*), so results agree to float rounding.
#include <cmath>
#include <cstdint>

#include "simd/arch.h"
#include "simd/optimizer.h"

namespace ember::simd {

// params, grads, momentum_buffer (n)
template <class Arch>
void sgd_step(float* params, const float* grads, float* momentum_buffer, std::int64_t n, const SgdHyper& h) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const bool has_momentum = h.momentum != 0.0f;
  const Batch wd(h.weight_decay), momentum(h.momentum), keep(1.0f - h.dampening), lr(h.lr);
  std::int64_t i = 0;
  for (; i + width <= n; i += width) {
    const Batch p = Batch::load_unaligned(params + i);
    Batch g = Batch::load_unaligned(grads + i);
    if (h.weight_decay != 0.0f) g = xsimd::fma(wd, p, g);
    if (has_momentum) {
      Batch buf = h.first_step ? g : xsimd::fma(keep, g, Batch::load_unaligned(momentum_buffer + i) * momentum);
      buf.store_unaligned(momentum_buffer + i);
      g = h.nesterov ? xsimd::fma(momentum, buf, g) : buf;
    }
    xsimd::fnma(lr, g, p).store_unaligned(params + i);
  }
  for (; i < n; ++i) {
    float g = grads[i];
    if (h.weight_decay != 0.0f) g += h.weight_decay * params[i];
    if (has_momentum) {
      const float buf = h.first_step ? g : momentum_buffer[i] * h.momentum + (1.0f - h.dampening) * g;
      momentum_buffer[i] = buf;
      g = h.nesterov ? g + h.momentum * buf : buf;
    }
    params[i] -= h.lr * g;
  }
}

// params, grads, exp_avg, exp_avg_sq (n)
template <class Arch>
void adam_step(float* params, const float* grads, float* exp_avg, float* exp_avg_sq, std::int64_t n, const AdamHyper& h) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  // PyTorch computes the bias corrections in Python floats (double).
  const double bias_correction1 = 1.0 - pow(static_cast<double>(h.beta1), static_cast<double>(h.step));
  const double bias_correction2 = 1.0 - pow(static_cast<double>(h.beta2), static_cast<double>(h.step));
  const auto step_size = static_cast<float>(static_cast<double>(h.lr) / bias_correction1);
  const auto correction2_sqrt = static_cast<float>(sqrt(bias_correction2));
  const float decay = 1.0f - h.lr * h.weight_decay;
  const bool l2 = !h.decoupled_weight_decay && h.weight_decay != 0.0f;
  const bool decoupled = h.decoupled_weight_decay && h.weight_decay != 0.0f;
  const Batch b1(h.beta1), one_minus_b1(1.0f - h.beta1), b2(h.beta2), one_minus_b2(1.0f - h.beta2);
  const Batch wd(h.weight_decay), eps(h.eps), c2(correction2_sqrt), step(step_size), decay_batch(decay);
  std::int64_t i = 0;
  for (; i + width <= n; i += width) {
    Batch p = Batch::load_unaligned(params + i);
    Batch g = Batch::load_unaligned(grads + i);
    if (decoupled) p = p * decay_batch;
    if (l2) g = xsimd::fma(wd, p, g);
    const Batch m = xsimd::fma(one_minus_b1, g, Batch::load_unaligned(exp_avg + i) * b1);
    const Batch v = xsimd::fma(one_minus_b2, g * g, Batch::load_unaligned(exp_avg_sq + i) * b2);
    m.store_unaligned(exp_avg + i);
    v.store_unaligned(exp_avg_sq + i);
    const Batch denom = xsimd::sqrt(v) / c2 + eps;
    xsimd::fnma(step, m / denom, p).store_unaligned(params + i);
  }
  for (; i < n; ++i) {
    float p = params[i];
    float g = grads[i];
    if (decoupled) p *= decay;
    if (l2) g += h.weight_decay * p;
    const float m = exp_avg[i] * h.beta1 + (1.0f - h.beta1) * g;
    const float v = exp_avg_sq[i] * h.beta2 + (1.0f - h.beta2) * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    params[i] = p - step_size * (m / (sqrtf(v) / correction2_sqrt + h.eps));
  }
}

template <class Arch>
OptimizerKernels make_optimizer_kernels() {
  return OptimizerKernels{&sgd_step<Arch>, &adam_step<Arch>};
}

}  // namespace ember::simd
