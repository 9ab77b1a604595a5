#include "simd/attention.h"

#include "simd/arch.h"

namespace ember::simd {

EMBER_SIMD_FAMILY_TABLE(attention, AttentionKernels)

}  // namespace ember::simd
