// The fused attention kernels against an explicit T x T softmax in double, forward and
// backward, on every instruction set this CPU runs.
#include "simd/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "engine/aligned_buffer.h"

namespace ember::simd {
namespace {

struct Case {
  std::int64_t queries, keys, head_dim;
  bool causal;
  std::int64_t valid_keys;  // -1: no key padding
  float magnitude;          // inputs are U(-magnitude, magnitude)
};

struct Heads {
  // Q, K, V packed as one (T x 3D) matrix, like a fused QKV projection, to exercise strides.
  std::vector<float> qkv_q, qkv_kv, o_grad;
};

struct Reference {
  std::vector<double> o, lse, q_grad, k_grad, v_grad;
};

Reference reference_attention(const AttentionShape& s, const float* q, const float* k, const float* v, const float* o_grad) {
  const std::int64_t Tq = s.queries, Tk = s.keys, D = s.head_dim;
  Reference r;
  r.o.assign(static_cast<std::size_t>(Tq * D), 0.0);
  r.lse.assign(static_cast<std::size_t>(Tq), std::numeric_limits<double>::infinity());
  r.q_grad.assign(static_cast<std::size_t>(Tq * D), 0.0);
  r.k_grad.assign(static_cast<std::size_t>(Tk * D), 0.0);
  r.v_grad.assign(static_cast<std::size_t>(Tk * D), 0.0);
  for (std::int64_t i = 0; i < Tq; ++i) {
    std::vector<double> score(static_cast<std::size_t>(Tk), -std::numeric_limits<double>::infinity());
    double max = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < Tk; ++j) {
      if (s.causal && j > i) continue;
      if (s.valid_keys >= 0 && j >= s.valid_keys) continue;
      double dot = 0.0;
      for (std::int64_t d = 0; d < D; ++d) dot += static_cast<double>(q[i * s.q_stride + d]) * k[j * s.k_stride + d];
      score[static_cast<std::size_t>(j)] = dot * s.scale;
      max = std::max(max, dot * s.scale);
    }
    if (max == -std::numeric_limits<double>::infinity()) continue;  // sees no key: O = 0, no gradient
    double sum = 0.0;
    for (double x : score) sum += std::exp(x - max);
    r.lse[static_cast<std::size_t>(i)] = max + std::log(sum);
    std::vector<double> p(static_cast<std::size_t>(Tk));
    for (std::int64_t j = 0; j < Tk; ++j) p[static_cast<std::size_t>(j)] = std::exp(score[static_cast<std::size_t>(j)] - max) / sum;
    for (std::int64_t d = 0; d < D; ++d) {
      double acc = 0.0;
      for (std::int64_t j = 0; j < Tk; ++j) acc += p[static_cast<std::size_t>(j)] * v[j * s.v_stride + d];
      r.o[static_cast<std::size_t>(i * D + d)] = acc;
    }
    // dP = dO V^T, dS = P (dP - sum_j P dP), dQ = scale dS K, dK += scale dS^T Q, dV += P^T dO
    std::vector<double> dp(static_cast<std::size_t>(Tk));
    double inner = 0.0;
    for (std::int64_t j = 0; j < Tk; ++j) {
      double acc = 0.0;
      for (std::int64_t d = 0; d < D; ++d) acc += static_cast<double>(o_grad[i * s.o_stride + d]) * v[j * s.v_stride + d];
      dp[static_cast<std::size_t>(j)] = acc;
      inner += p[static_cast<std::size_t>(j)] * acc;
    }
    for (std::int64_t j = 0; j < Tk; ++j) {
      const double pj = p[static_cast<std::size_t>(j)];
      const double ds = pj * (dp[static_cast<std::size_t>(j)] - inner) * s.scale;
      for (std::int64_t d = 0; d < D; ++d) {
        r.q_grad[static_cast<std::size_t>(i * D + d)] += ds * k[j * s.k_stride + d];
        r.k_grad[static_cast<std::size_t>(j * D + d)] += ds * q[i * s.q_stride + d];
        r.v_grad[static_cast<std::size_t>(j * D + d)] += pj * o_grad[i * s.o_stride + d];
      }
    }
  }
  return r;
}

// |actual - expected| <= tolerance * (1 + max |expected|) over a (rows x D) strided matrix.
void expect_matrix_close(const float* actual, std::int64_t stride, const std::vector<double>& expected, std::int64_t rows,
                         std::int64_t cols, double tolerance, const char* what) {
  double scale = 0.0;
  for (double x : expected) scale = std::max(scale, std::fabs(x));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const float a = actual[r * stride + c];
      ASSERT_TRUE(std::isfinite(a)) << what << "(" << r << ", " << c << ") = " << a;
      ASSERT_NEAR(a, expected[static_cast<std::size_t>(r * cols + c)], tolerance * (1.0 + scale))
          << what << "(" << r << ", " << c << ")";
    }
}

