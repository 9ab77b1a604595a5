#pragma once
// Gradient-norm clipping and the finiteness check that stops training on a NaN or
// infinite loss or gradient. Both are one pass over the gradient block.
#include <cmath>
#include <span>

namespace ember {

// PyTorch 1.13's torch.nn.utils.clip_grad_norm_(norm_type=2) over the whole block:
//   norm = sqrt(sum of g^2)  (accumulated in double)
//   coefficient = max_norm / (norm + 1e-6); if coefficient < 1, g *= coefficient
// PyTorch multiplies by min(coefficient, 1) unconditionally; skipping the multiply by 1
// gives the same values. So a norm within 1e-6 of max_norm is (slightly) scaled too.
// Returns the norm before clipping. A non-finite norm leaves the gradients untouched
// (PyTorch would scale them by NaN); check it with is_finite() and stop.
// max_norm must be positive and finite.
double clip_grad_norm(std::span<float> gradients, float max_norm);

// The L2 norm of a block, accumulated in double.
double l2_norm(std::span<const float> values);

// True when every value is finite (no NaN, no infinity).
bool is_finite(std::span<const float> values);
inline bool is_finite(double value) { return std::isfinite(value); }

}  // namespace ember
