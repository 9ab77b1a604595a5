#include "simd/activation.h"

#include "simd/arch.h"

namespace ember::simd {

EMBER_SIMD_FAMILY_TABLE(activation, ActivationKernels)

}  // namespace ember::simd
