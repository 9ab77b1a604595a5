// Attention throughput: the fused kernel (simd/attention) alone, and the whole
// MultiHeadAttention layer (projections included), forward and forward+backward.
//
// Counters: GFLOP/s of the attention core (forward 4 T^2 D per head: Q K^T and P V;
// backward 10 T^2 D: S recomputed, dV, dP, dQ, dK; causal halves both), and extra_bytes,
// the memory the call needs beyond its inputs and outputs (scratch and log-sum-exp).
// bench/compare_attention.py runs the same shapes through PyTorch.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <random>
#include <vector>

#include "engine/aligned_buffer.h"
#include "simd/attention.h"

namespace ember {
namespace {

struct Heads {
  std::int64_t heads, tokens, dim;
  std::vector<float> q, k, v, o, o_grad, lse, q_grad, k_grad, v_grad;
  explicit Heads(std::int64_t h, std::int64_t t, std::int64_t d) : heads(h), tokens(t), dim(d) {
    const auto n = static_cast<std::size_t>(h * t * d);
    std::mt19937 random(1);
    std::normal_distribution<float> value(0.0f, 1.0f);
    for (auto* x : {&q, &k, &v, &o_grad}) {
      x->resize(n);
      for (float& e : *x) e = value(random);
    }
    o.resize(n);
    q_grad.resize(n);
    k_grad.resize(n);
    v_grad.resize(n);
    lse.resize(static_cast<std::size_t>(h * t));
  }
  simd::AttentionShape shape(bool causal) const {
    simd::AttentionShape s;
    s.queries = s.keys = tokens;
    s.head_dim = dim;
    s.q_stride = s.k_stride = s.v_stride = s.o_stride = dim;
    s.scale = 1.0f / std::sqrt(static_cast<float>(dim));
    s.causal = causal;
    return s;
  }
};

// Heads run in parallel, one scratch per thread, as the layer does in inference.
void run(Heads& x, bool causal, bool backward, std::vector<AlignedBuffer>& scratch) {
  const simd::AttentionShape s = x.shape(causal);
  const std::int64_t stride = x.tokens * x.dim;
#pragma omp parallel for schedule(static)
  for (std::int64_t h = 0; h < x.heads; ++h) {
    float* work = scratch[static_cast<std::size_t>(omp_get_thread_num())].floats();
    const std::int64_t at = h * stride;
    simd::attention_kernels().forward(s, x.q.data() + at, x.k.data() + at, x.v.data() + at, x.o.data() + at,
                                      x.lse.data() + h * x.tokens, work);
    if (backward) {
      simd::attention_kernels().backward(s, x.q.data() + at, x.k.data() + at, x.v.data() + at, x.o.data() + at,
                                         x.o_grad.data() + at, x.lse.data() + h * x.tokens, x.q_grad.data() + at,
                                         x.k_grad.data() + at, x.v_grad.data() + at, work);
    }
  }
}

void attention_core(benchmark::State& state, bool backward, bool causal) {
  const std::int64_t heads = state.range(0), tokens = state.range(1), dim = state.range(2);
  Heads x(heads, tokens, dim);
  const std::size_t scratch_floats =
      std::max(simd::attention_forward_scratch_floats(dim), backward ? simd::attention_backward_scratch_floats(tokens, dim) : 0);
  std::vector<AlignedBuffer> scratch;
  for (int t = 0; t < omp_get_max_threads(); ++t) scratch.emplace_back(scratch_floats * sizeof(float));
  for (auto _ : state) {
    run(x, causal, backward, scratch);
    benchmark::ClobberMemory();
  }
  const double per_head = (backward ? 14.0 : 4.0) * static_cast<double>(tokens * tokens * dim) * (causal ? 0.5 : 1.0);
  state.counters["GFLOP/s"] = benchmark::Counter(per_head * static_cast<double>(heads) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["extra_bytes"] = static_cast<double>(scratch_floats * sizeof(float) * scratch.size() +
                                                      static_cast<std::size_t>(heads * tokens) * sizeof(float));
  state.counters["threads"] = omp_get_max_threads();
}

void attention_forward(benchmark::State& state) { attention_core(state, false, false); }
void attention_forward_backward(benchmark::State& state) { attention_core(state, true, false); }
void attention_causal_forward_backward(benchmark::State& state) { attention_core(state, true, true); }

// B*H = 64 heads of D = 64 (the core shapes), and the d=256, 8-head block at B=8
// (64 heads of D = 32).
void core_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"heads", "T", "D"});
  for (std::int64_t t : {128, 512, 2048}) b->Args({64, t, 64});
  for (std::int64_t t : {128, 512}) b->Args({64, t, 32});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(attention_forward)->Apply(core_shapes);
BENCHMARK(attention_forward_backward)->Apply(core_shapes);
BENCHMARK(attention_causal_forward_backward)->Args({64, 512, 64})->ArgNames({"heads", "T", "D"})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace ember
