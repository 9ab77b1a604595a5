#pragma once
// Generic body of ember's GEMM (simd/gemm.h), compiled once per instruction set. Every
// function is a template on Arch (see simd/arch.h).
//
// C (M x N) = op(A) (M x K) * op(B) (K x N), row-major, the GotoBLAS/BLIS way (Goto and
// van de Geijn 2008; Van Zee and van de Geijn 2015), as simd/gemm_plan.h plans it:
//
//   for jc over N in NC columns            B panel (KC x NC) stays in L3
//     for pc over K in KC steps            pack op(B)[pc.., jc..] into column slivers
//       for ic over M in MC rows           A panel (MC x KC) stays in L2
//         pack op(A)[ic.., pc..]           (row slivers, or op(A)^T slivers when transposed)
//         for each B sliver, each A sliver: register tile (B sliver stays in L1)
//
// Packing turns every transpose combination into the same k-major layout, so one
// micro-kernel template (Rows broadcast rows x NV loaded vectors of accumulators) serves
// all four and both orientations; the normal one broadcasts op(A) and loads op(B), the
// transposed one broadcasts op(B) and loads op(A)^T, computing C^T tiles that are
// transposed on the way out. Every row count up to the plan's has its own kernel, and a
// sliver's last vector is zero-padded, so the only padding FMAs are in the last vector
// along N (normal) or M (transposed). The epilogue (C +=, bias, activation) runs on the
// tile while it is in registers (or on a copy, at edges and for transposed tiles): C is
// read back for every K block after the first, and bias and activation come at the last.
// A prepacked op(B) (gemm_pack_b) is the same slivers over all of K and N (the dot
// orientation reads them along N, reproducing its own order of sums).
//
// Threads split C into a grid of parts on tile boundaries; each thread runs the loops
// above on its part with its own panels. K is never split and every element sums its K
// blocks in the same order, so C does not depend on the thread count or the tiling.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <type_traits>

#include "simd/activation_impl.h"
#include "simd/arch.h"
#include "simd/gemm.h"

namespace ember::simd {

template <class Arch>
struct GemmTraits {
  using Batch = xsimd::batch<float, Arch>;
  static constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  // Tile of the unpacked broadcast kernel (simd/attention_impl.h's blocks), MR x NR with
  // NR = two vectors: 2 MR accumulators + 2 B vectors + 1 broadcast fill the register
  // file (6 x 16 with AVX2's 16 ymm, 14 x 32 with AVX-512's 32 zmm), over K blocks of KC.
  static constexpr int mr = width >= 16 ? 14 : 6;
  static constexpr std::int64_t nr = 2 * width;
  static constexpr std::int64_t kc = 256;
  // Packing from rows contiguous along K is a transpose, done in tw x tw blocks.
  static constexpr int tw = Arch::version() >= xsimd::avx::version() ? 8 : 4;
  // Dot tile of the unpacked kernel for op(B) = B^T: rows of A x rows of B accumulators.
  static constexpr int dot_a_rows = width >= 16 ? 4 : 2;
  static constexpr int dot_b_rows = 4;
};

// ---------------------------------------------------------------------------------------
// Packing

// dst[k * dst_stride + r] = src[r * src_stride + k] for k < tw and r < Rows (Rows <= tw).
// Writes tw floats per k: lanes Rows.. are zero and spill into what follows dst row k.
template <class Arch, int Rows>
[[gnu::always_inline]] inline void transpose_block(const float* src, std::int64_t src_stride, float* dst,
                                                   std::int64_t dst_stride) {
  if constexpr (GemmTraits<Arch>::tw == 8) {
    __m256 r[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) r[i] = i < Rows ? _mm256_loadu_ps(src + i * src_stride) : _mm256_setzero_ps();
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst + 0 * dst_stride, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + 1 * dst_stride, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * dst_stride, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * dst_stride, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * dst_stride, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * dst_stride, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * dst_stride, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * dst_stride, _mm256_permute2f128_ps(s3, s7, 0x31));
  } else {
    __m128 r[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) r[i] = i < Rows ? _mm_loadu_ps(src + i * src_stride) : _mm_setzero_ps();
    _MM_TRANSPOSE4_PS(r[0], r[1], r[2], r[3]);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) _mm_storeu_ps(dst + i * dst_stride, r[i]);
  }
}

// The row groups [R0, R0 + tw) of one tw-wide step along K, highest first: a partial top
// group spills (zeros) past column Rows of dst, maybe into the next row of dst, which the
// lower groups then overwrite.
template <class Arch, int Rows, int R0>
[[gnu::always_inline]] inline void transpose_groups(const float* src, std::int64_t src_stride, float* dst,
                                                    std::int64_t dst_stride) {
  constexpr int tw = GemmTraits<Arch>::tw;
  transpose_block<Arch, std::min(tw, Rows - R0)>(src + R0 * src_stride, src_stride, dst + R0, dst_stride);
  if constexpr (R0 > 0) transpose_groups<Arch, Rows, R0 - tw>(src, src_stride, dst, dst_stride);
}

// dst (kc x Rows, row stride dst_stride >= Rows) = src (Rows x kc, row stride
// src_stride)^T. May write up to tw floats past column Rows of a row (zeros), and past
// dst[(kc - 1) * dst_stride + Rows] (panels keep that slack).
template <class Arch, int Rows>
void pack_transposed(const float* src, std::int64_t src_stride, std::int64_t kc, float* dst, std::int64_t dst_stride) {
  constexpr int tw = GemmTraits<Arch>::tw;
  std::int64_t k = 0;
  for (; k + tw <= kc; k += tw) {
    transpose_groups<Arch, Rows, (Rows - 1) / tw * tw>(src + k, src_stride, dst + k * dst_stride, dst_stride);
  }
  for (; k < kc; ++k) {
#pragma GCC unroll 32
    for (int r = 0; r < Rows; ++r) dst[k * dst_stride + r] = src[r * src_stride + k];
  }
}

// pack_transposed for a sliver width known at run time: the widths the tilings use (up
// to 16 rows, whole vectors up to 4) take the transposing path; false for any other.
template <class Arch, int S = 1>
bool pack_transposed_any(std::int64_t rows, const float* src, std::int64_t src_stride, std::int64_t kc, float* dst,
                         std::int64_t dst_stride) {
  constexpr int W = static_cast<int>(GemmTraits<Arch>::width);
  if constexpr (S > 4 * W) {
    return false;
  } else {
    if constexpr (S <= 16 || S % W == 0) {
      if (rows == S) {
        pack_transposed<Arch, S>(src, src_stride, kc, dst, dst_stride);
        return true;
      }
    }
    return pack_transposed_any<Arch, S + 1>(rows, src, src_stride, kc, dst, dst_stride);
  }
}

