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
#include <cstddef>
#include <cstdint>

#include "simd/dispatch.h"

namespace ember::simd {

enum class Transpose : bool { no = false, yes = true };
enum class Activation : int { none = 0, relu = 1 };

struct GemmEpilogue {
  bool accumulate = false;        // C += result instead of C = result
  const float* bias = nullptr;    // length N, added to every row
  Activation activation = Activation::none;
};

struct GemmKernels {
  // scratch: at least gemm_scratch_floats() floats, 64-byte aligned, for packed panels.
  void (*gemm)(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
               const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
               std::int64_t ldc, const GemmEpilogue& epilogue, float* scratch);
  std::size_t scratch_floats;
};

template <class Arch>
GemmKernels make_gemm_kernels();
const GemmKernels& gemm_kernels_for(Isa isa);
const GemmKernels& gemm_kernels();  // the start-up choice

// Scratch a gemm call needs, in floats, for the start-up instruction set.
inline std::size_t gemm_scratch_floats() { return gemm_kernels().scratch_floats; }

inline void gemm(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                 const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
                 std::int64_t ldc, const GemmEpilogue& epilogue, float* scratch) {
  gemm_kernels().gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, epilogue, scratch);
}

}  // namespace ember::simd
