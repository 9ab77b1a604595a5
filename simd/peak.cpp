#include "simd/peak.h"

#include "simd/arch.h"

namespace ember::simd {

EMBER_SIMD_FAMILY_TABLE(peak, PeakKernels)

}  // namespace ember::simd