// Where op(X)(r, k) lies: X[r*ld + k] when contiguous along K, else X[k*ld + r]. op(A)
// is read by rows i (contiguous along K unless trans_a), op(B) by columns j (contiguous
// along K when trans_b).
struct PackSource {
  const float* X;
  std::int64_t ld;
  bool k_contiguous;
};
template <class Arch>
PackSource source_a(Transpose trans_a, const float* A, std::int64_t lda) { return {A, lda, trans_a == Transpose::no}; }
template <class Arch>
PackSource source_b(Transpose trans_b, const float* B, std::int64_t ldb) { return {B, ldb, trans_b == Transpose::yes}; }

// One sliver, k-major: dst[k*width + r] = op(r0 + r, k0 + k) for r < valid, 0 for
// valid <= r < width, k < kc. May write up to tw floats past dst[kc * width]. (width is
// valid, or valid rounded up to whole vectors.)
template <class Arch>
void pack_sliver(const PackSource& s, std::int64_t r0, std::int64_t valid, std::int64_t width, std::int64_t k0,
                 std::int64_t kc, float* dst) {
  if (s.k_contiguous) {
    // Whole vectors, then the rest (fewer than a vector: at most 16 rows), by transposes.
    constexpr std::int64_t W = GemmTraits<Arch>::width;
    const float* src = s.X + r0 * s.ld + k0;
    const std::int64_t whole = valid == width ? valid : valid / W * W, rest = valid - whole;
    const bool fast = (whole == 0 || pack_transposed_any<Arch>(whole, src, s.ld, kc, dst, width)) &&
                      (rest == 0 || pack_transposed_any<Arch>(rest, src + whole * s.ld, s.ld, kc, dst + whole, width));
    if (fast && valid == width) return;
    for (std::int64_t k = 0; k < kc; ++k) {
      if (!fast) {
        for (std::int64_t r = 0; r < valid; ++r) dst[k * width + r] = src[r * s.ld + k];
      }
      std::fill(dst + k * width + valid, dst + (k + 1) * width, 0.0f);
    }
    return;
  }
  for (std::int64_t k = 0; k < kc; ++k) {
    const float* row = s.X + (k0 + k) * s.ld + r0;
    std::copy(row, row + valid, dst + k * width);
    std::fill(dst + k * width + valid, dst + (k + 1) * width, 0.0f);
  }
}

// op(X)[r0 : r0+count, k0 : k0+kc] as slivers of `sliver` rows one after another (each
// kc x width, width = its rows rounded up to a multiple of `round`), so sliver s starts
// at dst + s * sliver * kc.
template <class Arch>
void pack_panel(const PackSource& s, std::int64_t r0, std::int64_t count, std::int64_t k0, std::int64_t kc,
                std::int64_t sliver, std::int64_t round, float* dst) {
  for (std::int64_t r = 0; r < count; r += sliver) {
    const std::int64_t valid = std::min(sliver, count - r);
    const std::int64_t width = (valid + round - 1) / round * round;
    pack_sliver<Arch>(s, r0 + r, valid, width, k0, kc, dst);
    dst += width * kc;
  }
}

// ---------------------------------------------------------------------------------------
// Micro-kernel and epilogue

// What a tile does with its sums at the end of one K block.
struct TileEpilogue {
  bool add_c = false;             // C holds a partial result to add to (earlier K block, or accumulate)
  bool last = false;              // last K block: bias and activation follow
  const float* bias = nullptr;    // bias at the tile's first column, or nullptr
  Activation activation = Activation::none;
};

// One vector of C: v (+ C) (+ bias, then activation at the last K block). The bias is
// a vector, or one value for every lane (a transposed tile's row is one column of C).
template <class Arch>
[[gnu::always_inline]] inline xsimd::batch<float, Arch> finish_vector(xsimd::batch<float, Arch> v, const float* c,
                                                                      const float* bias, const TileEpilogue& e,
                                                                      bool broadcast_bias = false) {
  using Batch = xsimd::batch<float, Arch>;
  if (e.add_c) v = Batch::load_unaligned(c) + v;
  if (!e.last) return v;
  if (bias != nullptr) v += broadcast_bias ? Batch(*bias) : Batch::load_unaligned(bias);
  switch (e.activation) {
    case Activation::none: break;
    case Activation::relu: v = xsimd::max(v, Batch(0.0f)); break;
    case Activation::gelu: v = gelu_erf_value<Arch>(v); break;
    case Activation::gelu_tanh: v = gelu_tanh_value<Arch>(v); break;
  }
  return v;
}

// C tile (rows x cols, at most MR x NR) from one K block: the A sliver times the packed
// One row of C from a tile's sums: n values through finish_vector, whole vectors in
// place and the rest on zero-padded copies, so nothing outside C is read or written and
// every element gets the same float operations.
template <class Arch>
void finish_row(const float* sums, std::int64_t n, float* c, const float* bias, const TileEpilogue& e) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = GemmTraits<Arch>::width;
  std::int64_t j = 0;
  for (; j + W <= n; j += W) {
    finish_vector<Arch>(Batch::load_unaligned(sums + j), c + j, bias != nullptr ? bias + j : nullptr, e).store_unaligned(c + j);
  }
  if (j == n) return;
  alignas(64) float s[W] = {}, c_tile[W] = {}, bias_tile[W] = {};
  std::copy(sums + j, sums + n, s);
  if (e.add_c) std::copy(c + j, c + n, c_tile);
  if (bias != nullptr) std::copy(bias + j, bias + n, bias_tile);
  finish_vector<Arch>(Batch::load_aligned(s), c_tile, bias != nullptr ? bias_tile : nullptr, e).store_aligned(c_tile);
  std::copy(c_tile, c_tile + (n - j), c + j);
}

// One register tile over one K block: Rows broadcast rows x NV loaded vectors.
struct TileArgs {
  std::int64_t kc = 0;
  const float* a = nullptr;  // broadcast operand: row r at step k is a[k * a_step + r]
  std::int64_t a_step = 0;
  const float* b = nullptr;  // loaded operand: vector v at step k is b[k * b_step + v * width]
  std::int64_t b_step = 0;
  float* c = nullptr;        // C at the tile's first element
  std::int64_t ldc = 0;
  std::int64_t lanes = 0;    // lanes of the NV vectors that lie inside C
  // Normal: tile row r is row r of C, lane l column l. Transposed: row r is column r of C,
  // lane l row l.
  bool transposed = false;
  TileEpilogue e;            // e.bias: at the tile's first column of C
};