class AttentionTest : public ::testing::TestWithParam<std::tuple<Isa, Case>> {};

TEST_P(AttentionTest, MatchesTheExplicitSoftmaxForwardAndBackward) {
  const auto [isa, c] = GetParam();
  const AttentionKernels& kernels = attention_kernels_for(isa);
  const std::int64_t D = c.head_dim;
  AttentionShape s;
  s.queries = c.queries;
  s.keys = c.keys;
  s.head_dim = D;
  // Q from a (Tq x 3D) block and K, V from a (Tk x 3D) block, as in a fused projection.
  s.q_stride = 3 * D;
  s.k_stride = 3 * D;
  s.v_stride = 3 * D;
  s.o_stride = D + 3;  // O rows padded: nothing may be written in the gap
  s.scale = 1.0f / std::sqrt(static_cast<float>(D));
  s.causal = c.causal;
  s.valid_keys = c.valid_keys;

  std::mt19937 random(static_cast<unsigned>(c.queries * 131 + c.keys * 7 + D));
  std::uniform_real_distribution<float> value(-c.magnitude, c.magnitude);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::vector<float> q_block(static_cast<std::size_t>(c.queries * 3 * D)), kv_block(static_cast<std::size_t>(c.keys * 3 * D));
  for (float& x : q_block) x = value(random);
  for (float& x : kv_block) x = value(random);
  for (std::int64_t j = 0; j < c.keys; ++j)  // V stays O(1) so the output scale is comparable
    for (std::int64_t d = 0; d < D; ++d) kv_block[static_cast<std::size_t>(j * 3 * D + 2 * D + d)] = unit(random);
  const float* q = q_block.data();
  const float* k = kv_block.data() + D;
  const float* v = kv_block.data() + 2 * D;
  std::vector<float> o_grad(static_cast<std::size_t>(c.queries * s.o_stride));
  for (float& x : o_grad) x = unit(random);

  const float sentinel = 12345.0f;
  std::vector<float> o(static_cast<std::size_t>(c.queries * s.o_stride), sentinel);
  std::vector<float> lse(static_cast<std::size_t>(c.queries));
  AlignedBuffer scratch(std::max(attention_forward_scratch_floats(D), attention_backward_scratch_floats(c.queries, D)) * sizeof(float));
  kernels.forward(s, q, k, v, o.data(), lse.data(), scratch.floats());

  const Reference r = reference_attention(s, q, k, v, o_grad.data());
  // Scores of a few thousand carry float rounding of ~1e-3 into the probabilities.
  const double tolerance = c.magnitude > 1.0f ? 2e-3 : 2e-5;
  expect_matrix_close(o.data(), s.o_stride, r.o, c.queries, D, tolerance, "O");
  for (std::int64_t i = 0; i < c.queries; ++i) {
    ASSERT_EQ(o[static_cast<std::size_t>(i * s.o_stride + D)], sentinel) << "written past row " << i << " of O";
    if (std::isinf(r.lse[static_cast<std::size_t>(i)])) {
      EXPECT_TRUE(std::isinf(lse[static_cast<std::size_t>(i)]) && lse[static_cast<std::size_t>(i)] > 0) << "lse " << i;
    } else {
      EXPECT_NEAR(lse[static_cast<std::size_t>(i)], r.lse[static_cast<std::size_t>(i)], tolerance * (1.0 + std::fabs(r.lse[static_cast<std::size_t>(i)])))
          << "lse " << i;
    }
  }

  // Gradients land in a (T x 3D) block of their own, like the fused projection's gradient.
  std::vector<float> q_grad_block(q_block.size(), sentinel), kv_grad_block(kv_block.size(), sentinel);
  kernels.backward(s, q, k, v, o.data(), o_grad.data(), lse.data(), q_grad_block.data(), kv_grad_block.data() + D,
                   kv_grad_block.data() + 2 * D, scratch.floats());
  expect_matrix_close(q_grad_block.data(), s.q_stride, r.q_grad, c.queries, D, 2.5 * tolerance, "dQ");
  expect_matrix_close(kv_grad_block.data() + D, s.k_stride, r.k_grad, c.keys, D, 2.5 * tolerance, "dK");
  expect_matrix_close(kv_grad_block.data() + 2 * D, s.v_stride, r.v_grad, c.keys, D, 2.5 * tolerance, "dV");
  for (std::int64_t j = 0; j < c.keys; ++j) {
    ASSERT_EQ(kv_grad_block[static_cast<std::size_t>(j * 3 * D)], sentinel) << "dK/dV wrote outside its columns, row " << j;
  }
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (std::int64_t t : {1, 7, 33, 257})
    for (std::int64_t d : {8, 24, 64, 80}) {
      all.push_back({t, t, d, false, -1, 1.0f});
      all.push_back({t, t, d, true, -1, 1.0f});
    }
  all.push_back({33, 33, 24, false, 20, 1.0f});    // key padding
  all.push_back({70, 70, 64, true, 65, 1.0f});     // both masks, across a block edge
  all.push_back({5, 9, 8, false, 0, 1.0f});        // no visible key: O = 0, zero gradients
  all.push_back({17, 130, 32, false, -1, 1.0f});   // cross-attention shape (T_q != T_k)
  all.push_back({129, 129, 16, false, -1, 1.0f});
  all.push_back({64, 64, 256, false, -1, 1.0f});
  all.push_back({33, 33, 64, false, -1, 30.0f});   // scores ~1e4: no NaN or Inf
  all.push_back({33, 33, 64, true, -1, 30.0f});
  return all;
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<Isa, Case>>& info) {
  const auto& [isa, c] = info.param;
  std::string name = std::string(isa_name(isa)) + "_T" + std::to_string(c.queries) + "x" + std::to_string(c.keys) + "_D" +
                     std::to_string(c.head_dim);
  if (c.causal) name += "_causal";
  if (c.valid_keys >= 0) name += "_valid" + std::to_string(c.valid_keys);
  if (c.magnitude > 1.0f) name += "_huge";
  return name;
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         ::testing::Combine(::testing::ValuesIn(available_isas().begin(), available_isas().end()),
                                            ::testing::ValuesIn(cases())),
                         case_name);

