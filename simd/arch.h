#pragma once
// The xsimd architectures ember compiles its kernels for, in Isa order. Included by
// `<family>_impl.h` (compiled per instruction set) and `<family>.cpp` (baseline).
//
// Rule for `_impl.h` files: every function must be a template on Arch or sit in an
// anonymous namespace. A plain inline function compiled in several per-ISA translation
// units is one symbol to the linker, which may keep the AVX-512 copy for every caller.
#include <xsimd/xsimd.hpp>

#include "simd/dispatch.h"

namespace ember::simd {

using ArchSse42 = xsimd::sse4_2;
using ArchAvx2 = xsimd::fma3<xsimd::avx2>;
using ArchAvx512 = xsimd::avx512bw;

}  // namespace ember::simd

// Declares the per-ISA instantiations of make_<family>_kernels (defined in generated
// translation units) and defines <family>_kernels_for(Isa) on top of them.
#define EMBER_SIMD_FAMILY_TABLE(family, Kernels)                                          \
  extern template Kernels make_##family##_kernels<ArchSse42>();                            \
  extern template Kernels make_##family##_kernels<ArchAvx2>();                             \
  extern template Kernels make_##family##_kernels<ArchAvx512>();                           \
  const Kernels& family##_kernels_for(Isa isa) {                                          \
    return kernels_for<Kernels, make_##family##_kernels<ArchSse42>,                       \
                       make_##family##_kernels<ArchAvx2>, make_##family##_kernels<ArchAvx512>>( \
        isa);                                                                              \
  }                                                                                        \
  const Kernels& family##_kernels() {                                                     \
    static const Kernels& selected = family##_kernels_for(selected_isa());                 \
    return selected;                                                                       \
  }