// A transposed tile's sums into C: the epilogue in the tile's layout (C gathered when it
// is added to), the result scattered to C row by row.
template <class Arch, int Rows, int NV>
[[gnu::always_inline]] inline void store_tile_transposed(xsimd::batch<float, Arch> (&acc)[Rows][NV], const TileArgs& t) {
  constexpr std::int64_t W = GemmTraits<Arch>::width, tile_row = NV * W;
  alignas(64) float c_tile[Rows * NV * W];
  if (t.e.add_c) {
    std::fill(c_tile, c_tile + Rows * tile_row, 0.0f);
    for (std::int64_t l = 0; l < t.lanes; ++l) {
      for (int r = 0; r < Rows; ++r) c_tile[r * tile_row + l] = t.c[l * t.ldc + r];
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) {
    const float* bias = t.e.bias != nullptr ? t.e.bias + r : nullptr;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* at = c_tile + r * tile_row + v * W;
      finish_vector<Arch>(acc[r][v], at, bias, t.e, true).store_aligned(at);
    }
  }
  for (std::int64_t l = 0; l < t.lanes; ++l) {
    for (int r = 0; r < Rows; ++r) t.c[l * t.ldc + r] = c_tile[r * tile_row + l];
  }
}

// The tile's sums into C (see TileArgs). Whole normal tiles go straight from registers;
// normal edge tiles through a copy of the sums. (Accumulators leave registers through compile-time
// indices only, or GCC would keep them in memory throughout.)
template <class Arch, int Rows, int NV>
[[gnu::always_inline]] inline void store_tile(xsimd::batch<float, Arch> (&acc)[Rows][NV], const TileArgs& t) {
  constexpr std::int64_t W = GemmTraits<Arch>::width;
  if (t.transposed) {
    store_tile_transposed<Arch, Rows, NV>(acc, t);
    return;
  }
  if (t.lanes == NV * W) {
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      float* row = t.c + r * t.ldc;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const float* bias = t.e.bias != nullptr ? t.e.bias + v * W : nullptr;
        finish_vector<Arch>(acc[r][v], row + v * W, bias, t.e).store_unaligned(row + v * W);
      }
    }
    return;
  }
  alignas(64) float sums[Rows * NV * W];
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v].store_aligned(sums + (r * NV + v) * W);
  }
  for (int r = 0; r < Rows; ++r) finish_row<Arch>(sums + r * NV * W, t.lanes, t.c + r * t.ldc, t.e.bias, t.e);
}

// The micro-kernel: sums over the K block in registers, then store_tile. DirectA: the
// broadcast rows are rows of A read in place, row r at step k at a[r * a_step + k].
template <class Arch, int Rows, int NV, bool DirectA>
void micro_tile(const TileArgs& t) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = GemmTraits<Arch>::width;
  // C is touched only after the K loop: start fetching it now (two lines per row: a row
  // of the tile may straddle them), so its misses overlap the FMAs.
  if (!t.transposed) {
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      __builtin_prefetch(t.c + r * t.ldc, 1);
      __builtin_prefetch(t.c + r * t.ldc + NV * W - 1, 1);
    }
  }
  Batch acc[Rows][NV];
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = Batch(0.0f);
  }
  const float* a = t.a;
  const float* b = t.b;
#pragma GCC unroll 2
  for (std::int64_t k = 0; k < t.kc; ++k, a += DirectA ? 1 : t.a_step, b += t.b_step) {
    Batch loaded[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) loaded[v] = Batch::load_unaligned(b + v * W);
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      const Batch x(a[DirectA ? r * t.a_step : r]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = xsimd::fma(x, loaded[v], acc[r][v]);
    }
  }
  store_tile<Arch, Rows, NV>(acc, t);
}

// A one-row tile spanning slivers (GemmPlan::tile_slivers): NV vectors, those of one
// sliver side by side (`sliver_vectors` each, the next sliver sliver_stride floats on),
// each a whole sliver's columns, all of them consecutive columns of C. Every element is
// micro_tile's FMA chain and epilogue.
template <class Arch, int NV>
void row_tile(const TileArgs& t, std::int64_t sliver_vectors, std::int64_t sliver_stride) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = GemmTraits<Arch>::width;
  __builtin_prefetch(t.c, 1);
  __builtin_prefetch(t.c + NV * W - 1, 1);
  std::int64_t offset[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) offset[v] = v / sliver_vectors * sliver_stride + v % sliver_vectors * W;
  Batch acc[1][NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[0][v] = Batch(0.0f);
  const float* a = t.a;
  const float* b = t.b;
  for (std::int64_t k = 0; k < t.kc; ++k, a += t.a_step, b += t.b_step) {
    const Batch x(*a);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[0][v] = xsimd::fma(x, Batch::load_unaligned(b + offset[v]), acc[0][v]);
  }
  store_tile<Arch, 1, NV>(acc, t);
}

template <class Arch, int NV = 2>
void run_row_tile(std::int64_t vectors, const TileArgs& t, std::int64_t sliver_vectors, std::int64_t sliver_stride) {
  if constexpr (NV < 8) {
    if (vectors > NV) return run_row_tile<Arch, NV + 1>(vectors, t, sliver_vectors, sliver_stride);
  }
  row_tile<Arch, NV>(t, sliver_vectors, sliver_stride);
}

// The instruction set Arch is (for the planner's constants).
template <class Arch>
constexpr Isa gemm_isa() {
  if constexpr (std::is_same_v<Arch, ArchAvx512>) return Isa::avx512;
  else if constexpr (std::is_same_v<Arch, ArchAvx2>) return Isa::avx2;
  else return Isa::sse4_2;
}

// micro_tile with `rows` (at most Rows) as a template argument: every row count has its
// own kernel, so a tile of fewer rows issues no padding FMAs.
template <class Arch, int NV, int Rows, bool DirectA>
void run_tile_rows(std::int64_t rows, const TileArgs& t) {
  if constexpr (Rows > 1) {
    if (rows < Rows) {
      run_tile_rows<Arch, NV, Rows - 1, DirectA>(rows, t);
      return;
    }
  }
  micro_tile<Arch, Rows, NV, DirectA>(t);
}