TEST(Attention, HugeScoresGiveFiniteOutput) {
  // All scores ~1e4 and differing by thousands: every exp underflows but the max's.
  const std::int64_t T = 9, D = 16;
  AttentionShape s;
  s.queries = s.keys = T;
  s.head_dim = D;
  s.q_stride = s.k_stride = s.v_stride = s.o_stride = D;
  s.scale = 1.0f;
  std::vector<float> q(T * D, 25.0f), k(T * D), v(T * D);
  for (std::int64_t j = 0; j < T; ++j)
    for (std::int64_t d = 0; d < D; ++d) {
      k[static_cast<std::size_t>(j * D + d)] = 25.0f + static_cast<float>(j);
      v[static_cast<std::size_t>(j * D + d)] = static_cast<float>(j);
    }
  std::vector<float> o(T * D), lse(T);
  AlignedBuffer scratch(attention_forward_scratch_floats(D) * sizeof(float));
  attention_kernels().forward(s, q.data(), k.data(), v.data(), o.data(), lse.data(), scratch.floats());
  for (float x : o) EXPECT_FLOAT_EQ(x, static_cast<float>(T - 1));  // all weight on the largest key
  for (float x : lse) EXPECT_TRUE(std::isfinite(x));
}

}  // namespace
}  // namespace ember::simd
