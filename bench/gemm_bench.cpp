// GEMM throughput in the Linear forward layout, Y (M x N) = X (M x K) W^T with W (N x K)
// row-major: ember's packed GEMM against oneDNN's matmul (weights as a `ba` desc, i.e.
// W^T), OpenBLAS cblas_sgemm (when built with it) and a naive triple loop (small shapes),
// at 1 and 2 threads. Counter: GFLOP/s = 2 M N K per call.
//
// Names are gemm/<shape>/<implementation>/threads:<n>. Compare implementations within
// one run, interleaved, and read medians (the machine is shared and noisy):
//   ember_bench --benchmark_filter=^gemm/ --benchmark_repetitions=5
//     --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <omp.h>

#include <dnnl.hpp>
#include <random>
#include <string>
#include <vector>

#ifdef EMBER_BENCH_OPENBLAS
#include <cblas.h>
#endif

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/aligned_buffer.h"
#include "simd/gemm.h"

namespace ember {
namespace {

struct GemmShape {
  const char* name;
  std::int64_t M, K, N;
};

// Generic sizes, then the built-in models' Linear layers (seed CNN fc1/fc2 at batch 16
// and 64; attn-cnn d64 blocks at batch 16 x 49 tokens).
constexpr GemmShape shapes[] = {
    {"64x8192x128", 64, 8192, 128},     {"256x1024x1024", 256, 1024, 1024}, {"1024x256x768", 1024, 256, 768},
    {"2048x2048x2048", 2048, 2048, 2048}, {"fc1_b16", 16, 6272, 128},        {"fc1_b64", 64, 6272, 128},
    {"fc2_b16", 16, 128, 10},           {"fc2_b64", 64, 128, 10},           {"attn_qkv", 784, 64, 192},
    {"attn_out", 784, 64, 64},          {"attn_ff1", 784, 64, 128},         {"attn_ff2", 784, 128, 64},
};

struct Operands {
  std::vector<float> x, w, y;
  explicit Operands(const GemmShape& s)
      : x(static_cast<std::size_t>(s.M * s.K)), w(static_cast<std::size_t>(s.N * s.K)), y(static_cast<std::size_t>(s.M * s.N)) {
    std::mt19937 random(1);
    std::uniform_real_distribution<float> value(-1.0f, 1.0f);
    for (float& e : x) e = value(random);
    for (float& e : w) e = value(random);
  }
};

void set_rate(benchmark::State& state, const GemmShape& s) {
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(s.M * s.N * s.K) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void ember_gemm(benchmark::State& state, GemmShape s, int threads) {
  using simd::Transpose;
  Operands o(s);
  AlignedBuffer scratch(simd::gemm_scratch_floats(Transpose::no, Transpose::yes, s.M, s.N, s.K, threads) * sizeof(float));
  for (auto _ : state) {
    simd::gemm(Transpose::no, Transpose::yes, s.M, s.N, s.K, o.x.data(), s.K, o.w.data(), s.K, o.y.data(), s.N,
               simd::GemmEpilogue{}, scratch.floats(), threads);
    benchmark::ClobberMemory();
  }
  set_rate(state, s);
  state.counters["scratch_KiB"] = static_cast<double>(scratch.size()) / 1024.0;
}

void onednn_matmul(benchmark::State& state, GemmShape s, int threads) {
  using dnnl::memory;
  Operands o(s);
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const memory::desc x_md({s.M, s.K}, memory::data_type::f32, memory::format_tag::ab);
  const memory::desc w_md({s.K, s.N}, memory::data_type::f32, memory::format_tag::ba);  // W (N x K) is W^T in ba
  const memory::desc y_md({s.M, s.N}, memory::data_type::f32, memory::format_tag::ab);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(x_md, w_md, y_md), engine);
  const dnnl::matmul matmul(pd);
  memory x_mem(x_md, engine, o.x.data()), w_mem(w_md, engine, o.w.data()), y_mem(y_md, engine, o.y.data());
  const std::unordered_map<int, memory> args{{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, y_mem}};
  // Debian's oneDNN runs on OpenMP: its team is the calling thread's max threads.
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  for (auto _ : state) {
    matmul.execute(stream, args);
    stream.wait();
  }
  omp_set_num_threads(before);
  set_rate(state, s);
}

#ifdef EMBER_BENCH_OPENBLAS
void openblas_sgemm(benchmark::State& state, GemmShape s, int threads) {
  Operands o(s);
  openblas_set_num_threads(threads);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(s.M), static_cast<int>(s.N),
                static_cast<int>(s.K), 1.0f, o.x.data(), static_cast<int>(s.K), o.w.data(), static_cast<int>(s.K), 0.0f,
                o.y.data(), static_cast<int>(s.N));
    benchmark::ClobberMemory();
  }
  set_rate(state, s);
}
#endif

// Y[i][j] = sum over k of X[i][k] W[j][k], as written by hand.
void naive_gemm(benchmark::State& state, GemmShape s, int) {
  Operands o(s);
  for (auto _ : state) {
    for (std::int64_t i = 0; i < s.M; ++i) {
      for (std::int64_t j = 0; j < s.N; ++j) {
        float sum = 0.0f;
        for (std::int64_t k = 0; k < s.K; ++k) sum += o.x[static_cast<std::size_t>(i * s.K + k)] * o.w[static_cast<std::size_t>(j * s.K + k)];
        o.y[static_cast<std::size_t>(i * s.N + j)] = sum;
      }
    }
    benchmark::ClobberMemory();
  }
  set_rate(state, s);
}

bool register_gemm_benchmarks() {
  for (const GemmShape& s : shapes) {
    const std::string prefix = std::string("gemm/") + s.name + "/";
    for (int threads : {1, 2}) {
      const std::string suffix = "/threads:" + std::to_string(threads);
      benchmark::RegisterBenchmark((prefix + "ember" + suffix).c_str(), ember_gemm, s, threads)->UseRealTime();
      benchmark::RegisterBenchmark((prefix + "onednn" + suffix).c_str(), onednn_matmul, s, threads)->UseRealTime();
#ifdef EMBER_BENCH_OPENBLAS
      benchmark::RegisterBenchmark((prefix + "openblas" + suffix).c_str(), openblas_sgemm, s, threads)->UseRealTime();
#endif
    }
    if (s.M * s.N * s.K <= (std::int64_t{1} << 24)) {
      benchmark::RegisterBenchmark((prefix + "naive/threads:1").c_str(), naive_gemm, s, 1)->UseRealTime();
    }
  }
  return true;
}

const bool registered = register_gemm_benchmarks();

}  // namespace
}  // namespace ember