// A tile of rows x vectors, within the register budget of simd/gemm_plan.h.
template <class Arch, bool DirectA = false>
void run_tile(std::int64_t rows, std::int64_t vectors, const TileArgs& t) {
  constexpr GemmIsaTraits T = gemm_isa_traits_table[static_cast<int>(gemm_isa<Arch>())];
  static_assert(T.width == GemmTraits<Arch>::width);
  switch (vectors) {
    case 1: run_tile_rows<Arch, 1, T.max_rows[1], DirectA>(rows, t); return;
    case 2: run_tile_rows<Arch, 2, T.max_rows[2], DirectA>(rows, t); return;
    case 3: run_tile_rows<Arch, 3, T.max_rows[3], DirectA>(rows, t); return;
    default:
      if constexpr (T.max_vectors >= 4) run_tile_rows<Arch, 4, T.max_rows[4], DirectA>(rows, t);
      return;
  }
}
// C (M x N) = (C if accumulate, else 0) + bias, then activation: the whole GEMM when K = 0.
template <class Arch>
void epilogue_only(std::int64_t M, std::int64_t N, float* C, std::int64_t ldc, const GemmEpilogue& epilogue) {
  using Batch = typename GemmTraits<Arch>::Batch;
  constexpr std::int64_t W = GemmTraits<Arch>::width;
  TileEpilogue e;
  e.add_c = epilogue.accumulate;
  e.last = true;
  e.activation = epilogue.activation;
  for (std::int64_t i = 0; i < M; ++i) {
    float* row = C + i * ldc;
    std::int64_t j = 0;
    for (; j + W <= N; j += W) {
      const float* bias = epilogue.bias != nullptr ? epilogue.bias + j : nullptr;
      finish_vector<Arch>(Batch(0.0f), row + j, bias, e).store_unaligned(row + j);
    }
    if (j < N) {
      alignas(64) float c_tile[W] = {}, bias_tile[W] = {};
      std::copy(row + j, row + N, c_tile);
      if (epilogue.bias != nullptr) std::copy(epilogue.bias + j, epilogue.bias + N, bias_tile);
      finish_vector<Arch>(Batch(0.0f), c_tile, epilogue.bias != nullptr ? bias_tile : nullptr, e).store_aligned(c_tile);
      std::copy(c_tile, c_tile + (N - j), row + j);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Unpacked kernels, without scratch: for the small blocks of simd/attention_impl.h and
// the shapes gemm_is_small sends past the packing. The broadcast kernel computes
// C (M x N) (+)= op(A) * B with B contiguous along N, A's elements broadcast straight
// from memory.

// One block of C, Rows x Vectors vectors, from B rows contiguous along N (stride ldb):
// C[i][j] (+)= sum over k of A(i, k) * B[k][j], A(i, k) = a[i*a_row + k*a_col]. Only the
// first `cols` columns are stored.
template <class Arch, int Rows, int Vectors>
[[gnu::always_inline]] inline void broadcast_block(std::int64_t cols, std::int64_t K, const float* a, std::int64_t a_row,
                                                   std::int64_t a_col, const float* b, std::int64_t ldb, float* c,
                                                   std::int64_t ldc, bool overwrite) {
  using Batch = typename GemmTraits<Arch>::Batch;
  constexpr std::int64_t W = GemmTraits<Arch>::width;
  Batch acc[Vectors][Rows];
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) acc[v][r] = Batch(0.0f);
  }
  for (std::int64_t k = 0; k < K; ++k) {
    Batch bv[Vectors];
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) bv[v] = Batch::load_unaligned(b + k * ldb + v * W);
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      const Batch x(a[r * a_row + k * a_col]);
#pragma GCC unroll 4
      for (int v = 0; v < Vectors; ++v) acc[v][r] = xsimd::fma(x, bv[v], acc[v][r]);
    }
  }
  const bool whole = cols == Vectors * W;
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) {
    float* row = c + r * ldc;
    if (whole) {
#pragma GCC unroll 4
      for (int v = 0; v < Vectors; ++v) {
        const Batch sum = overwrite ? acc[v][r] : Batch::load_unaligned(row + v * W) + acc[v][r];
        sum.store_unaligned(row + v * W);
      }
    } else {
      alignas(64) float tile[Vectors * W];
#pragma GCC unroll 4
      for (int v = 0; v < Vectors; ++v) acc[v][r].store_aligned(tile + v * W);
      for (std::int64_t j = 0; j < cols; ++j) row[j] = overwrite ? tile[j] : row[j] + tile[j];
    }
  }
}

// One tile of C (Rows x up to 2 vectors; fewer columns at the right edge). A tile of
// whole vectors reads B in place; a narrower one first copies its columns of B
// (K <= KC rows) zero-padded to whole vectors, so nothing is read past the matrix. Every
// element is the same FMA chain along K either way.
template <class Arch, int Rows>
void broadcast_tile(std::int64_t cols, std::int64_t K, const float* a, std::int64_t a_row, std::int64_t a_col,
                    const float* b, std::int64_t ldb, float* c, std::int64_t ldc, bool overwrite) {
  using T = GemmTraits<Arch>;
  constexpr std::int64_t W = T::width;
  if (cols == 2 * W) return broadcast_block<Arch, Rows, 2>(cols, K, a, a_row, a_col, b, ldb, c, ldc, overwrite);
  if (cols == W) return broadcast_block<Arch, Rows, 1>(cols, K, a, a_row, a_col, b, ldb, c, ldc, overwrite);
  const std::int64_t width = cols <= W ? W : 2 * W;
  alignas(64) float padded[T::kc * 2 * W];
  for (std::int64_t k = 0; k < K; ++k) {
    std::memcpy(padded + k * width, b + k * ldb, static_cast<std::size_t>(cols) * sizeof(float));
    std::memset(padded + k * width + cols, 0, static_cast<std::size_t>(width - cols) * sizeof(float));
  }
  if (width == W) return broadcast_block<Arch, Rows, 1>(cols, K, a, a_row, a_col, padded, W, c, ldc, overwrite);
  broadcast_block<Arch, Rows, 2>(cols, K, a, a_row, a_col, padded, 2 * W, c, ldc, overwrite);
}

// broadcast_tile with the row count as a template argument, so a tile of fewer rows than
// the register block (the last rows of C) still takes the fast path.
template <class Arch, int Rows>
void broadcast_tile_rows(std::int64_t rows, std::int64_t cols, std::int64_t K, const float* a, std::int64_t a_row,
                         std::int64_t a_col, const float* b, std::int64_t ldb, float* c, std::int64_t ldc, bool overwrite) {
  if constexpr (Rows > 1) {
    if (rows < Rows) {
      broadcast_tile_rows<Arch, Rows - 1>(rows, cols, K, a, a_row, a_col, b, ldb, c, ldc, overwrite);
      return;
    }
  }
  broadcast_tile<Arch, Rows>(cols, K, a, a_row, a_col, b, ldb, c, ldc, overwrite);
}

