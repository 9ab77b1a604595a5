#include "engine/clip.h"

#include <cmath>
#include <string>

#include "engine/error.h"
#include "engine/text.h"
#include "simd/elementwise.h"

namespace ember {

double l2_norm(std::span<const float> values) {
  if (values.empty()) return 0.0;
  return std::sqrt(simd::elementwise_kernels().sum_squares(values.data(), static_cast<std::int64_t>(values.size())));
}

double clip_grad_norm(std::span<float> gradients, float max_norm) {
  if (!(max_norm > 0.0f) || !std::isfinite(max_norm)) {
    throw Error("gradient clipping: max_norm must be positive and finite, found " + format_number(max_norm));
  }
  const double norm = l2_norm(gradients);
  if (!is_finite(norm)) return norm;
  // PyTorch forms the coefficient in float32 (the norm is a float tensor).
  const float coefficient = max_norm / (static_cast<float>(norm) + 1e-6f);
  if (coefficient < 1.0f) {
    simd::elementwise_kernels().scale(gradients.data(), coefficient, gradients.data(),
                                      static_cast<std::int64_t>(gradients.size()));
  }
  return norm;
}

bool is_finite(std::span<const float> values) {
  return simd::elementwise_kernels().all_finite(values.data(), static_cast<std::int64_t>(values.size()));
}

}  // namespace ember
