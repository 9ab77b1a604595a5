#pragma once
// Instruction-set choice for simd/ kernels. Every kernel family is compiled once per
// instruction set (see cmake/EmberSimd.cmake); the set used is chosen once, at start-up,
// from what the CPU reports. EMBER_ISA=sse4_2|avx2|avx512 in the environment forces a
// lower set (for tests and benchmarks); a set the CPU lacks is refused, not faked.
#include <span>
#include <string_view>

namespace ember::simd {

enum class Isa : int { sse4_2 = 0, avx2 = 1, avx512 = 2 };
inline constexpr int isa_count = 3;

std::string_view isa_name(Isa isa);
bool isa_supported_by_cpu(Isa isa);
// The instruction sets this CPU runs, lowest first.
std::span<const Isa> available_isas();
// The set every kernel entry point uses; fixed for the life of the process.
Isa selected_isa();

// The table of kernels of one instruction set, built on first use and never changed.
// `Makers` are the make_<family>_kernels<Arch> instantiations in Isa order. Only the
// requested set's maker runs: it is compiled with that set's flags, so calling the
// AVX-512 one on a CPU without AVX-512 would be an illegal instruction.
[[noreturn]] void refuse_unsupported_isa(Isa isa);

template <class Kernels, Kernels (*make_sse4_2)(), Kernels (*make_avx2)(), Kernels (*make_avx512)()>
const Kernels& kernels_for(Isa isa) {
  if (!isa_supported_by_cpu(isa)) refuse_unsupported_isa(isa);
  switch (isa) {
    case Isa::sse4_2: {
      static const Kernels table = make_sse4_2();
      return table;
    }
    case Isa::avx2: {
      static const Kernels table = make_avx2();
      return table;
    }
    case Isa::avx512:
      break;
  }
  static const Kernels table = make_avx512();
  return table;
}

}  // namespace ember::simd