// C (M x N) (+)= op(A) (M x K) * B (K x N), B row-major with stride ldb; any M, N, K >= 0.
template <class Arch>
void gemm_unpacked(Transpose trans_a, std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                   const float* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
  using T = GemmTraits<Arch>;
  constexpr int R = T::mr;
  constexpr std::int64_t tile_cols = T::nr;
  constexpr std::int64_t n_block = 512;  // a K block of B this wide stays in L2
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) {
      for (std::int64_t i = 0; i < M; ++i) std::memset(C + i * ldc, 0, static_cast<std::size_t>(N) * sizeof(float));
    }
    return;
  }
  const std::int64_t a_row = trans_a == Transpose::yes ? 1 : lda;
  const std::int64_t a_col = trans_a == Transpose::yes ? lda : 1;
  for (std::int64_t k0 = 0; k0 < K; k0 += T::kc) {
    const std::int64_t kc = std::min(T::kc, K - k0);
    const bool overwrite = !accumulate && k0 == 0;
    for (std::int64_t j0 = 0; j0 < N; j0 += n_block) {
      const std::int64_t nc = std::min(n_block, N - j0);
      for (std::int64_t i = 0; i < M; i += R) {
        const std::int64_t rows = std::min<std::int64_t>(R, M - i);
        for (std::int64_t j = j0; j < j0 + nc; j += tile_cols) {
          broadcast_tile_rows<Arch, R>(rows, std::min(tile_cols, j0 + nc - j), kc, A + i * a_row + k0 * a_col, a_row,
                                       a_col, B + k0 * ldb + j, ldb, C + i * ldc + j, ldc, overwrite);
        }
      }
    }
  }
}

// Dot-product kernel for the small shapes with op(B) = B^T.

// The sum of a vector's lanes by halves (lane i + lane i + W/2, ...): a fixed order that
// gemm_dot_packed reproduces with whole vectors.
template <class Arch>
float sum_lanes(xsimd::batch<float, Arch> v) {
  constexpr int W = static_cast<int>(GemmTraits<Arch>::width);
  alignas(64) float lanes[W];
  v.store_aligned(lanes);
#pragma GCC unroll 16
  for (int half = W / 2; half >= 1; half /= 2) {
#pragma GCC unroll 16
    for (int i = 0; i < half; ++i) lanes[i] += lanes[i + half];
  }
  return lanes[0];
}

// a * b + c as one lane of xsimd::fma (fused where the set has FMA, else multiply and
// add), so a scalar tail rounds as a vector one does.
template <class Arch>
float fma_as_lanes(float a, float b, float c) {
  using Batch = xsimd::batch<float, Arch>;
  alignas(64) float lanes[GemmTraits<Arch>::width];
  xsimd::fma(Batch(a), Batch(b), Batch(c)).store_aligned(lanes);
  return lanes[0];
}

