#pragma once
// Generic body of ember's GEMM (simd/gemm.h), compiled once per instruction set. Every
// function is a template on Arch (see simd/arch.h).
//
// C (M x N) = op(A) (M x K) * op(B) (K x N), row-major, the GotoBLAS/BLIS way (Goto and
// van de Geijn 2008; Van Zee and van de Geijn 2015):
//
//   for jc over N in NC columns            B panel (KC x NC) stays in L3
//     for pc over K in KC steps            pack op(B)[pc.., jc..] into NR-column slivers
//       for ic over M in MC rows           A panel (MC x KC) stays in L2
//         pack op(A)[ic.., pc..] into MR-row slivers
//         for jr over NC in NR, ir over MC in MR: micro-kernel (B sliver stays in L1)
//
// Packing turns every transpose combination into the same contiguous layout, so one
// micro-kernel (MR rows x two vectors of accumulators, A broadcast, B loaded) serves all
// four. (When C is narrow, op(A) = A is broadcast from A in place: a panel reused over
// few B slivers does not repay its packing.) Panels are zero-padded to whole slivers, so edge tiles compute a full tile and
// only store the part inside C. The epilogue (C +=, bias, activation) runs on the tile
// while it is still in registers: C is read back for every K block after the first, and
// bias and activation come at the last.
//
// Threads split C into a grid of parts on MR x NR tile boundaries; each thread runs the
// loops above on its part with its own panels. K is never split and every tile sums its
// K blocks in the same order, so C does not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <immintrin.h>

#include "simd/activation_impl.h"
#include "simd/arch.h"
#include "simd/gemm.h"

