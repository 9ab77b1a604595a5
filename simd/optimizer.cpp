#include "simd/optimizer.h"

#include "simd/arch.h"

namespace ember::simd {

EMBER_SIMD_FAMILY_TABLE(optimizer, OptimizerKernels)

}  // namespace ember::simd
