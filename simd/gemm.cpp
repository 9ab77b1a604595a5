#include "simd/gemm.h"

#include "simd/arch.h"

namespace ember::simd {

EMBER_SIMD_FAMILY_TABLE(gemm, GemmKernels)

}  // namespace ember::simd
