#include "simd/elementwise.h"

#include "simd/arch.h"

namespace ember::simd {

EMBER_SIMD_FAMILY_TABLE(elementwise, ElementwiseKernels)

}  // namespace ember::simd
