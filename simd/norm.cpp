#include "simd/norm.h"

#include "simd/arch.h"

namespace ember::simd {

EMBER_SIMD_FAMILY_TABLE(norm, NormKernels)

}  // namespace ember::simd
