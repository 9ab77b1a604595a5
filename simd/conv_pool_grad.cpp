#include "simd/conv_pool_grad.h"

#include "simd/arch.h"
#include "simd/conv_layout.h"

namespace ember::simd {

std::size_t direct_conv2d_pool_grad_scratch_floats(const DirectConvShape& shape) {
  const DirectConvInputLayout layout(shape, direct_conv_widest_vector);
  const std::int64_t sums = shape.out_channels * (layout.taps + 1) * direct_conv_widest_vector;
  const std::int64_t winners = direct_conv_whole_vectors(shape.out_channels * shape.out_h() * shape.out_w() + direct_conv_widest_vector);
  return static_cast<std::size_t>(direct_conv_whole_vectors(layout.floats()) + sums + winners);
}

EMBER_SIMD_FAMILY_TABLE(conv_pool_grad, ConvPoolGradKernels)

}  // namespace ember::simd