// C[i][j] (+)= dot(A row i, B row j) over K, for a tile of ARows x BRows: lane l of a
// vector accumulator sums the k = l (mod W) below K's last whole vector, the lanes are
// summed by sum_lanes, then the last k one by one.
template <class Arch, int ARows, int BRows>
void dot_tile(std::int64_t K, const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
              std::int64_t ldc, bool overwrite) {
  using T = GemmTraits<Arch>;
  using Batch = typename T::Batch;
  constexpr std::int64_t W = T::width;
  Batch acc[ARows][BRows];
#pragma GCC unroll 16
  for (int i = 0; i < ARows; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < BRows; ++j) acc[i][j] = Batch(0.0f);
  }
  const std::int64_t k_vectors = K / W * W;
  for (std::int64_t k = 0; k < k_vectors; k += W) {
    Batch a[ARows];
#pragma GCC unroll 16
    for (int i = 0; i < ARows; ++i) a[i] = Batch::load_unaligned(A + i * lda + k);
#pragma GCC unroll 16
    for (int j = 0; j < BRows; ++j) {
      const Batch b = Batch::load_unaligned(B + j * ldb + k);
#pragma GCC unroll 16
      for (int i = 0; i < ARows; ++i) acc[i][j] = xsimd::fma(a[i], b, acc[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < ARows; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < BRows; ++j) {
      float sum = sum_lanes<Arch>(acc[i][j]);
      for (std::int64_t k = k_vectors; k < K; ++k) sum = fma_as_lanes<Arch>(A[i * lda + k], B[j * ldb + k], sum);
      float& out = C[i * ldc + j];
      out = overwrite ? sum : out + sum;
    }
  }
}

// dot_tile with a_rows <= ARows and b_rows <= BRows as template arguments: a tile at the
// edge keeps its accumulators in registers too.
template <class Arch, int ARows, int BRows>
void dot_tile_rows(std::int64_t a_rows, std::int64_t b_rows, std::int64_t K, const float* A, std::int64_t lda,
                   const float* B, std::int64_t ldb, float* C, std::int64_t ldc, bool overwrite) {
  if constexpr (ARows > 1) {
    if (a_rows < ARows) return dot_tile_rows<Arch, ARows - 1, BRows>(a_rows, b_rows, K, A, lda, B, ldb, C, ldc, overwrite);
  }
  if constexpr (BRows > 1) {
    if (b_rows < BRows) return dot_tile_rows<Arch, ARows, BRows - 1>(a_rows, b_rows, K, A, lda, B, ldb, C, ldc, overwrite);
  }
  dot_tile<Arch, ARows, BRows>(K, A, lda, B, ldb, C, ldc, overwrite);
}

// C (M x N) (+)= A (M x K) * B^T, B (N x K), both contiguous along K, in tiles of AR x BR
// (one row of A against 8 rows of B for a GEMV, so W streams past 8 accumulators).
template <class Arch, int AR, int BR>
void gemm_dot_tiles(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda, const float* B,
                    std::int64_t ldb, float* C, std::int64_t ldc, bool overwrite) {
  for (std::int64_t j = 0; j < N; j += BR) {
    const std::int64_t b_rows = std::min<std::int64_t>(BR, N - j);
    for (std::int64_t i = 0; i < M; i += AR) {
      dot_tile_rows<Arch, AR, BR>(std::min<std::int64_t>(AR, M - i), b_rows, K, A + i * lda, lda, B + j * ldb, ldb,
                                  C + i * ldc + j, ldc, overwrite);
    }
  }
}

template <class Arch>
void gemm_dot(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda, const float* B,
              std::int64_t ldb, float* C, std::int64_t ldc, bool overwrite) {
  using T = GemmTraits<Arch>;
  if (M == 1) {
    gemm_dot_tiles<Arch, 1, 8>(M, N, K, A, lda, B, ldb, C, ldc, overwrite);
  } else {
    gemm_dot_tiles<Arch, T::dot_a_rows, T::dot_b_rows>(M, N, K, A, lda, B, ldb, C, ldc, overwrite);
  }
}

// ---------------------------------------------------------------------------------------
// Blocking and threads (the plan comes from simd/gemm_plan.h)

struct GemmOperands {
  Transpose trans_a, trans_b;
  std::int64_t M, N, K;
  const float* A;
  std::int64_t lda;
  const float* B;  // unpacked op(B) source, or nullptr when prepacked
  std::int64_t ldb;
  float* C;
  std::int64_t ldc;
};

// The B slivers of one K block: sliver s (columns s * sliver_cols ..) of `width` floats
// begins at base + s * sliver_cols * k_rows + k0 * width (per-call panel: k_rows = kc,
// k0 = 0; prepacked: k_rows = K, k0 = the block's first k).
struct BSlivers {
  const float* base;
  std::int64_t sliver_cols, k_rows, k0;
};
template <class Arch>
const float* sliver_at(const BSlivers& bs, std::int64_t s, std::int64_t width) {
  return bs.base + s * bs.sliver_cols * bs.k_rows + bs.k0 * width;
}

// One block of the loops in the header: rows ic.. (mc) x columns jc.. (nc), K block pc.. (kc).
struct GemmBlock {
  std::int64_t ic, mc, jc, nc, pc, kc;
};

// The normal orientation on one block: op(A) rows packed in slivers of plan.rows (or
// read in place, plan.direct_a), broadcast against each B sliver (the B sliver stays in
// L1 over the A slivers).
template <class Arch>
void normal_block(const GemmPlan& plan, const GemmOperands& g, const BSlivers& bs, const GemmBlock& blk,
                  const TileEpilogue& e, const float* bias, float* a_panel) {
  constexpr std::int64_t W = GemmTraits<Arch>::width;
  const std::int64_t sliver = std::int64_t{plan.b_vectors} * W, rows_per_tile = plan.rows;
  if (!plan.direct_a) {
    pack_panel<Arch>(source_a<Arch>(g.trans_a, g.A, g.lda), blk.ic, blk.mc, blk.pc, blk.kc, rows_per_tile, 1, a_panel);
  }
  TileArgs t;
  t.kc = blk.kc;
  t.ldc = g.ldc;
  t.e = e;
  const std::int64_t side = sliver * plan.tile_slivers;  // a one-row tile's columns
  for (std::int64_t jr = 0; jr < blk.nc;) {
    if (plan.tile_slivers > 1 && blk.mc == 1 && jr + side <= blk.nc) {
      // Whole slivers side by side (GemmPlan::tile_slivers).
      t.lanes = side;
      t.b = sliver_at<Arch>(bs, jr / sliver, sliver);
      t.b_step = sliver;
      t.e.bias = bias != nullptr ? bias + blk.jc + jr : nullptr;
      t.c = g.C + blk.ic * g.ldc + blk.jc + jr;
      t.a = plan.direct_a ? g.A + blk.ic * g.lda + blk.pc : a_panel;
      t.a_step = 1;
      run_row_tile<Arch>(side / W, t, plan.b_vectors, bs.sliver_cols * bs.k_rows);
      jr += side;
      continue;
    }
    t.lanes = std::min(sliver, blk.nc - jr);
    const std::int64_t width = (t.lanes + W - 1) / W * W;
    t.b = sliver_at<Arch>(bs, jr / sliver, width);
    t.b_step = width;
    t.e.bias = bias != nullptr ? bias + blk.jc + jr : nullptr;
    for (std::int64_t ir = 0; ir < blk.mc; ir += rows_per_tile) {
      const std::int64_t rows = std::min(rows_per_tile, blk.mc - ir);
      t.c = g.C + (blk.ic + ir) * g.ldc + blk.jc + jr;
      if (plan.direct_a) {
        t.a = g.A + (blk.ic + ir) * g.lda + blk.pc;
        t.a_step = g.lda;
        run_tile<Arch, true>(rows, width / W, t);
      } else {
        t.a = a_panel + ir * blk.kc;
        t.a_step = rows;
        run_tile<Arch>(rows, width / W, t);
      }
    }
    jr += sliver;
  }
}

// The transposed orientation on one block: op(A)^T packed k-major in slivers of
// plan.vectors vectors along M, loaded against broadcasts from each B sliver's columns
// (cut evenly into tiles of at most plan.rows).
template <class Arch>
void transposed_block(const GemmPlan& plan, const GemmOperands& g, const BSlivers& bs, const GemmBlock& blk,
                      const TileEpilogue& e, const float* bias, float* a_panel) {
  constexpr std::int64_t W = GemmTraits<Arch>::width;
  const std::int64_t sliver = std::int64_t{plan.b_vectors} * W, a_sliver = std::int64_t{plan.vectors} * W;
  pack_panel<Arch>(source_a<Arch>(g.trans_a, g.A, g.lda), blk.ic, blk.mc, blk.pc, blk.kc, a_sliver, W, a_panel);
  TileArgs t;
  t.kc = blk.kc;
  t.ldc = g.ldc;
  t.transposed = true;
  t.e = e;
  for (std::int64_t jr = 0; jr < blk.nc; jr += sliver) {
    const std::int64_t cols = std::min(sliver, blk.nc - jr), b_width = (cols + W - 1) / W * W;
    const std::int64_t pieces = (cols + plan.rows - 1) / plan.rows, piece = (cols + pieces - 1) / pieces;
    for (std::int64_t j = 0; j < cols; j += piece) {
      const std::int64_t rows = std::min(piece, cols - j);
      t.a = sliver_at<Arch>(bs, jr / sliver, b_width) + j;
      t.a_step = b_width;
      t.e.bias = bias != nullptr ? bias + blk.jc + jr + j : nullptr;
      for (std::int64_t iu = 0; iu < blk.mc; iu += a_sliver) {
        t.lanes = std::min(a_sliver, blk.mc - iu);
        const std::int64_t width = (t.lanes + W - 1) / W * W;
        t.b = a_panel + iu * blk.kc;
        t.b_step = width;
        t.c = g.C + (blk.ic + iu) * g.ldc + blk.jc + jr + j;
        run_tile<Arch>(rows, width / W, t);
      }
    }
  }
}

// C[i0:i1, j0:j1] by the loops of the header, with this thread's panels. packed_b: the
// prepacked slivers of all of op(B), or nullptr to pack op(B) into b_panel.
template <class Arch>
void gemm_part(const GemmPlan& plan, const GemmOperands& g, const GemmEpilogue& epilogue, std::int64_t i0,
               std::int64_t i1, std::int64_t j0, std::int64_t j1, float* a_panel, float* b_panel, const float* packed_b) {
  constexpr std::int64_t W = GemmTraits<Arch>::width;
  const std::int64_t sliver = std::int64_t{plan.b_vectors} * W;
  for (std::int64_t jc = j0; jc < j1; jc += plan.nc) {
    const std::int64_t nc = std::min(plan.nc, j1 - jc);
    for (std::int64_t pc = 0; pc < g.K; pc += plan.kc) {
      const GemmBlock base{0, 0, jc, nc, pc, std::min(plan.kc, g.K - pc)};
      BSlivers bs{packed_b + jc * g.K, sliver, g.K, pc};
      if (packed_b == nullptr) {
        pack_panel<Arch>(source_b<Arch>(g.trans_b, g.B, g.ldb), jc, nc, pc, base.kc, sliver, W, b_panel);
        bs = BSlivers{b_panel, sliver, base.kc, 0};
      }
      TileEpilogue e;
      e.add_c = pc > 0 || epilogue.accumulate;
      e.last = pc + base.kc == g.K;
      e.activation = epilogue.activation;
      for (std::int64_t ic = i0; ic < i1; ic += plan.mc) {
        GemmBlock blk = base;
        blk.ic = ic;
        blk.mc = std::min(plan.mc, i1 - ic);
        if (plan.orientation == GemmOrientation::normal) {
          normal_block<Arch>(plan, g, bs, blk, e, epilogue.bias, a_panel);
        } else {
          transposed_block<Arch>(plan, g, bs, blk, e, epilogue.bias, a_panel);
        }
      }
    }
  }
}

// The plan's parts of C, one per thread (the runner's, else OpenMP's), each with its own
// scratch panels.
template <class Arch>
void gemm_run(const GemmPlan& plan, const GemmOperands& g, const GemmEpilogue& epilogue, float* scratch,
              const float* packed_b, const PartRunner* runner) {
  auto run_part = [&](int part, float* thread_scratch) {
    const std::int64_t i0 = part / plan.n_parts * plan.part_rows, j0 = part % plan.n_parts * plan.part_cols;
    const std::int64_t i1 = std::min(g.M, i0 + plan.part_rows), j1 = std::min(g.N, j0 + plan.part_cols);
    if (i0 >= i1 || j0 >= j1) return;
    gemm_part<Arch>(plan, g, epilogue, i0, i1, j0, j1, thread_scratch, thread_scratch + plan.a_floats, packed_b);
  };
  if (plan.threads == 1 || (runner == nullptr && g.M * g.N * g.K < min_openmp_gemm_work)) {
    for (int part = 0; part < plan.threads; ++part) run_part(part, scratch + part * (plan.a_floats + plan.b_floats));
    return;
  }
  if (runner != nullptr) {
    auto part = [&](int p) { run_part(p, scratch + p * (plan.a_floats + plan.b_floats)); };
    run_parts(*runner, plan.threads, part);
    return;
  }
#pragma omp parallel num_threads(plan.threads)
  {
    // The runtime may grant fewer threads than asked: the parts are still all done.
    const int id = omp_get_thread_num(), team = omp_get_num_threads();
    for (int part = id; part < plan.threads; part += team) run_part(part, scratch + id * (plan.a_floats + plan.b_floats));
  }
}

// The bias and activation of a kernel that did not apply them in registers: a second
// pass over C.
template <class Arch>
void bias_and_activation_pass(const GemmOperands& g, const GemmEpilogue& epilogue) {
  if (epilogue.bias == nullptr && epilogue.activation == Activation::none) return;
  GemmEpilogue rest = epilogue;
  rest.accumulate = true;
  epilogue_only<Arch>(g.M, g.N, g.C, g.ldc, rest);
}

// The dot orientation (simd/gemm_plan.h): single-threaded, without scratch; bias and
// activation in a second pass over C. W is op(B)^T, row-major with stride ldw.
template <class Arch>
void gemm_dot_call(const GemmOperands& g, const float* W, std::int64_t ldw, const GemmEpilogue& epilogue) {
  gemm_dot<Arch>(g.M, g.N, g.K, g.A, g.lda, W, ldw, g.C, g.ldc, !epilogue.accumulate);
  bias_and_activation_pass<Arch>(g, epilogue);
}

template <class Arch>
void gemm(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
          std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc, const GemmEpilogue& epilogue,
          float* scratch, int threads, const PartRunner* runner) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    epilogue_only<Arch>(M, N, C, ldc, epilogue);
    return;
  }
  const GemmOperands g{trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc};
  if (gemm_uses_dot(trans_a, trans_b, M, N)) {
    gemm_dot_call<Arch>(g, B, ldb, epilogue);
    return;
  }
  gemm_run<Arch>(plan_gemm(gemm_isa<Arch>(), trans_a, trans_b, M, N, K, threads, false), g, epilogue, scratch, nullptr, runner);
}

