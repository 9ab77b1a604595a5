#pragma once
// Fused scaled-dot-product attention for one head, FlashAttention-2 style:
//
//   O = softmax(scale * Q K^T + mask) V,     lse = log(sum(exp(scale * Q K^T + mask))) per row
//
// Query blocks run against key/value blocks with an online softmax (running max and sum),
// so the T_q x T_k score matrix never exists: extra memory is a few blocks plus O(T_q),
// whatever the sequence length. Backward recomputes the probabilities from Q, K and the
// saved log-sum-exp.
//
// Q (T_q x D), K and V (T_k x D), O (T_q x D) are row-major with their own row strides, so
// a head can be read straight out of a fused QKV projection (stride 3 d_model).
#include <cstddef>
#include <cstdint>

#include "simd/dispatch.h"

namespace ember::simd {

struct AttentionShape {
  std::int64_t queries = 0;     // T_q
  std::int64_t keys = 0;        // T_k
  std::int64_t head_dim = 0;    // D, any size
  std::int64_t q_stride = 0;    // floats between rows of Q (and of dQ)
  std::int64_t k_stride = 0;    // K and dK
  std::int64_t v_stride = 0;    // V and dV
  std::int64_t o_stride = 0;    // O and dO
  float scale = 1.0f;           // usually 1/sqrt(D)
  bool causal = false;          // query i sees keys j <= i
  std::int64_t valid_keys = -1; // key padding: keys >= valid_keys are masked; -1 for none
};

// A query row that sees no key at all (valid_keys = 0) gets O = 0 and lse = +inf, so
// backward gives it zero gradients.
struct AttentionKernels {
  // O and lse (T_q) are written.
  void (*forward)(const AttentionShape& shape, const float* q, const float* k, const float* v, float* o, float* lse,
                  float* scratch);
  // dQ, dK, dV are overwritten, from dO and the forward's O and lse.
  void (*backward)(const AttentionShape& shape, const float* q, const float* k, const float* v, const float* o,
                   const float* o_grad, const float* lse, float* q_grad, float* k_grad, float* v_grad, float* scratch);
};

template <class Arch>
AttentionKernels make_attention_kernels();
const AttentionKernels& attention_kernels_for(Isa isa);
const AttentionKernels& attention_kernels();

// Query and key block sizes shared by every instruction set.
inline constexpr std::int64_t attention_query_block = 64;
inline constexpr std::int64_t attention_key_block = 64;

// Scratch, in floats (64-byte aligned), one call needs.
inline std::size_t attention_forward_scratch_floats(std::int64_t head_dim) {
  return static_cast<std::size_t>(attention_query_block * attention_key_block + head_dim * attention_key_block +
                                  attention_query_block * head_dim + 2 * attention_query_block);
}
inline std::size_t attention_backward_scratch_floats(std::int64_t queries, std::int64_t head_dim) {
  return static_cast<std::size_t>(2 * attention_query_block * attention_key_block + 2 * head_dim * attention_key_block +
                                  queries);
}

}  // namespace ember::simd
