#include "simd/dispatch.h"

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <xsimd/xsimd.hpp>

namespace ember::simd {

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::sse4_2: return "sse4_2";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "unknown";
}

bool isa_supported_by_cpu(Isa isa) {
  const auto cpu = xsimd::available_architectures();
  switch (isa) {
    case Isa::sse4_2: return cpu.sse4_2;
    case Isa::avx2: return cpu.fma3_avx2;
    case Isa::avx512: return cpu.avx512bw;
  }
  return false;
}

std::span<const Isa> available_isas() {
  static const std::vector<Isa> isas = [] {
    std::vector<Isa> found;
    for (Isa isa : {Isa::sse4_2, Isa::avx2, Isa::avx512}) {
      if (isa_supported_by_cpu(isa)) found.push_back(isa);
    }
    return found;
  }();
  return isas;
}

namespace {

Isa choose_isa() {
  const auto isas = available_isas();
  if (isas.empty()) {
    // No exception can be reported from a static initializer in a useful way; the CLI's
    // `ember info` and the library's first kernel call both surface this message.
    throw std::runtime_error("ember needs a CPU with SSE4.2; this one reports none of SSE4.2, AVX2+FMA, AVX-512BW");
  }
  Isa best = isas.back();
  if (const char* forced = std::getenv("EMBER_ISA"); forced != nullptr && *forced != '\0') {
    for (Isa isa : {Isa::sse4_2, Isa::avx2, Isa::avx512}) {
      if (isa_name(isa) == forced) {
        if (!isa_supported_by_cpu(isa)) {
          throw std::runtime_error("EMBER_ISA=" + std::string(forced) + " but this CPU does not support it");
        }
        return isa;
      }
    }
    throw std::runtime_error("EMBER_ISA=" + std::string(forced) + " is not one of sse4_2, avx2, avx512");
  }
  return best;
}

}  // namespace

Isa selected_isa() {
  static const Isa isa = choose_isa();
  return isa;
}

}  // namespace ember::simd

namespace ember::simd {

void refuse_unsupported_isa(Isa isa) {
  throw std::runtime_error("the " + std::string(isa_name(isa)) + " kernels were asked for, but this CPU does not support " +
                           std::string(isa_name(isa)));
}

}  // namespace ember::simd
