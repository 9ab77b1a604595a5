// Row-wise softmax throughput: ember's kernel (simd/softmax.h, the instruction set chosen
// at start-up) against a plain scalar loop, forward and backward, one thread, at the
// shapes attention produces (rows x cols = queries x keys):
//   64x49     attn-cnn: one head's 49 tokens against 49 keys, a few heads
//   1024x128  a 128-token sequence, 8 heads
//   4096x512  a 512-token sequence, 8 heads (8 MiB per matrix: past L2)
// Buffers are reused every iteration, so the small shapes run from cache, as in
// attention, where the scores were just written.
//
// Counters: bytes/s moved (forward reads x and writes y: 8 bytes per element; backward
// reads dy and y and writes dx: 12) and elements/s, per CPU second (one thread: less hurt
// by a busy machine than wall time).
//   ember_bench --benchmark_filter=^softmax/
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "simd/softmax.h"

namespace ember {
namespace {

struct SoftmaxShape {
  std::int64_t rows, cols;
};
constexpr SoftmaxShape shapes[] = {{64, 49}, {1024, 128}, {4096, 512}};

// The textbook scalar softmax, max subtracted for stability: y = exp(x - max) / sum.
void scalar_softmax_forward(float* out, const float* in, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* x = in + r * cols;
    float* y = out + r * cols;
    const float max = *std::max_element(x, x + cols);
    float sum = 0.0f;
    for (std::int64_t j = 0; j < cols; ++j) {
      y[j] = std::exp(x[j] - max);
      sum += y[j];
    }
    const float inverse = 1.0f / sum;
    for (std::int64_t j = 0; j < cols; ++j) y[j] *= inverse;
  }
}

// dx = y * (dy - sum(dy * y)).
void scalar_softmax_backward(float* in_grad, const float* out_grad, const float* out, std::int64_t rows,
                             std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* dy = out_grad + r * cols;
    const float* y = out + r * cols;
    float* dx = in_grad + r * cols;
    float dot = 0.0f;
    for (std::int64_t j = 0; j < cols; ++j) dot += dy[j] * y[j];
    for (std::int64_t j = 0; j < cols; ++j) dx[j] = y[j] * (dy[j] - dot);
  }
}

using SoftmaxForward = void (*)(float*, const float*, std::int64_t, std::int64_t);
using SoftmaxBackward = void (*)(float*, const float*, const float*, std::int64_t, std::int64_t);

struct SoftmaxOperands {
  std::vector<float> x, y, dy, dx;
  explicit SoftmaxOperands(SoftmaxShape s) {
    const auto n = static_cast<std::size_t>(s.rows * s.cols);
    std::mt19937 random(1);
    std::normal_distribution<float> value(0.0f, 3.0f);  // attention scores after scaling
    x.resize(n);
    dy.resize(n);
    for (float& e : x) e = value(random);
    for (float& e : dy) e = value(random);
    y.resize(n);
    dx.resize(n);
  }
};

void set_rates(benchmark::State& state, SoftmaxShape s, double bytes_per_element) {
  const double elements = static_cast<double>(s.rows * s.cols);
  state.counters["bytes/s"] = benchmark::Counter(bytes_per_element * elements, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1024);
  state.counters["elements/s"] = benchmark::Counter(elements, benchmark::Counter::kIsIterationInvariantRate);
}

void softmax_forward(benchmark::State& state, SoftmaxShape s, SoftmaxForward forward) {
  SoftmaxOperands o(s);
  for (auto _ : state) {
    forward(o.y.data(), o.x.data(), s.rows, s.cols);
    benchmark::ClobberMemory();
  }
  set_rates(state, s, 8.0);
}

void softmax_backward(benchmark::State& state, SoftmaxShape s, SoftmaxForward forward, SoftmaxBackward backward) {
  SoftmaxOperands o(s);
  forward(o.y.data(), o.x.data(), s.rows, s.cols);
  for (auto _ : state) {
    backward(o.dx.data(), o.dy.data(), o.y.data(), s.rows, s.cols);
    benchmark::ClobberMemory();
  }
  set_rates(state, s, 12.0);
}

// ember's kernels, looked up when a benchmark runs rather than during static
// initialization (the dispatcher picks the instruction set on first use).
void ember_softmax_forward(float* out, const float* in, std::int64_t rows, std::int64_t cols) {
  simd::softmax_kernels().softmax_forward(out, in, rows, cols);
}
void ember_softmax_backward(float* in_grad, const float* out_grad, const float* out, std::int64_t rows,
                            std::int64_t cols) {
  simd::softmax_kernels().softmax_backward(in_grad, out_grad, out, rows, cols);
}

bool register_softmax_benchmarks() {
  for (const SoftmaxShape& s : shapes) {
    const std::string prefix = "softmax/" + std::to_string(s.rows) + "x" + std::to_string(s.cols) + "/";
    benchmark::RegisterBenchmark((prefix + "forward/ember").c_str(), softmax_forward, s, ember_softmax_forward);
    benchmark::RegisterBenchmark((prefix + "forward/scalar").c_str(), softmax_forward, s, scalar_softmax_forward);
    benchmark::RegisterBenchmark((prefix + "backward/ember").c_str(), softmax_backward, s, ember_softmax_forward,
                                 ember_softmax_backward);
    benchmark::RegisterBenchmark((prefix + "backward/scalar").c_str(), softmax_backward, s, scalar_softmax_forward,
                                 scalar_softmax_backward);
  }
  return true;
}

const bool registered = register_softmax_benchmarks();

}  // namespace
}  // namespace ember
