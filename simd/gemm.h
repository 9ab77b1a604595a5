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
// `threads` > 1 lets one call split C over M and N among that many threads (only when
// the problem is large enough to pay): OpenMP's, or a PartRunner's when one is given
// (simd/parallel.h); K is never split, so C is bitwise the same for every thread count
// and runner. The register tiling and orientation of each call are chosen by
// simd/gemm_plan.h from the shape and instruction set alone.
//
// Prepacked B (constant weights): gemm_pack_b packs op(B) once into a layout that depends
// only on the instruction set, trans_b, K and N (never on M or threads), and gemm_packed
// then computes any number of M rows against it, bitwise equal to gemm() on the same
// operands wherever gemm() does not take the dot orientation (simd/gemm_plan.h). Linear
// packs W^T for its forward (sessions) and W for its backward's
// dX = dY W (each training step). The packed buffer belongs to the instruction set that
// packed it.
#include <cstddef>
#include <cstdint>

#include "simd/dispatch.h"
#include "simd/gemm_plan.h"
#include "simd/parallel.h"

namespace ember::simd {
// gelu is the exact (erf) GELU, gelu_tanh its tanh approximation, as in simd/activation.h.
enum class Activation : int { none = 0, relu = 1, gelu = 2, gelu_tanh = 3 };

struct GemmEpilogue {
  bool accumulate = false;        // C += result instead of C = result
  const float* bias = nullptr;    // length N, added to every row
  Activation activation = Activation::none;
};

// The largest blocking of one instruction set's kernel (tests aim their tails at it):
// MR x NR micro-tiles (the widest normal tiling), K in blocks of up to KC, op(A) panels of
// up to MC rows, op(B) panels of up to NC columns. Smaller tilings: simd/gemm_plan.h.
struct GemmBlocking {
  std::int64_t mr, nr, kc, mc, nc;
};

struct GemmKernels {
  // scratch: scratch_floats(trans_a, trans_b, M, N, K, threads) floats (no alignment
  // needed), for the packed panels; its contents on entry do not matter.
  void (*gemm)(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
               const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
               std::int64_t ldc, const GemmEpilogue& epilogue, float* scratch, int threads, const PartRunner* runner);
  std::size_t (*scratch_floats)(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                                int threads);
  // packed: packed_b_floats(trans_b, K, N) floats (no alignment needed), filled by
  // pack_b from op(B) (K x N, B with leading dimension ldb), on up to `threads` OpenMP
  // threads (split by slivers, when the copy is large enough to pay): the same bytes for
  // every count.
  std::size_t (*packed_b_floats)(Transpose trans_b, std::int64_t K, std::int64_t N);
  void (*pack_b)(Transpose trans_b, std::int64_t K, std::int64_t N, const float* B, std::int64_t ldb, float* packed,
                 int threads);
  // C (M x N) = op(A) * op(B) with op(B) from pack_b (same trans_b, K, N); scratch:
  // packed_scratch_floats(trans_a, trans_b, M, N, K, threads) floats.
  void (*gemm_packed)(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                      const float* A, std::int64_t lda, const float* packed_b, float* C, std::int64_t ldc,
                      const GemmEpilogue& epilogue, float* scratch, int threads, const PartRunner* runner);
  std::size_t (*packed_scratch_floats)(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N,
                                       std::int64_t K, int threads);
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
                 std::int64_t ldc, const GemmEpilogue& epilogue, float* scratch, int threads,
                 const PartRunner* runner = nullptr) {
  gemm_kernels().gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, epilogue, scratch, threads, runner);
}

// Prepacked op(B), with the start-up instruction set's table (see GemmKernels).
inline std::size_t gemm_packed_b_floats(Transpose trans_b, std::int64_t K, std::int64_t N) {
  return gemm_kernels().packed_b_floats(trans_b, K, N);
}
inline void gemm_pack_b(Transpose trans_b, std::int64_t K, std::int64_t N, const float* B, std::int64_t ldb,
                        float* packed, int threads) {
  gemm_kernels().pack_b(trans_b, K, N, B, ldb, packed, threads);
}
inline std::size_t gemm_packed_scratch_floats(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N,
                                              std::int64_t K, int threads) {
  return gemm_kernels().packed_scratch_floats(trans_a, trans_b, M, N, K, threads);
}
inline void gemm_packed(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                        const float* A, std::int64_t lda, const float* packed_b, float* C, std::int64_t ldc,
                        const GemmEpilogue& epilogue, float* scratch, int threads, const PartRunner* runner = nullptr) {
  gemm_kernels().gemm_packed(trans_a, trans_b, M, N, K, A, lda, packed_b, C, ldc, epilogue, scratch, threads, runner);
}

}  // namespace ember::simd
