// Whole built-in models through the executor, as `ember bench` runs them: a training step
// (forward, the spec's loss, backward, Adam) or an inference batch, at batch 1, 64 and
// 256 and 1 and 2 threads, micro-batch 16. Inputs are random (uniform [0, 1) pixels,
// random labels or N(0, 1) targets): the work does not depend on the values.
//
// Counter: img/s (samples per second). bench/compare.sh runs the same workloads against
// PyTorch, interleaved.
//   ember_bench --benchmark_filter=^model/
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "engine/parameters.h"

namespace ember {
namespace {

void run_model(benchmark::State& state, std::string model, std::int64_t batch, int threads, bool training) {
  const Json spec = builtin_model_spec(model);
  const Graph graph = graph_from_spec(spec, model);
  ParameterStore parameters(graph);
  parameters.initialize(0);
  const std::unique_ptr<Loss> loss = make_loss(spec_loss_name(spec));
  const std::int64_t sample = graph.input_sample_shape().elements();
  const std::int64_t outputs = graph.value_shape(graph.output()).sample_elements();

  std::mt19937 random(1);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  std::normal_distribution<float> value(0.0f, 1.0f);
  std::uniform_int_distribution<std::int32_t> label(0, static_cast<std::int32_t>(outputs) - 1);
  std::vector<float> input(static_cast<std::size_t>(batch * sample));
  std::vector<float> target_values(static_cast<std::size_t>(batch * outputs));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
  for (float& x : input) x = pixel(random);
  for (float& t : target_values) t = value(random);
  for (std::int32_t& y : labels) y = label(random);
  const Targets targets = loss->uses_labels() ? Targets{labels, nullptr} : Targets{{}, target_values.data()};

  ExecutorOptions options;
  options.threads = threads;
  Executor executor(graph, parameters, options);
  const std::unique_ptr<Optimizer> optimizer = make_optimizer("adam", OptimizerOptions{}, parameters);
  std::vector<float> output(static_cast<std::size_t>(batch * outputs));
  std::uint64_t step = 0;
  auto run_step = [&] {
    if (training) {
      executor.train_step(input.data(), batch, targets, *loss, step++);
      optimizer->step();
    } else {
      executor.infer(input.data(), batch, output.data());
    }
  };
  run_step();  // plans and oneDNN primitives are made on first use
  for (auto _ : state) run_step();
  state.counters["img/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}

bool register_model_benchmarks() {
  for (const std::string& model : builtin_model_names()) {
    for (bool training : {true, false}) {
      for (std::int64_t batch : {1, 64, 256}) {
        for (int threads : {1, 2}) {
          const std::string name = "model/" + model + "/" + (training ? "training" : "inference") + "/batch:" +
                                   std::to_string(batch) + "/threads:" + std::to_string(threads);
          benchmark::RegisterBenchmark(name.c_str(), run_model, model, batch, threads, training)->UseRealTime();
        }
      }
    }
  }
  return true;
}

const bool registered = register_model_benchmarks();

}  // namespace
}  // namespace ember
