#pragma once
// Generic body of the fused attention kernels (simd/attention.h), compiled once per
// instruction set. Every function is a template on Arch (see simd/arch.h).
//
// The block products (Q_i K_j^T, P V_j and the four of backward) run on the unpacked GEMM of
// gemm_impl.h; the softmax part works on one BR x BC block of scores that stays in L1.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "simd/arch.h"
#include "simd/attention.h"
#include "simd/gemm_impl.h"
#include "simd/softmax_impl.h"

namespace ember::simd {

// One past the last key any of the query rows [0, last_query] may see.
template <class Arch>
std::int64_t attention_key_end(const AttentionShape& s, std::int64_t last_query) {
  std::int64_t end = s.valid_keys < 0 ? s.keys : std::min(s.valid_keys, s.keys);
  if (s.causal) end = std::min(end, last_query + 1);
  return std::max<std::int64_t>(end, 0);
}

// Keys [c0, c0 + result) of the block are visible to query row `query`.
template <class Arch>
std::int64_t attention_visible(const AttentionShape& s, std::int64_t query, std::int64_t c0, std::int64_t block_keys) {
  if (!s.causal) return block_keys;
  return std::clamp<std::int64_t>(query + 1 - c0, 0, block_keys);
}

// out (cols x rows, leading dimension ld) = in (rows x cols, stride)^T. Blocks of K and V
// are transposed once so that S = Q K^T and dP = dO V^T run on the broadcast GEMM tile
// (rows of Q broadcast against contiguous columns of K^T), not on dot products that
// end in horizontal reductions.
template <class Arch>
void transpose_block(float* out, std::int64_t ld, const float* in, std::int64_t stride, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) out[c * ld + r] = in[r * stride + c];
  }
}

template <class Arch>
void scale_row(float* row, float factor, std::int64_t n) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(Batch::size);
  const Batch f(factor);
  std::int64_t j = 0;
  for (; j + W <= n; j += W) (Batch::load_unaligned(row + j) * f).store_unaligned(row + j);
  for (; j < n; ++j) row[j] *= factor;
}

template <class Arch>
void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* o, float* lse,
                       float* scratch) {
  constexpr std::int64_t BR = attention_query_block;
  constexpr std::int64_t BC = attention_key_block;
  const std::int64_t D = s.head_dim;
  float* scores = scratch;          // BR x BC, then the probabilities
  float* keys_t = scores + BR * BC; // D x BC, the key block transposed
  float* acc = keys_t + D * BC;     // BR x D, the unnormalized output
  float* running_max = acc + BR * D;
  float* running_sum = running_max + BR;
  const float minus_infinity = -std::numeric_limits<float>::infinity();

  for (std::int64_t r0 = 0; r0 < s.queries; r0 += BR) {
    const std::int64_t br = std::min(BR, s.queries - r0);
    std::fill(running_max, running_max + br, minus_infinity);
    std::fill(running_sum, running_sum + br, 0.0f);
    std::memset(acc, 0, static_cast<std::size_t>(br * D) * sizeof(float));
    const std::int64_t key_end = attention_key_end<Arch>(s, r0 + br - 1);
    for (std::int64_t c0 = 0; c0 < key_end; c0 += BC) {
      const std::int64_t bc = std::min(BC, key_end - c0);
      transpose_block<Arch>(keys_t, BC, k + c0 * s.k_stride, s.k_stride, bc, D);
      gemm_unpacked<Arch>(Transpose::no, br, bc, D, q + r0 * s.q_stride, s.q_stride, keys_t, BC, scores, BC,
                 /*accumulate=*/false);
      for (std::int64_t i = 0; i < br; ++i) {
        float* row = scores + i * BC;
        const std::int64_t visible = attention_visible<Arch>(s, r0 + i, c0, bc);
        std::fill(row + visible, row + bc, 0.0f);
        if (visible == 0) continue;
        scale_row<Arch>(row, s.scale, visible);
        const float new_max = std::max(running_max[i], row_max<Arch>(row, visible));
        // exp(-inf) = 0 on the first block: nothing accumulated yet is rescaled away.
        const float rescale = expf(running_max[i] - new_max);
        const float block_sum = exp_shifted<Arch>(row, row, new_max, visible);
        running_sum[i] = running_sum[i] * rescale + block_sum;
        if (rescale != 1.0f) scale_row<Arch>(acc + i * D, rescale, D);
        running_max[i] = new_max;
      }
      gemm_unpacked<Arch>(Transpose::no, br, D, bc, scores, BC, v + c0 * s.v_stride, s.v_stride, acc, D, /*accumulate=*/true);
    }
    for (std::int64_t i = 0; i < br; ++i) {
      float* out = o + (r0 + i) * s.o_stride;
      if (running_sum[i] == 0.0f) {
        std::memset(out, 0, static_cast<std::size_t>(D) * sizeof(float));
        lse[r0 + i] = std::numeric_limits<float>::infinity();
        continue;
      }
      std::memcpy(out, acc + i * D, static_cast<std::size_t>(D) * sizeof(float));
      scale_row<Arch>(out, 1.0f / running_sum[i], D);
      lse[r0 + i] = running_max[i] + logf(running_sum[i]);
    }
  }
}