namespace ember::simd {

template <class Arch>
struct GemmTraits {
  using Batch = xsimd::batch<float, Arch>;
  static constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  // Micro-tile MR x NR, NR = two vectors: 2 MR accumulators + 2 B vectors + 1 broadcast
  // fill the register file (6 x 16 with AVX2's 16 ymm, 14 x 32 with AVX-512's 32 zmm).
  static constexpr int mr = width >= 16 ? 14 : 6;
  static constexpr std::int64_t nr = 2 * width;
  // KC: an MR x KC A sliver and a KC x NR B sliver stay in a 32 KiB L1 (6 + 16 KiB with
  // AVX2). MC: the MC x KC A panel takes under half of a 512 KiB L2. NC: the KC x NC B
  // panel (2 MiB) lives in L3.
  static constexpr std::int64_t kc = 256;
  static constexpr std::int64_t mc = width >= 16 ? 12 * mr : 24 * mr;
  static constexpr std::int64_t nc = 2048;
  // Packing from rows contiguous along K is a transpose, done in tw x tw blocks.
  static constexpr int tw = Arch::version() >= xsimd::avx::version() ? 8 : 4;
  // Below this many multiply-adds (M N K) one thread finishes before a team starts.
  static constexpr std::int64_t min_parallel_work = std::int64_t{1} << 21;
  // Widest part of C (columns) for which op(A) = A is read in place rather than packed.
  static constexpr std::int64_t direct_a_max_cols = 16 * nr;
  // Dot tile of the unpacked kernel for op(B) = B^T: rows of A x rows of B accumulators.
  static constexpr int dot_a_rows = width >= 16 ? 4 : 2;
  static constexpr int dot_b_rows = 4;
  static constexpr std::int64_t dot_max_rows = 4;
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
// group spills into the next row of dst, which the lower groups then overwrite.
template <class Arch, int Rows, int R0>
[[gnu::always_inline]] inline void transpose_groups(const float* src, std::int64_t src_stride, float* dst) {
  constexpr int tw = GemmTraits<Arch>::tw;
  transpose_block<Arch, std::min(tw, Rows - R0)>(src + R0 * src_stride, src_stride, dst + R0, Rows);
  if constexpr (R0 > 0) transpose_groups<Arch, Rows, R0 - tw>(src, src_stride, dst);
}

// dst (kc x Rows, row-major) = src (Rows x kc, row stride src_stride)^T. May write up to
// tw floats past dst[kc * Rows] (panels keep that slack).
template <class Arch, int Rows>
void pack_transposed(const float* src, std::int64_t src_stride, std::int64_t kc, float* dst) {
  constexpr int tw = GemmTraits<Arch>::tw;
  std::int64_t k = 0;
  for (; k + tw <= kc; k += tw) transpose_groups<Arch, Rows, (Rows - 1) / tw * tw>(src + k, src_stride, dst + k * Rows);
  for (; k < kc; ++k) {
#pragma GCC unroll 32
    for (int r = 0; r < Rows; ++r) dst[k * Rows + r] = src[r * src_stride + k];
  }
}

// The A panel op(A)[i0 : i0+mc, k0 : k0+kc] as MR-row slivers, each kc x MR row-major,
// rows past mc zero. op(A)(i, k) = A[i*lda + k], or A[k*lda + i] when transposed.
template <class Arch>
void pack_a(Transpose trans_a, const float* A, std::int64_t lda, std::int64_t i0, std::int64_t mc, std::int64_t k0,
            std::int64_t kc, float* dst) {
  constexpr int MR = GemmTraits<Arch>::mr;
  for (std::int64_t s = 0; s < mc; s += MR, dst += MR * kc) {
    const std::int64_t rows = std::min<std::int64_t>(MR, mc - s);
    if (trans_a == Transpose::no) {
      const float* src = A + (i0 + s) * lda + k0;
      if (rows == MR) {
        pack_transposed<Arch, MR>(src, lda, kc, dst);
      } else {
        for (std::int64_t k = 0; k < kc; ++k) {
          for (std::int64_t r = 0; r < MR; ++r) dst[k * MR + r] = r < rows ? src[r * lda + k] : 0.0f;
        }
      }
    } else {
      const float* src = A + k0 * lda + i0 + s;
      for (std::int64_t k = 0; k < kc; ++k) {
        const float* row = src + k * lda;
        if (rows == MR) {
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) dst[k * MR + r] = row[r];
        } else {
          for (std::int64_t r = 0; r < MR; ++r) dst[k * MR + r] = r < rows ? row[r] : 0.0f;
        }
      }
    }
  }
}

// The B panel op(B)[k0 : k0+kc, j0 : j0+nc] as NR-column slivers, each kc x NR row-major,
// columns past nc zero. op(B)(k, j) = B[k*ldb + j], or B[j*ldb + k] when transposed.
template <class Arch>
void pack_b(Transpose trans_b, const float* B, std::int64_t ldb, std::int64_t k0, std::int64_t kc, std::int64_t j0,
            std::int64_t nc, float* dst) {
  using Batch = typename GemmTraits<Arch>::Batch;
  constexpr std::int64_t W = GemmTraits<Arch>::width;
  constexpr std::int64_t NR = GemmTraits<Arch>::nr;
  for (std::int64_t t = 0; t < nc; t += NR, dst += NR * kc) {
    const std::int64_t cols = std::min(NR, nc - t);
    if (trans_b == Transpose::no) {
      const float* src = B + k0 * ldb + j0 + t;
      for (std::int64_t k = 0; k < kc; ++k) {
        const float* row = src + k * ldb;
        if (cols == NR) {
          Batch::load_unaligned(row).store_unaligned(dst + k * NR);
          Batch::load_unaligned(row + W).store_unaligned(dst + k * NR + W);
        } else {
          for (std::int64_t j = 0; j < NR; ++j) dst[k * NR + j] = j < cols ? row[j] : 0.0f;
        }
      }
    } else {
      const float* src = B + (j0 + t) * ldb + k0;
      if (cols == NR) {
        pack_transposed<Arch, static_cast<int>(NR)>(src, ldb, kc, dst);
      } else {
        for (std::int64_t k = 0; k < kc; ++k) {
          for (std::int64_t j = 0; j < NR; ++j) dst[k * NR + j] = j < cols ? src[j * ldb + k] : 0.0f;
        }
      }
    }
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

// One vector of C: v (+ C) (+ bias, then activation at the last K block).
template <class Arch>
[[gnu::always_inline]] inline xsimd::batch<float, Arch> finish_vector(xsimd::batch<float, Arch> v, const float* c,
                                                                      const float* bias, const TileEpilogue& e) {
  using Batch = xsimd::batch<float, Arch>;
  if (e.add_c) v = Batch::load_unaligned(c) + v;
  if (!e.last) return v;
  if (bias != nullptr) v += Batch::load_unaligned(bias);
  switch (e.activation) {
    case Activation::none: break;
    case Activation::relu: v = xsimd::max(v, Batch(0.0f)); break;
    case Activation::gelu: v = gelu_erf_value<Arch>(v); break;
    case Activation::gelu_tanh: v = gelu_tanh_value<Arch>(v); break;
  }
  return v;
}

// C tile (rows x cols, at most MR x NR) from one K block: the A sliver times the packed
// B sliver (kc x NR), then the epilogue. The A sliver is packed (kc x MR) or, DirectA,
// MR whole rows of A read in place (row stride lda).
template <class Arch, bool DirectA>
void micro_kernel(std::int64_t kc, const float* a, std::int64_t lda, const float* b, float* c, std::int64_t ldc,
                  std::int64_t rows, std::int64_t cols, const TileEpilogue& e) {
  using T = GemmTraits<Arch>;
  using Batch = typename T::Batch;
  constexpr int MR = T::mr;
  constexpr std::int64_t W = T::width;
  constexpr std::int64_t NR = T::nr;
  // The C tile is touched only after the K loop: start fetching it now (two lines per
  // row: an unaligned row of NR floats may straddle them), so its misses overlap the FMAs.
  if (rows == MR) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      __builtin_prefetch(c + r * ldc, 1);
      __builtin_prefetch(c + r * ldc + NR - 1, 1);
    }
  }
  Batch acc0[MR], acc1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = Batch(0.0f);
#pragma GCC unroll 2
  for (std::int64_t k = 0; k < kc; ++k) {
    const Batch b0 = Batch::load_unaligned(b + k * NR);
    const Batch b1 = Batch::load_unaligned(b + k * NR + W);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const Batch x(DirectA ? a[r * lda + k] : a[k * MR + r]);
      acc0[r] = xsimd::fma(x, b0, acc0[r]);
      acc1[r] = xsimd::fma(x, b1, acc1[r]);
    }
  }
  const float* bias1 = e.bias != nullptr ? e.bias + W : nullptr;
  if (rows == MR && cols == NR) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      float* row = c + r * ldc;
      finish_vector<Arch>(acc0[r], row, e.bias, e).store_unaligned(row);
      finish_vector<Arch>(acc1[r], row + W, bias1, e).store_unaligned(row + W);
    }
    return;
  }
  // Edge tile: the same vector epilogue on a zero-padded copy of the part inside C, so
  // nothing outside C is read or written. (Accumulators leave registers through
  // compile-time indices only, or GCC would keep them in memory throughout.)
  alignas(64) float sums[MR * NR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    acc0[r].store_aligned(sums + r * NR);
    acc1[r].store_aligned(sums + r * NR + W);
  }
  alignas(64) float bias_tile[NR] = {};
  if (e.bias != nullptr) std::copy(e.bias, e.bias + cols, bias_tile);
  alignas(64) float c_tile[NR] = {};
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = c + r * ldc;
    if (e.add_c) std::copy(row, row + cols, c_tile);
    const float* bias = e.bias != nullptr ? bias_tile : nullptr;
    const Batch v0 = finish_vector<Arch>(Batch::load_aligned(sums + r * NR), c_tile, bias, e);
    const Batch v1 = finish_vector<Arch>(Batch::load_aligned(sums + r * NR + W), c_tile + W, bias ? bias + W : nullptr, e);
    v0.store_aligned(c_tile);
    v1.store_aligned(c_tile + W);
    std::copy(c_tile, c_tile + cols, row);
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

