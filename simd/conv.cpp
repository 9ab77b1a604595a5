#include "simd/conv.h"

#include "simd/arch.h"
#include "simd/conv_layout.h"

namespace ember::simd {

std::size_t direct_conv2d_scratch_floats(const DirectConvShape& shape) {
  return static_cast<std::size_t>(direct_conv_whole_vectors(DirectConvInputLayout(shape, direct_conv_widest_vector).floats()));
}

std::size_t direct_conv2d_pool_forward_scratch_floats(const DirectConvShape& shape) {
  const std::int64_t winners = direct_conv_whole_vectors(shape.out_channels * shape.out_h() * shape.out_w() + direct_conv_widest_vector);
  return direct_conv2d_scratch_floats(shape) + static_cast<std::size_t>(winners);
}

EMBER_SIMD_FAMILY_TABLE(conv, ConvKernels)

}  // namespace ember::simd
