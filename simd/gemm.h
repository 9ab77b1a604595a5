#pragma once
// Single-precision GEMM for ember's Linear layers, written once over xsimd and compiled
// per instruction set:
//
//   C (M x N) = op(A) (M x K) * op(B) (K x N)  [+ C if accumulate]  [+ bias (N)]  [then activation]
//
// op(X) is X or its transpose; A, B, C are row-major with leading dimensions lda, ldb, ldc.
// Linear uses it as
//   forward        Y  = X (M x K) * W^T, W is (N x K)     gemm(no, yes, ...) + bias epilogue
//   backward data  dX = dY (M x N) * W                    gemm(no, no, ...)
//   backward wts   dW += dY^T * X                          gemm(yes, no, ..., accumulate)
// Any M, N, K >= 0 (tails are handled; nothing is read or written outside the matrices).
// M = 0 or N = 0 touches nothing; K = 0 gives C = 0 (or C unchanged when accumulating),
// then the bias and activation.
//
// The kernel packs panels of op(A) and op(B) into caller-provided scratch (it never
// allocates): ask gemm_scratch_floats with the same transposes, sizes and thread count.
// `threads` > 1 lets one call split C over M and N among that many OpenMP threads (only
// when the problem is large enough to pay); K is never split, so C is bitwise the same
// for every thread count.
#include <cstddef>
#include <cstdint>

#include "simd/dispatch.h"

namespace ember::simd {

enum class Transpose : bool { no = false, yes = true };
// gelu is the exact (erf) GELU, gelu_tanh its tanh approximation, as in simd/activation.h.
enum class Activation : int { none = 0, relu = 1, gelu = 2, gelu_tanh = 3 };

struct GemmEpilogue {
  bool accumulate = false;        // C += result instead of C = result
  const float* bias = nullptr;    // length N, added to every row
  Activation activation = Activation::none;
};

// The blocking of one instruction set's kernel (tests aim their tails at it): MR x NR
// micro-tiles, K in blocks of up to KC, op(A) panels of MC rows, op(B) panels of NC columns.
struct GemmBlocking {
  std::int64_t mr, nr, kc, mc, nc;
};

struct GemmKernels {
  // scratch: scratch_floats(trans_a, trans_b, M, N, K, threads) floats (no alignment
  // needed), for the packed panels; its contents on entry do not matter.
  void (*gemm)(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
               const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
               std::int64_t ldc, const GemmEpilogue& epilogue, float* scratch, int threads);
  std::size_t (*scratch_floats)(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                                int threads);
  GemmBlocking blocking;
};

template <class Arch>
GemmKernels make_gemm_kernels();
const GemmKernels& gemm_kernels_for(Isa isa);
const GemmKernels& gemm_kernels();  // the start-up choice

// Scratch the gemm call with these arguments needs, in floats (0 when it packs nothing).
inline std::size_t gemm_scratch_floats(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N,
                                       std::int64_t K, int threads) {
  return gemm_kernels().scratch_floats(trans_a, trans_b, M, N, K, threads);
}

inline void gemm(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                 const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
                 std::int64_t ldc, const GemmEpilogue& epilogue, float* scratch, int threads) {
  gemm_kernels().gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, epilogue, scratch, threads);
}

}  // namespace ember::simd
