// GEMM throughput in the Linear forward layout, Y (M x N) = X (M x K) W^T with W (N x K)
// row-major: ember's GEMM against oneDNN's matmul (weights as a `ba` desc, i.e. W^T),
// OpenBLAS cblas_sgemm (when built with it) and a naive triple loop (small shapes), at 1
// and 2 threads; and both at their best with constant weights, packed once outside the
// timed loop: ember's gemm_pack_b + gemm_packed (`ember_packed`) against oneDNN's matmul
// whose weights were reordered once to the layout it prefers, format_tag::any
// (`onednn_packed`). Counter: GFLOP/s = 2 M N K per call.
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

#include "bench/gemm_shapes.h"
#include "engine/aligned_buffer.h"
#include "simd/gemm.h"

namespace ember {
namespace {

using bench::GemmShape;

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

void ember_packed_gemm(benchmark::State& state, GemmShape s, int threads) {
  using simd::Transpose;
  Operands o(s);
  AlignedBuffer packed(simd::gemm_packed_b_floats(Transpose::yes, s.K, s.N) * sizeof(float));
  simd::gemm_pack_b(Transpose::yes, s.K, s.N, o.w.data(), s.K, packed.floats(), 1);
  AlignedBuffer scratch(simd::gemm_packed_scratch_floats(Transpose::no, Transpose::yes, s.M, s.N, s.K, threads) *
                        sizeof(float));
  for (auto _ : state) {
    simd::gemm_packed(Transpose::no, Transpose::yes, s.M, s.N, s.K, o.x.data(), s.K, packed.floats(), o.y.data(), s.N,
                      simd::GemmEpilogue{}, scratch.floats(), threads);
    benchmark::ClobberMemory();
  }
  set_rate(state, s);
  state.counters["scratch_KiB"] = static_cast<double>(scratch.size()) / 1024.0;
}

// oneDNN's matmul; prepacked: the weights reordered once (outside the timed loop) into
// the layout the primitive chose for format_tag::any.
void onednn_run(benchmark::State& state, GemmShape s, int threads, bool prepacked) {
  using dnnl::memory;
  Operands o(s);
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const memory::desc x_md({s.M, s.K}, memory::data_type::f32, memory::format_tag::ab);
  const memory::desc w_md({s.K, s.N}, memory::data_type::f32, memory::format_tag::ba);  // W (N x K) is W^T in ba
  const memory::desc any_md({s.K, s.N}, memory::data_type::f32, memory::format_tag::any);
  const memory::desc y_md({s.M, s.N}, memory::data_type::f32, memory::format_tag::ab);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(x_md, prepacked ? any_md : w_md, y_md), engine);
  const dnnl::matmul matmul(pd);
  // Debian's oneDNN runs on OpenMP: its team is the calling thread's max threads.
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  memory x_mem(x_md, engine, o.x.data()), w_mem(w_md, engine, o.w.data()), y_mem(y_md, engine, o.y.data());
  memory w_used = w_mem;
  if (prepacked && pd.weights_desc() != w_md) {
    w_used = memory(pd.weights_desc(), engine);
    dnnl::reorder(w_mem, w_used).execute(stream, w_mem, w_used);
    stream.wait();
  }
  const std::unordered_map<int, memory> args{{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_used}, {DNNL_ARG_DST, y_mem}};
  for (auto _ : state) {
    matmul.execute(stream, args);
    stream.wait();
  }
  omp_set_num_threads(before);
  set_rate(state, s);
}

void onednn_matmul(benchmark::State& state, GemmShape s, int threads) { onednn_run(state, s, threads, false); }
void onednn_packed_matmul(benchmark::State& state, GemmShape s, int threads) { onednn_run(state, s, threads, true); }

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
  for (const GemmShape& s : bench::gemm_shapes) {
    const std::string prefix = std::string("gemm/") + s.name + "/";
    for (int threads : {1, 2}) {
      const std::string suffix = "/threads:" + std::to_string(threads);
      benchmark::RegisterBenchmark((prefix + "ember" + suffix).c_str(), ember_gemm, s, threads)->UseRealTime();
      benchmark::RegisterBenchmark((prefix + "onednn" + suffix).c_str(), onednn_matmul, s, threads)->UseRealTime();
      benchmark::RegisterBenchmark((prefix + "ember_packed" + suffix).c_str(), ember_packed_gemm, s, threads)->UseRealTime();
      benchmark::RegisterBenchmark((prefix + "onednn_packed" + suffix).c_str(), onednn_packed_matmul, s, threads)
          ->UseRealTime();
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
