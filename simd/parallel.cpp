#include "simd/parallel.h"

namespace ember::simd {

PartRunner::~PartRunner() = default;

}  // namespace ember::simd
