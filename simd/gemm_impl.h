#pragma once
// Generic body of ember's GEMM (simd/gemm.h), compiled once per instruction set. Every
// function is a template on Arch (see simd/arch.h).
//
// C (M x N) = op(A) (M x K) * op(B) (K x N), row-major. Two register-tiled kernels cover
// what Linear needs without packing:
// - B contiguous along N (op(B) = B, the backward passes): a broadcast-FMA tile of
//   rows x two vectors of C, A's elements broadcast, B's rows streamed. K is blocked so
//   a block of B stays in L2 while every row block of A passes over it.
// - B contiguous along K (op(B) = B^T, the forward pass Y = X W^T) with A contiguous
//   along K: a dot-product tile, rows of A against rows of B, accumulated along K in
//   vectors and reduced once at the end. B's row blocks are the outer loop, so each
//   weight row is read from memory once per call while the few rows of A stay in cache.
// op(A) = A^T with op(B) = B^T copies blocks of B^T into the scratch and uses the first.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "simd/arch.h"
#include "simd/gemm.h"

namespace ember::simd {

template <class Arch>
struct GemmTraits {
  using Batch = xsimd::batch<float, Arch>;
  static constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  // Broadcast tile: rows x (2 vectors). 2*rows accumulators + 2 B loads fit the register
  // file (16 registers up to AVX2, 32 with AVX-512).
  static constexpr int broadcast_rows = width >= 16 ? 8 : 6;
  // Dot tile: rows of A x rows of B accumulators.
  static constexpr int dot_a_rows = width >= 16 ? 4 : 2;
  static constexpr int dot_b_rows = 4;
  static constexpr std::int64_t k_block = 256;
  static constexpr std::int64_t n_block = 512;  // transpose buffer: k_block x n_block
};

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

// C (M x N) (+)= op(A) * B, B (K x N) row-major with stride ldb.
template <class Arch>
void gemm_broadcast(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t a_row,
                    std::int64_t a_col, const float* B, std::int64_t ldb, float* C, std::int64_t ldc, bool overwrite) {
  using T = GemmTraits<Arch>;
  constexpr int R = T::broadcast_rows;
  constexpr std::int64_t tile_cols = 2 * T::width;
  for (std::int64_t k0 = 0; k0 < K; k0 += T::k_block) {
    const std::int64_t kc = std::min(T::k_block, K - k0);
    const bool first = overwrite && k0 == 0;
    for (std::int64_t j0 = 0; j0 < N; j0 += T::n_block) {
      const std::int64_t nc = std::min(T::n_block, N - j0);
      for (std::int64_t i = 0; i < M; i += R) {
        const std::int64_t rows = std::min<std::int64_t>(R, M - i);
        for (std::int64_t j = j0; j < j0 + nc; j += tile_cols) {
          broadcast_tile_rows<Arch, R>(rows, std::min(tile_cols, j0 + nc - j), kc, A + i * a_row + k0 * a_col, a_row, a_col,
                                       B + k0 * ldb + j, ldb, C + i * ldc + j, ldc, first);
        }
      }
    }
  }
}

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

template <class Arch>
void gemm(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
          std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc, const GemmEpilogue& epilogue,
          float* scratch) {
  using T = GemmTraits<Arch>;
  if (M <= 0 || N <= 0) return;
  const bool overwrite = !epilogue.accumulate;
  // A(i, k) = A[i*a_row + k*a_col]
  const std::int64_t a_row = trans_a == Transpose::yes ? 1 : lda;
  const std::int64_t a_col = trans_a == Transpose::yes ? lda : 1;
  if (K == 0) {
    if (overwrite) {
      for (std::int64_t i = 0; i < M; ++i) std::memset(C + i * ldc, 0, static_cast<std::size_t>(N) * sizeof(float));
    }
  } else if (trans_b == Transpose::no) {
    gemm_broadcast<Arch>(M, N, K, A, a_row, a_col, B, ldb, C, ldc, overwrite);
  } else if (trans_a == Transpose::no) {
    gemm_dot<Arch>(M, N, K, A, lda, B, ldb, C, ldc, overwrite);
  } else {
    // Both transposed: copy blocks of op(B) = B^T (K x N) into the scratch, row-major.
    for (std::int64_t k0 = 0; k0 < K; k0 += T::k_block) {
      const std::int64_t kc = std::min(T::k_block, K - k0);
      for (std::int64_t j0 = 0; j0 < N; j0 += T::n_block) {
        const std::int64_t nc = std::min(T::n_block, N - j0);
        for (std::int64_t k = 0; k < kc; ++k) {
          for (std::int64_t j = 0; j < nc; ++j) scratch[k * nc + j] = B[(j0 + j) * ldb + k0 + k];
        }
        gemm_broadcast<Arch>(M, nc, kc, A + k0 * a_col, a_row, a_col, scratch, nc, C + j0, ldc, overwrite && k0 == 0);
      }
    }
  }
  if (epilogue.bias != nullptr || epilogue.activation == Activation::relu) {
    using Batch = typename T::Batch;
    constexpr std::int64_t W = T::width;
    for (std::int64_t i = 0; i < M; ++i) {
      float* row = C + i * ldc;
      std::int64_t j = 0;
      for (; j + W <= N; j += W) {
        Batch v = Batch::load_unaligned(row + j);
        if (epilogue.bias != nullptr) v += Batch::load_unaligned(epilogue.bias + j);
        if (epilogue.activation == Activation::relu) v = xsimd::max(v, Batch(0.0f));
        v.store_unaligned(row + j);
      }
      for (; j < N; ++j) {
        float v = row[j] + (epilogue.bias != nullptr ? epilogue.bias[j] : 0.0f);
        row[j] = epilogue.activation == Activation::relu && v < 0.0f ? 0.0f : v;
      }
    }
  }
}

template <class Arch>
GemmKernels make_gemm_kernels() {
  return GemmKernels{&gemm<Arch>, static_cast<std::size_t>(GemmTraits<Arch>::k_block * GemmTraits<Arch>::n_block)};
}

}  // namespace ember::simd
