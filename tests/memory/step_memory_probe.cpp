// The peak resident memory that real training steps add above a baseline, against
// estimate_step_memory()'s total. A program of its own, not a gtest, so nothing else in the
// process moves the peak. CTest holds the estimate to the truth with it (--tolerance);
// bench/compare_memory.sh sets it beside PyTorch (--json; bench/pytorch_memory.py measures
// the same way).
//
//   ember_step_memory_probe --threads T [--model seed-cnn] [--batch 256] [--steps 3] [--tolerance 0.15] [--cold] [--json]
//
// 1. The input batch and labels are made (they are the caller's, not the step's).
// 2. Warm-up (not with --cold): one training step of a throwaway executor at micro-batch 1,
//    one micro-batch per thread, destroyed; so the libraries' pages are touched and the
//    OpenMP threads exist. malloc_trim gives what it freed back to the system.
// 3. Baseline: resident bytes now; the peak (VmHWM) is reset to it.
// 4. Parameter store, Adam, executor; `steps` training steps with optimizer updates.
// 5. Peak above baseline vs estimate_step_memory(...).total(), computed last so the
//    programs it compiles cannot put oneDNN primitives in its cache before the run.
// Exit 0 within tolerance (or with --tolerance 0, which checks nothing), 1 outside it, 2 on
// a usage error.
#include <malloc.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
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
#include "engine/text.h"

namespace {

using namespace ember;

struct ProbeOptions {
  std::string model = "seed-cnn";
  std::int64_t batch = 256;
  int threads = 1;
  int steps = 3;
  double tolerance = 0.15;
  bool warm = true;
  bool json = false;
};

int run(const ProbeOptions& options) {
  const Json spec = builtin_model_spec(options.model);
  const Graph graph = graph_from_spec(spec, options.model);
  const std::int64_t sample = graph.input_sample_shape().elements();
  const std::int64_t outputs = graph.value_shape(graph.output()).sample_elements();
  std::vector<float> input(static_cast<std::size_t>(options.batch * sample));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(options.batch));
  std::vector<float> values(static_cast<std::size_t>(options.batch * outputs));
  std::mt19937 random(1);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  for (float& x : input) x = pixel(random);
  for (std::int32_t& y : labels) y = static_cast<std::int32_t>(random() % static_cast<unsigned>(outputs));
  // The spec's loss, on class labels or on regression targets.
  const std::unique_ptr<Loss> loss = make_loss(spec_loss_name(spec));
  const Targets targets = loss->uses_labels() ? Targets{labels, nullptr} : Targets{{}, values.data()};

  if (options.warm) {
    ParameterStore parameters(graph);
    parameters.initialize(0);
    ExecutorOptions warm;
    warm.threads = options.threads;
    warm.micro_batch = 1;
    Executor executor(graph, parameters, warm);
    executor.train_step(input.data(), options.threads, targets, *loss, 0);
  }
  ::malloc_trim(0);
  const std::size_t baseline = resident_bytes();
  reset_peak_resident();

  StepMemoryOptions step;
  step.batch = options.batch;
  step.executor.threads = options.threads;
  step.mode = Mode::training;
  step.optimizer = "adam";
  {
    ParameterStore parameters(graph);
    parameters.initialize(0);
    const std::unique_ptr<Optimizer> optimizer = make_optimizer(step.optimizer, step.optimizer_options, parameters);
    Executor executor(graph, parameters, step.executor);
    for (int s = 0; s < options.steps; ++s) {
      executor.train_step(input.data(), options.batch, targets, *loss, static_cast<std::uint64_t>(s));
      optimizer->step();
    }
  }
  const std::size_t peak = peak_resident_bytes();
  const std::size_t measured = peak - std::min(peak, baseline);

  ParameterStore parameters(graph);
  const StepMemory estimate = estimate_step_memory(graph, parameters, step);
  const double ratio = static_cast<double>(measured) / static_cast<double>(estimate.total());
  const bool within = options.tolerance == 0.0 || std::fabs(ratio - 1.0) <= options.tolerance;
  if (options.json) {
    std::printf("{\"framework\": \"ember\", \"model\": \"%s\", \"threads\": %d, \"batch\": %lld, \"steps\": %d, "
                "\"warm\": %s, \"baseline_mib\": %.2f, \"peak_above_baseline_mib\": %.2f, \"estimate_mib\": %.2f}\n",
                options.model.c_str(), options.threads, static_cast<long long>(options.batch), options.steps,
                options.warm ? "true" : "false", mebibytes(baseline), mebibytes(measured), mebibytes(estimate.total()));
    return within ? 0 : 1;
  }
  std::printf("%s, adam, batch %lld, micro-batch %lld, %d thread(s), %d step(s)\n", options.model.c_str(),
              static_cast<long long>(options.batch), static_cast<long long>(step.executor.micro_batch), options.threads,
              options.steps);
  std::printf("  estimate  %8.2f MiB  (parameters %.2f, gradients %.2f in %lld lanes, optimizer %.2f, arenas %d x %.2f)\n",
              mebibytes(estimate.total()), mebibytes(estimate.parameters), mebibytes(estimate.gradients),
              static_cast<long long>(estimate.gradient_lanes), mebibytes(estimate.optimizer_state), estimate.arena_count,
              mebibytes(estimate.arena_bytes + estimate.flag_bytes));
  std::printf("  measured  %8.2f MiB  (peak RSS %.2f MiB above a baseline of %.2f MiB)\n", mebibytes(measured),
              mebibytes(peak), mebibytes(baseline));
  if (options.tolerance > 0.0) {
    std::printf("  measured / estimate = %.3f (allowed %.3f to %.3f)\n", ratio, 1.0 - options.tolerance, 1.0 + options.tolerance);
  }
  return within ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  ProbeOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--cold" || flag == "--json") {
      (flag == "--cold" ? options.warm : options.json) = flag == "--json";
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", flag.c_str());
      return 2;
    }
    const char* value = argv[++i];
    if (flag == "--model") options.model = value;
    else if (flag == "--batch") options.batch = std::atoll(value);
    else if (flag == "--threads") options.threads = std::atoi(value);
    else if (flag == "--steps") options.steps = std::atoi(value);
    else if (flag == "--tolerance") options.tolerance = std::atof(value);
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (options.batch < 1 || options.threads < 1 || options.steps < 1 || !(options.tolerance >= 0.0)) {
    std::fprintf(stderr, "--batch, --threads and --steps must be positive, --tolerance at least 0\n");
    return 2;
  }
  try {
    return run(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "step memory probe: %s\n", e.what());
    return 1;
  }
}
