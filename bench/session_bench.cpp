// InferenceSession under concurrent callers, as a server uses it: latency of one call at
// batch 1 and throughput at batch 64, with 1, 2 and 4 threads calling one shared session
// at once (each call runs on its caller's thread; engine/session.h).
//
// Counters: latency_ms, the mean wall time of one run() as its caller sees it (averaged
// over callers), and images_per_second, all callers' images over the wall time.
// bench/compare_session.py runs the same through PyTorch (bench/pytorch_session.py).
#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/model_spec.h"
#include "engine/parameters.h"
#include "engine/session.h"

namespace ember {
namespace {

constexpr std::int64_t max_batch = 64;
constexpr int max_callers = 4;

// One session per model, made on first use and shared by every benchmark and caller: it
// is immutable but for its workspace pool, which is what concurrent callers exercise.
std::unique_ptr<InferenceSession> make_session(const char* model) {
  auto graph = std::make_unique<Graph>(graph_from_spec(builtin_model_spec(model), model));
  auto parameters = std::make_unique<ParameterStore>(*graph);
  parameters->initialize(0);
  SessionOptions options;
  options.max_batch = max_batch;
  options.workspaces = max_callers;  // warm calls allocate no arena
  return std::make_unique<InferenceSession>(std::move(graph), std::move(parameters), options);
}

const InferenceSession& seed_cnn() {
  static const std::unique_ptr<InferenceSession> session = make_session("seed-cnn");
  return *session;
}

const InferenceSession& attn_cnn() {
  static const std::unique_ptr<InferenceSession> session = make_session("attn-cnn");
  return *session;
}

void session_run(benchmark::State& state, const InferenceSession& (*session)()) {
  const InferenceSession& s = session();
  const std::int64_t batch = state.range(0);
  std::vector<float> input(static_cast<std::size_t>(batch * s.input_sample_elements()));
  std::vector<float> output(static_cast<std::size_t>(batch * s.output_sample_elements()));
  std::mt19937 random(static_cast<unsigned>(state.thread_index()) + 1);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  for (float& x : input) x = pixel(random);
  s.run(input.data(), batch, output.data());  // this caller's warm-up
  double seconds = 0.0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    s.run(input.data(), batch, output.data());
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    benchmark::DoNotOptimize(output.data());
  }
  const auto calls = static_cast<double>(state.iterations());
  state.counters["latency_ms"] = benchmark::Counter(calls > 0 ? 1e3 * seconds / calls : 0.0, benchmark::Counter::kAvgThreads);
  state.counters["images_per_second"] = benchmark::Counter(calls * static_cast<double>(batch), benchmark::Counter::kIsRate);
  state.counters["callers"] = benchmark::Counter(1.0);  // summed over callers
}

void seed_cnn_session(benchmark::State& state) { session_run(state, seed_cnn); }
void attn_cnn_session(benchmark::State& state) { session_run(state, attn_cnn); }

void callers_and_batches(benchmark::internal::Benchmark* b) {
  b->ArgName("batch")->Arg(1)->Arg(max_batch);
  for (int callers = 1; callers <= max_callers; callers *= 2) b->Threads(callers);
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK(seed_cnn_session)->Apply(callers_and_batches);
BENCHMARK(attn_cnn_session)->Apply(callers_and_batches);

}  // namespace
}  // namespace ember