template <class Arch>
void zero_rows(float* x, std::int64_t rows, std::int64_t cols, std::int64_t stride) {
  for (std::int64_t r = 0; r < rows; ++r) std::memset(x + r * stride, 0, static_cast<std::size_t>(cols) * sizeof(float));
}

template <class Arch>
void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v, const float* o,
                        const float* o_grad, const float* lse, float* q_grad, float* k_grad, float* v_grad,
                        float* scratch) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(Batch::size);
  constexpr std::int64_t BR = attention_query_block;
  constexpr std::int64_t BC = attention_key_block;
  const std::int64_t D = s.head_dim;
  float* probs = scratch;                // BR x BC
  float* prob_grads = probs + BR * BC;   // BR x BC: dP, then dS
  float* keys_t = prob_grads + BR * BC;  // D x BC
  float* values_t = keys_t + D * BC;     // D x BC
  float* delta = values_t + D * BC;      // T_q: rowsum(dO * O)

  zero_rows<Arch>(q_grad, s.queries, D, s.q_stride);
  zero_rows<Arch>(k_grad, s.keys, D, s.k_stride);
  zero_rows<Arch>(v_grad, s.keys, D, s.v_stride);
  for (std::int64_t i = 0; i < s.queries; ++i) delta[i] = dot<Arch>(o_grad + i * s.o_stride, o + i * s.o_stride, D);

  const std::int64_t key_end = attention_key_end<Arch>(s, s.queries - 1);
  for (std::int64_t c0 = 0; c0 < key_end; c0 += BC) {
    const std::int64_t bc = std::min(BC, key_end - c0);
    const float* k_block = k + c0 * s.k_stride;
    const float* v_block = v + c0 * s.v_stride;
    transpose_block<Arch>(keys_t, BC, k_block, s.k_stride, bc, D);
    transpose_block<Arch>(values_t, BC, v_block, s.v_stride, bc, D);
    for (std::int64_t r0 = 0; r0 < s.queries; r0 += BR) {
      const std::int64_t br = std::min(BR, s.queries - r0);
      if (s.causal && c0 > r0 + br - 1) continue;  // every key of the block is in the future
      const float* q_block = q + r0 * s.q_stride;
      const float* o_grad_block = o_grad + r0 * s.o_stride;
      // P = exp(scale Q K^T - lse), recomputed.
      gemm_unpacked<Arch>(Transpose::no, br, bc, D, q_block, s.q_stride, keys_t, BC, probs, BC, /*accumulate=*/false);
      for (std::int64_t i = 0; i < br; ++i) {
        float* row = probs + i * BC;
        const std::int64_t visible = attention_visible<Arch>(s, r0 + i, c0, bc);
        const Batch scale(s.scale);
        const Batch shift(lse[r0 + i]);
        std::int64_t j = 0;
        for (; j + W <= visible; j += W) {
          xsimd::exp(xsimd::fms(Batch::load_unaligned(row + j), scale, shift)).store_unaligned(row + j);
        }
        for (; j < visible; ++j) row[j] = expf(row[j] * s.scale - lse[r0 + i]);
        std::fill(row + visible, row + bc, 0.0f);
      }
      // dV += P^T dO
      gemm_unpacked<Arch>(Transpose::yes, bc, D, br, probs, BC, o_grad_block, s.o_stride, v_grad + c0 * s.v_stride,
                 s.v_stride, /*accumulate=*/true);
      // dP = dO V^T; dS = P * (dP - delta) * scale
      gemm_unpacked<Arch>(Transpose::no, br, bc, D, o_grad_block, s.o_stride, values_t, BC, prob_grads, BC,
                 /*accumulate=*/false);
      for (std::int64_t i = 0; i < br; ++i) {
        const float* p = probs + i * BC;
        float* ds = prob_grads + i * BC;
        const Batch d(delta[r0 + i]);
        const Batch scale(s.scale);
        std::int64_t j = 0;
        for (; j + W <= bc; j += W) {
          (Batch::load_unaligned(p + j) * (Batch::load_unaligned(ds + j) - d) * scale).store_unaligned(ds + j);
        }
        for (; j < bc; ++j) ds[j] = p[j] * (ds[j] - delta[r0 + i]) * s.scale;
      }
      // dQ += dS K; dK += dS^T Q
      gemm_unpacked<Arch>(Transpose::no, br, D, bc, prob_grads, BC, k_block, s.k_stride, q_grad + r0 * s.q_stride,
                 s.q_stride, /*accumulate=*/true);
      gemm_unpacked<Arch>(Transpose::yes, bc, D, br, prob_grads, BC, q_block, s.q_stride, k_grad + c0 * s.k_stride,
                 s.k_stride, /*accumulate=*/true);
    }
  }
}

template <class Arch>
AttentionKernels make_attention_kernels() {
  return AttentionKernels{&attention_forward<Arch>, &attention_backward<Arch>};
}

}  // namespace ember::simd
