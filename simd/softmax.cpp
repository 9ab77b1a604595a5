#include "simd/softmax.h"

#include "simd/arch.h"

namespace ember::simd {

EMBER_SIMD_FAMILY_TABLE(softmax, SoftmaxKernels)

}  // namespace ember::simd