template <class Arch>
std::size_t gemm_scratch_floats(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                                int threads) {
  return plan_gemm(gemm_isa<Arch>(), trans_a, trans_b, M, N, K, threads, false).scratch_floats();
}

// ---------------------------------------------------------------------------------------
// Prepacked op(B): op(B) in the column slivers of gemm_b_sliver_vectors, each K x width
// k-major, one after another: the B panels of every K block at once.

template <class Arch>
std::size_t gemm_packed_b_floats(Transpose trans_b, std::int64_t K, std::int64_t N) {
  return plan_packed_b_floats(gemm_isa<Arch>(), trans_b, K, N);
}

// Below this many floats one thread packs op(B) before a team would start (a 256 KiB copy).
inline constexpr std::int64_t min_parallel_pack_floats = std::int64_t{1} << 16;

// Threads pack disjoint runs of whole slivers. Every sliver but the last is a whole number
// of vectors wide, a multiple of the transpose block, so its packing writes nothing past
// its end (only the last one may spill zeros, into the slack after it): the packed bytes
// are the same for every thread count.
template <class Arch>
void gemm_pack_b(Transpose trans_b, std::int64_t K, std::int64_t N, const float* B, std::int64_t ldb, float* packed,
                 int threads) {
  if (K <= 0 || N <= 0) return;
  constexpr std::int64_t W = GemmTraits<Arch>::width;
  const std::int64_t sliver = gemm_b_sliver_vectors(gemm_isa<Arch>(), N) * W;
  const std::int64_t slivers = (N + sliver - 1) / sliver;
  const PackSource source = source_b<Arch>(trans_b, B, ldb);
  const int team = K * N < min_parallel_pack_floats ? 1 : static_cast<int>(std::min<std::int64_t>(std::max(threads, 1), slivers));
  auto pack_run = [&](int part) {
    const std::int64_t first = slivers * part / team, end = slivers * (part + 1) / team;
    const std::int64_t column = first * sliver;
    pack_panel<Arch>(source, column, std::min(N, end * sliver) - column, 0, K, sliver, W, packed + column * K);
  };
  if (team == 1) {
    pack_run(0);
    return;
  }
#pragma omp parallel num_threads(team)
  {
    // The runtime may grant fewer threads than asked: every run is still packed.
    const int id = omp_get_thread_num(), count = omp_get_num_threads();
    for (int part = id; part < team; part += count) pack_run(part);
  }
}