// One tile of C (rows x 2 vectors, or fewer columns at the right edge):
// C[i][j] (+)= sum over k of A(i, k) * B[k][j], A(i, k) = a[i*a_row + k*a_col].
template <class Arch, int Rows>
void broadcast_tile(std::int64_t rows, std::int64_t cols, std::int64_t K, const float* a, std::int64_t a_row,
                    std::int64_t a_col, const float* b, std::int64_t ldb, float* c, std::int64_t ldc, bool overwrite) {
  using T = GemmTraits<Arch>;
  using Batch = typename T::Batch;
  constexpr std::int64_t W = T::width;
  Batch acc0[Rows], acc1[Rows];
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) acc0[r] = acc1[r] = Batch(0.0f);
  if (cols == 2 * W && rows == Rows) {
    for (std::int64_t k = 0; k < K; ++k) {
      const Batch b0 = Batch::load_unaligned(b + k * ldb);
      const Batch b1 = Batch::load_unaligned(b + k * ldb + W);
#pragma GCC unroll 16
      for (int r = 0; r < Rows; ++r) {
        const Batch x(a[r * a_row + k * a_col]);
        acc0[r] = xsimd::fma(x, b0, acc0[r]);
        acc1[r] = xsimd::fma(x, b1, acc1[r]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      float* row = c + r * ldc;
      if (overwrite) {
        acc0[r].store_unaligned(row);
        acc1[r].store_unaligned(row + W);
      } else {
        (Batch::load_unaligned(row) + acc0[r]).store_unaligned(row);
        (Batch::load_unaligned(row + W) + acc1[r]).store_unaligned(row + W);
      }
    }
    return;
  }
  // Edge tile: the same arithmetic into a local tile, B's row copied (zero-padded) first
  // so nothing is read past the matrix.
  alignas(64) float b_row[2 * W];
  for (std::int64_t k = 0; k < K; ++k) {
    std::memset(b_row, 0, sizeof b_row);
    std::memcpy(b_row, b + k * ldb, static_cast<std::size_t>(cols) * sizeof(float));
    const Batch b0 = Batch::load_aligned(b_row);
    const Batch b1 = Batch::load_aligned(b_row + W);
    for (std::int64_t r = 0; r < rows; ++r) {
      const Batch x(a[r * a_row + k * a_col]);
      acc0[r] = xsimd::fma(x, b0, acc0[r]);
      acc1[r] = xsimd::fma(x, b1, acc1[r]);
    }
  }
  alignas(64) float tile[2 * W];
  for (std::int64_t r = 0; r < rows; ++r) {
    acc0[r].store_aligned(tile);
    acc1[r].store_aligned(tile + W);
    float* row = c + r * ldc;
    for (std::int64_t j = 0; j < cols; ++j) row[j] = overwrite ? tile[j] : row[j] + tile[j];
  }
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
  broadcast_tile<Arch, Rows>(rows, cols, K, a, a_row, a_col, b, ldb, c, ldc, overwrite);
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

// C[i][j] (+)= dot(A row i, B row j) over K, for a tile of up to ARows x BRows.
template <class Arch, int ARows, int BRows>
void dot_tile(std::int64_t a_rows, std::int64_t b_rows, std::int64_t K, const float* A, std::int64_t lda, const float* B,
              std::int64_t ldb, float* C, std::int64_t ldc, bool overwrite) {
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
  if (a_rows == ARows && b_rows == BRows) {
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
  } else {
    for (std::int64_t k = 0; k < k_vectors; k += W) {
      for (std::int64_t j = 0; j < b_rows; ++j) {
        const Batch b = Batch::load_unaligned(B + j * ldb + k);
        for (std::int64_t i = 0; i < a_rows; ++i) acc[i][j] = xsimd::fma(Batch::load_unaligned(A + i * lda + k), b, acc[i][j]);
      }
    }
  }
  for (std::int64_t i = 0; i < a_rows; ++i) {
    for (std::int64_t j = 0; j < b_rows; ++j) {
      float sum = xsimd::hadd(acc[i][j]);
      for (std::int64_t k = k_vectors; k < K; ++k) sum += A[i * lda + k] * B[j * ldb + k];
      float& out = C[i * ldc + j];
      out = overwrite ? sum : out + sum;
    }
  }
}

// C (M x N) (+)= A (M x K) * B^T, B (N x K), both contiguous along K.
template <class Arch>
void gemm_dot(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda, const float* B,
              std::int64_t ldb, float* C, std::int64_t ldc, bool overwrite) {
  using T = GemmTraits<Arch>;
  constexpr int AR = T::dot_a_rows;
  constexpr int BR = T::dot_b_rows;
  for (std::int64_t j = 0; j < N; j += BR) {
    const std::int64_t b_rows = std::min<std::int64_t>(BR, N - j);
    for (std::int64_t i = 0; i < M; i += AR) {
      dot_tile<Arch, AR, BR>(std::min<std::int64_t>(AR, M - i), b_rows, K, A + i * lda, lda, B + j * ldb, ldb,
                             C + i * ldc + j, ldc, overwrite);
    }
  }
}

// Shapes where packing costs more than it saves: op(B) read once per tile of C anyway.
// - op(B) = B (K x N, rows along N) and M <= MR: the broadcast kernel reads B in place.
// - A and B both contiguous along K and M <= dot_max_rows or N = 1 (batch-1 inference
//   Y = x W^T, attention-pool scores): dot products, each row of B read once.
template <class Arch>
bool gemm_is_small(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N) {
  using T = GemmTraits<Arch>;
  if (trans_b == Transpose::no) return M <= T::mr;
  return trans_a == Transpose::no && (M <= T::dot_max_rows || N == 1);
}

// The small shapes of gemm_is_small, single-threaded, without scratch; bias and
// activation in a second pass over C.
template <class Arch>
void gemm_small(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                const GemmEpilogue& epilogue) {
  if (trans_b == Transpose::no) {
    gemm_unpacked<Arch>(trans_a, M, N, K, A, lda, B, ldb, C, ldc, epilogue.accumulate);
  } else {
    gemm_dot<Arch>(M, N, K, A, lda, B, ldb, C, ldc, !epilogue.accumulate);
  }
  if (epilogue.bias != nullptr || epilogue.activation != Activation::none) {
    GemmEpilogue rest = epilogue;
    rest.accumulate = true;
    epilogue_only<Arch>(M, N, C, ldc, rest);
  }
}

// ---------------------------------------------------------------------------------------
// Blocking and threads

// How one call is cut: C into m_parts x n_parts parts (one per thread, on tile
// boundaries), K into blocks of kc, and each thread's scratch into its A and B panels.
struct GemmPlan {
  int threads = 1;
  int m_parts = 1, n_parts = 1;
  std::int64_t part_rows = 0, part_cols = 0;
  std::int64_t kc = 0;
  // op(A) = A is read in place, not packed: only a last partial sliver of rows is.
  bool direct_a = false;
  std::int64_t a_floats = 0, b_floats = 0;  // per thread, multiples of 16 (64 bytes)
  std::size_t scratch_floats() const { return static_cast<std::size_t>(threads * (a_floats + b_floats)); }
};

template <class Arch>
GemmPlan plan_gemm(Transpose trans_a, std::int64_t M, std::int64_t N, std::int64_t K, int threads) {
  using T = GemmTraits<Arch>;
  GemmPlan plan;
  if (M <= 0 || N <= 0 || K <= 0) return plan;
  auto ceil_div = [](std::int64_t x, std::int64_t y) { return (x + y - 1) / y; };
  // K blocks of equal size (a multiple of 8 up to KC), not KC and a thin remainder.
  plan.kc = std::min(K, ceil_div(ceil_div(K, ceil_div(K, T::kc)), 8) * 8);
  const std::int64_t m_tiles = ceil_div(M, T::mr), n_tiles = ceil_div(N, T::nr);
  // Cost in multiply-adds: the largest part's tiles, plus packing (about as dear per
  // float as a tile row's FMAs), where each part packs its rows of op(A) once per NC
  // block and its columns of op(B) once, so splitting M repeats B's packing and
  // splitting N repeats A's.
  auto cost = [&](std::int64_t tm, std::int64_t tn) {
    const std::int64_t rows = ceil_div(m_tiles, tm) * T::mr, cols = ceil_div(n_tiles, tn) * T::nr;
    return rows * cols * K + (rows * ceil_div(cols, T::nc) + cols) * K * T::nr;
  };
  std::int64_t best_m = 1, best_n = 1, best_cost = cost(1, 1);
  if (threads > 1 && M * N * K >= T::min_parallel_work) {
    for (std::int64_t t = 2; t <= threads; ++t) {
      for (std::int64_t tm = 1; tm <= t; ++tm) {
        const std::int64_t tn = t / tm;
        if (tm * tn != t || tm > m_tiles || tn > n_tiles) continue;
        const std::int64_t c = cost(tm, tn);
        if (c < best_cost) best_m = tm, best_n = tn, best_cost = c;
      }
    }
  }
  plan.m_parts = static_cast<int>(best_m);
  plan.n_parts = static_cast<int>(best_n);
  plan.threads = plan.m_parts * plan.n_parts;
  plan.part_rows = ceil_div(m_tiles, best_m) * T::mr;
  plan.part_cols = ceil_div(n_tiles, best_n) * T::nr;
  auto round16 = [&](std::int64_t floats) { return ceil_div(floats, 16) * 16; };
  // Packing A pays off over many B slivers; over a few, the broadcasts read A in place
  // (measured on Zen, AVX2: +3-6% at N <= 192, -5% at N >= 768).
  plan.direct_a = trans_a == Transpose::no && plan.part_cols <= T::direct_a_max_cols;
  plan.a_floats = round16((plan.direct_a ? T::mr : std::min(T::mc, plan.part_rows)) * plan.kc + T::tw);
  plan.b_floats = round16(plan.kc * std::min(T::nc, plan.part_cols) + T::tw);
  return plan;
}

// C[i0:i1, j0:j1] by the loops of the header, with this thread's panels.
template <class Arch>
void gemm_part(Transpose trans_a, Transpose trans_b, std::int64_t K, const float* A, std::int64_t lda, const float* B,
               std::int64_t ldb, float* C, std::int64_t ldc, const GemmEpilogue& epilogue, std::int64_t i0, std::int64_t i1,
               std::int64_t j0, std::int64_t j1, std::int64_t kc_step, bool direct_a, float* a_panel, float* b_panel) {
  using T = GemmTraits<Arch>;
  for (std::int64_t jc = j0; jc < j1; jc += T::nc) {
    const std::int64_t nc = std::min(T::nc, j1 - jc);
    for (std::int64_t pc = 0; pc < K; pc += kc_step) {
      const std::int64_t kc = std::min(kc_step, K - pc);
      pack_b<Arch>(trans_b, B, ldb, pc, kc, jc, nc, b_panel);
      TileEpilogue e;
      e.add_c = pc > 0 || epilogue.accumulate;
      e.last = pc + kc == K;
      e.activation = epilogue.activation;
      for (std::int64_t ic = i0; ic < i1; ic += T::mc) {
        const std::int64_t mc = std::min(T::mc, i1 - ic);
        // Direct: whole slivers from A itself, a partial last one packed (rows past M
        // must not be read).
        const std::int64_t mc_direct = direct_a ? mc / T::mr * T::mr : 0;
        if (mc_direct < mc) {
          pack_a<Arch>(trans_a, A, lda, ic + mc_direct, mc - mc_direct, pc, kc, a_panel);
        }
        for (std::int64_t jr = 0; jr < nc; jr += T::nr) {
          e.bias = epilogue.bias != nullptr ? epilogue.bias + jc + jr : nullptr;
          const float* b_sliver = b_panel + jr * kc;
          const std::int64_t cols = std::min(T::nr, nc - jr);
          std::int64_t ir = 0;
          for (; ir < mc_direct; ir += T::mr) {
            micro_kernel<Arch, true>(kc, A + (ic + ir) * lda + pc, lda, b_sliver, C + (ic + ir) * ldc + jc + jr, ldc,
                                     T::mr, cols, e);
          }
          for (; ir < mc; ir += T::mr) {
            micro_kernel<Arch, false>(kc, a_panel + (ir - mc_direct) * kc, 0, b_sliver, C + (ic + ir) * ldc + jc + jr,
                                      ldc, std::min<std::int64_t>(T::mr, mc - ir), cols, e);
          }
        }
      }
    }
  }
}

template <class Arch>
void gemm(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
          std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc, const GemmEpilogue& epilogue,
          float* scratch, int threads) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    epilogue_only<Arch>(M, N, C, ldc, epilogue);
    return;
  }
  if (gemm_is_small<Arch>(trans_a, trans_b, M, N)) {
    gemm_small<Arch>(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, epilogue);
    return;
  }
  const GemmPlan plan = plan_gemm<Arch>(trans_a, M, N, K, threads);
  auto run_part = [&](int part, float* thread_scratch) {
    const std::int64_t i0 = part / plan.n_parts * plan.part_rows, j0 = part % plan.n_parts * plan.part_cols;
    const std::int64_t i1 = std::min(M, i0 + plan.part_rows), j1 = std::min(N, j0 + plan.part_cols);
    if (i0 >= i1 || j0 >= j1) return;
    gemm_part<Arch>(trans_a, trans_b, K, A, lda, B, ldb, C, ldc, epilogue, i0, i1, j0, j1, plan.kc, plan.direct_a,
                    thread_scratch, thread_scratch + plan.a_floats);
  };
  if (plan.threads == 1) {
    run_part(0, scratch);
    return;
  }
#pragma omp parallel num_threads(plan.threads)
  {
    // The runtime may grant fewer threads than asked: the parts are still all done.
    const int id = omp_get_thread_num(), team = omp_get_num_threads();
    for (int part = id; part < plan.threads; part += team) run_part(part, scratch + id * (plan.a_floats + plan.b_floats));
  }
}

template <class Arch>
std::size_t gemm_scratch_floats(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                                int threads) {
  if (gemm_is_small<Arch>(trans_a, trans_b, M, N)) return 0;
  return plan_gemm<Arch>(trans_a, M, N, K, threads).scratch_floats();
}

template <class Arch>
GemmKernels make_gemm_kernels() {
  using T = GemmTraits<Arch>;
  return GemmKernels{&gemm<Arch>, &gemm_scratch_floats<Arch>, GemmBlocking{T::mr, T::nr, T::kc, T::mc, T::nc}};
}

}  // namespace ember::simd
