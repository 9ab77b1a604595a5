#include "simd/batch_norm.h"

#include "simd/arch.h"

namespace ember::simd {

EMBER_SIMD_FAMILY_TABLE(batch_norm, BatchNormKernels)

}  // namespace ember::simd
