// Peak memory of training, the ember side of bench/compare_memory.sh (bench/pytorch_memory.py
// is the PyTorch side and measures the same way).
//
//   ember_train_memory --threads T [--model seed-cnn] [--batch 256] [--steps 5] [--warm]
//
// The synthetic batch (uniform pixels, random labels) is made first; it is the caller's
// data and sits below the baseline, as it does for PyTorch. Baseline: this process's
// resident memory right then, after the libraries are loaded and before any model exists
// (`--warm`: after one training step of a throwaway model, one sample per thread, as the PyTorch side
// does). The peak (VmHWM) is reset to the baseline; then the parameter store, Adam and
// the executor are made and `steps` training steps run. Prints one JSON line:
//   {"framework": "ember", "threads": T, "batch": B, "steps": S, "warm": false,
//    "baseline_mib": ..., "peak_above_baseline_mib": ..., "estimate_mib": ...}
// estimate_mib is estimate_step_memory()'s total, for comparison.
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "engine/parameters.h"
#include "engine/process_memory.h"
#include "engine/step_memory.h"

namespace {

using namespace ember;

double mebibytes(std::size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

}  // namespace

int main(int argc, char** argv) {
  std::string model = "seed-cnn";
  std::int64_t batch = 256;
  int threads = 1;
  int steps = 5;
  bool warm = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--warm") {
      warm = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", flag.c_str());
      return 2;
    }
    const char* value = argv[++i];
    if (flag == "--model") model = value;
    else if (flag == "--batch") batch = std::atoll(value);
    else if (flag == "--threads") threads = std::atoi(value);
    else if (flag == "--steps") steps = std::atoi(value);
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (batch < 1 || threads < 1 || steps < 1) {
    std::fprintf(stderr, "--batch, --threads and --steps must be positive\n");
    return 2;
  }
  try {
    const Graph graph = graph_from_spec(builtin_model_spec(model), model);
    const std::int64_t sample = graph.input_sample_shape().elements();
    const auto classes = static_cast<std::int32_t>(graph.value_shape(graph.output()).sample_elements());
    std::vector<float> input(static_cast<std::size_t>(batch * sample));
    std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
    std::mt19937 random(1);
    std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
    for (float& x : input) x = pixel(random);
    for (std::int32_t& y : labels) y = static_cast<std::int32_t>(random() % static_cast<unsigned>(classes));
    const Targets targets{labels, nullptr};
    const CrossEntropyLoss loss;

    ExecutorOptions options;
    options.threads = threads;
    if (warm) {
      ParameterStore parameters(graph);
      Executor executor(graph, parameters, ExecutorOptions{.threads = threads, .micro_batch = 1});
      executor.train_step(input.data(), threads, targets, loss, 0);  // one sample per thread
    }
    ::malloc_trim(0);
    const std::size_t baseline = resident_bytes();
    reset_peak_resident();
    {
      ParameterStore parameters(graph);
      parameters.initialize(0);
      const std::unique_ptr<Optimizer> optimizer = make_optimizer("adam", OptimizerOptions{}, parameters);
      Executor executor(graph, parameters, options);
      for (int s = 0; s < steps; ++s) {
        executor.train_step(input.data(), batch, targets, loss, static_cast<std::uint64_t>(s));
        optimizer->step();
      }
    }
    const std::size_t peak = peak_resident_bytes();

    StepMemoryOptions step;
    step.batch = batch;
    step.executor = options;
    const ParameterStore parameters(graph);
    const StepMemory estimate = estimate_step_memory(graph, parameters, step);
    std::printf(
        "{\"framework\": \"ember\", \"model\": \"%s\", \"threads\": %d, \"batch\": %lld, \"steps\": %d, \"warm\": %s, "
        "\"baseline_mib\": %.2f, \"peak_above_baseline_mib\": %.2f, \"estimate_mib\": %.2f}\n",
        model.c_str(), threads, static_cast<long long>(batch), steps, warm ? "true" : "false", mebibytes(baseline),
        mebibytes(peak - std::min(peak, baseline)), mebibytes(estimate.total()));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ember_train_memory: %s\n", e.what());
    return 1;
  }
}