// Lane L of a vector in every lane (a shuffle, which spares the load a broadcast from
// memory would take).
template <int L>
struct LaneIndex {
  static constexpr unsigned get(unsigned, unsigned) { return L; }
};
template <class Arch, int L>
[[gnu::always_inline]] inline xsimd::batch<float, Arch> lane_broadcast(xsimd::batch<float, Arch> v) {
  return xsimd::swizzle(v, xsimd::make_batch_constant<xsimd::batch<std::uint32_t, Arch>, LaneIndex<L>>());
}

// acc[l] += a[l] * (row l of b), for l = L .. W-1: W steps along K.
template <class Arch, int L = 0>
[[gnu::always_inline]] inline void dot_lanes_step(xsimd::batch<float, Arch> (&acc)[GemmTraits<Arch>::width],
                                                  xsimd::batch<float, Arch> a, const float* b, std::int64_t b_step) {
  if constexpr (L < GemmTraits<Arch>::width) {
    acc[L] = xsimd::fma(lane_broadcast<Arch, L>(a), xsimd::batch<float, Arch>::load_unaligned(b + L * b_step), acc[L]);
    dot_lanes_step<Arch, L + 1>(acc, a, b, b_step);
  }
}

// dot_tile's sums for one row of A and one vector of W's rows (columns j of a B
// sliver, row stride b_step), vectorized along N: accumulator l holds, in lane j, what
// dot_tile's lane l holds for column j; then the same halving sum and tail, lane by lane.
template <class Arch>
xsimd::batch<float, Arch> dot_from_sliver(std::int64_t K, const float* a, const float* b, std::int64_t b_step) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr int W = static_cast<int>(GemmTraits<Arch>::width);
  Batch acc[W];
#pragma GCC unroll 16
  for (int l = 0; l < W; ++l) acc[l] = Batch(0.0f);
  const std::int64_t k_vectors = K / W * W;
  for (std::int64_t k = 0; k < k_vectors; k += W) {
    dot_lanes_step<Arch>(acc, Batch::load_unaligned(a + k), b + k * b_step, b_step);
  }
#pragma GCC unroll 16
  for (int half = W / 2; half >= 1; half /= 2) {
#pragma GCC unroll 16
    for (int i = 0; i < half; ++i) acc[i] = acc[i] + acc[i + half];
  }
  Batch sum = acc[0];
  for (std::int64_t k = k_vectors; k < K; ++k) sum = xsimd::fma(Batch(a[k]), Batch::load_unaligned(b + k * b_step), sum);
  return sum;
}

// The dot orientation against prepacked slivers: gemm_dot_call's bits, streaming the
// slivers (each row of A reads them once).
template <class Arch>
void gemm_dot_packed(const GemmOperands& g, const float* slivers, const GemmEpilogue& epilogue) {
  constexpr std::int64_t W = GemmTraits<Arch>::width;
  const std::int64_t sliver = gemm_b_sliver_vectors(gemm_isa<Arch>(), g.N) * W;
  for (std::int64_t first = 0; first < g.N; first += sliver) {
    const std::int64_t width = std::min(sliver, (g.N - first + W - 1) / W * W);
    for (std::int64_t jv = 0; jv < width; jv += W) {
      const std::int64_t n = std::min(W, g.N - first - jv);
      for (std::int64_t i = 0; i < g.M; ++i) {
        alignas(64) float sums[W];
        dot_from_sliver<Arch>(g.K, g.A + i * g.lda, slivers + first * g.K + jv, width).store_aligned(sums);
        float* out = g.C + i * g.ldc + first + jv;
        for (std::int64_t j = 0; j < n; ++j) out[j] = epilogue.accumulate ? out[j] + sums[j] : sums[j];
      }
    }
  }
  bias_and_activation_pass<Arch>(g, epilogue);
}

template <class Arch>
void gemm_packed(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                 std::int64_t lda, const float* packed_b, float* C, std::int64_t ldc, const GemmEpilogue& epilogue,
                 float* scratch, int threads, const PartRunner* runner) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    epilogue_only<Arch>(M, N, C, ldc, epilogue);
    return;
  }
  const GemmOperands g{trans_a, trans_b, M, N, K, A, lda, nullptr, 0, C, ldc};
  const GemmPlan plan = plan_gemm(gemm_isa<Arch>(), trans_a, trans_b, M, N, K, threads, true);
  if (plan.orientation == GemmOrientation::dot) {
    gemm_dot_packed<Arch>(g, packed_b, epilogue);
    return;
  }
  gemm_run<Arch>(plan, g, epilogue, scratch, packed_b, runner);
}

template <class Arch>
std::size_t gemm_packed_scratch_floats(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N,
                                       std::int64_t K, int threads) {
  return plan_gemm(gemm_isa<Arch>(), trans_a, trans_b, M, N, K, threads, true).scratch_floats();
}

template <class Arch>
GemmKernels make_gemm_kernels() {
  using T = GemmTraits<Arch>;
  constexpr GemmIsaTraits I = gemm_isa_traits_table[static_cast<int>(gemm_isa<Arch>())];
  return GemmKernels{&gemm<Arch>,
                     &gemm_scratch_floats<Arch>,
                     &gemm_packed_b_floats<Arch>,
                     &gemm_pack_b<Arch>,
                     &gemm_packed<Arch>,
                     &gemm_packed_scratch_floats<Arch>,
                     GemmBlocking{I.max_rows[2], 2 * T::width, 256, 144, 2048}};
}

}  // namespace ember::simd
