# Kernel families in simd/ are written once, as templates on the xsimd architecture, in
# `<family>_impl.h`. This function compiles each family once per instruction set, in a
# translation unit of its own with that set's flags, so one binary runs on any x86-64
# with SSE4.2 and uses AVX2+FMA or AVX-512 where the CPU has them.
set(EMBER_ISAS sse4_2 avx2 avx512)
set(EMBER_KERNEL_OPTIMIZATION "" CACHE STRING "optimization flag for the per-ISA kernel translation units (empty: the build type's)")
set(EMBER_ISA_ARCH_sse4_2 "xsimd::sse4_2")
set(EMBER_ISA_ARCH_avx2 "xsimd::fma3<xsimd::avx2>")
set(EMBER_ISA_ARCH_avx512 "xsimd::avx512bw")
set(EMBER_ISA_FLAGS_sse4_2 -msse4.2)
set(EMBER_ISA_FLAGS_avx2 -mavx2 -mfma)
# GCC 12 warns of uninitialized variables inside its own avx512fintrin.h (a known false
# positive of the _mm512_undefined_* idiom); it says nothing about ember's code. (Clang has
# no such warning and would warn of the unknown option.)
set(EMBER_ISA_FLAGS_avx512 -mavx2 -mfma -mavx512f -mavx512cd -mavx512dq -mavx512bw -mavx512vl
    $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized$<SEMICOLON>-Wno-uninitialized>)

# ember_simd_family(<target> <family>): adds <family>.cpp and one instantiation of
# make_<family>_kernels<Arch>() (returning
# a `<Family>Kernels` table of function pointers) per instruction set to <target>.
function(ember_simd_family target family)
  foreach(isa IN LISTS EMBER_ISAS)
    set(EMBER_FAMILY ${family})
    # snake_case family, CamelCase table: batch_norm -> BatchNormKernels.
    string(REPLACE "_" ";" words ${family})
    set(EMBER_FAMILY_TYPE "")
    foreach(word IN LISTS words)
      string(SUBSTRING ${word} 0 1 first)
      string(SUBSTRING ${word} 1 -1 rest)
      string(TOUPPER ${first} first)
      string(APPEND EMBER_FAMILY_TYPE "${first}${rest}")
    endforeach()
    string(APPEND EMBER_FAMILY_TYPE "Kernels")
    set(EMBER_ARCH "${EMBER_ISA_ARCH_${isa}}")
    set(out "${CMAKE_CURRENT_BINARY_DIR}/generated/${family}_${isa}.cpp")
    configure_file("${PROJECT_SOURCE_DIR}/cmake/simd_instance.cpp.in" "${out}" @ONLY)
    target_sources(${target} PRIVATE "${out}")
    # Always optimized: at -O0 the inline standard-library helpers a kernel calls (std::min,
    # std::fill, ...) stay out of line, compiled with this set's flags, and the linker may
    # keep that copy for every caller (tests/simd/check_isa_symbols.sh checks it).
    # EMBER_KERNEL_OPTIMIZATION (the sanitizer presets: -O1) overrides the build type's
    # level: with ASan+UBSan at -O2 the GEMM's many register tilings take over 10 minutes
    # a set to compile, at -O1 about 2.
    set_source_files_properties("${out}" PROPERTIES COMPILE_OPTIONS
                                "${EMBER_ISA_FLAGS_${isa}};$<$<CONFIG:Debug>:-O2>;${EMBER_KERNEL_OPTIMIZATION}")
  endforeach()
  target_sources(${target} PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/${family}.cpp")
endfunction()
