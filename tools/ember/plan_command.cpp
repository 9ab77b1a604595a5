#include <algorithm>
#include <cstdio>
#include <string>

#include "engine/executor.h"
#include "engine/model_spec.h"
#include "engine/parameters.h"
#include "tools/ember/commands.h"
#include "tools/ember/flags.h"

namespace ember::cli {
namespace {

std::string mebibytes(std::size_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return text;
}

}  // namespace

int plan_command(int argc, char** argv) {
  Flags flags("plan", "Print the memory plan of one step of a model: every tensor with its size, offset and lifetime, and the totals.");
  flags.value("model", "built-in model name or path to a JSON spec", "seed-cnn", "M")
      .value("batch-size", "samples per micro-batch planned", "16", "B")
      .value("micro-batch", "samples a thread carries through the network at once", "16", "N")
      .value("threads", "compute threads (one arena each)", "1", "N")
      .value("optimizer", "training: sgd (no momentum state counted), sgd-momentum, adam or adamw", "adam", "NAME")
      .toggle("training", "plan a training step (forward, loss, backward) instead of inference");
  if (!flags.parse(argc, argv, 2)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  const std::int64_t batch = flags.positive_integer("batch-size");
  const std::int64_t micro_batch = std::min(batch, flags.positive_integer("micro-batch"));
  const int threads = static_cast<int>(flags.positive_integer("threads"));
  const bool training = flags.on("training");
  const std::string optimizer = flags.choice("optimizer", {"sgd", "sgd-momentum", "adam", "adamw"});
  const Graph graph = graph_from_spec(load_model_spec(flags.text("model")), flags.text("model"));
  ParameterStore parameters(graph);
  ExecutorOptions options;
  options.micro_batch = micro_batch;
  options.threads = threads;
  Executor executor(graph, parameters, options);
  const StepPlanReport& report = executor.plan_report(micro_batch, training ? Mode::training : Mode::inference);

  std::printf("%-28s %14s %12s %6s %6s\n", "tensor", "bytes", "offset", "first", "last");
  for (std::size_t i = 0; i < report.tensors.size(); ++i) {
    const TensorLifetime& t = report.tensors[i];
    std::printf("%-28s %14zu %12zu %6d %6d\n", t.name.c_str(), t.bytes, report.plan.offsets[i], t.first_use, t.last_use);
  }
  // The whole step: every byte ember will hold for it, known before anything runs.
  const std::size_t block = static_cast<std::size_t>(parameters.total_floats()) * sizeof(float);
  const std::int64_t micro_batches = (batch + micro_batch - 1) / micro_batch;
  const std::int64_t lanes = training ? std::min<std::int64_t>(std::max(executor.options().gradient_lanes, threads), micro_batches) : 0;
  const std::size_t optimizer_blocks = !training ? 0 : optimizer == "sgd" ? 0 : optimizer == "sgd-momentum" ? 1 : 2;
  const std::size_t arenas = static_cast<std::size_t>(std::min<std::int64_t>(threads, micro_batches));
  const std::size_t total = block /*weights*/ + (training ? block * static_cast<std::size_t>(lanes) : 0) +
                            block * optimizer_blocks + report.plan.arena_bytes * arenas;
  std::printf("\nper micro-batch of %lld (%s)\n  arena       %s\n  naive       %s\n  lower bound %s (arena = %.3f x lower bound)\n",
              static_cast<long long>(micro_batch), training ? "training" : "inference",
              mebibytes(report.plan.arena_bytes).c_str(), mebibytes(report.plan.naive_bytes).c_str(),
              mebibytes(report.plan.lower_bound_bytes).c_str(),
              report.plan.lower_bound_bytes > 0 ? static_cast<double>(report.plan.arena_bytes) / static_cast<double>(report.plan.lower_bound_bytes) : 1.0);
  std::printf("\nwhole step, batch %lld on %d thread(s)\n  parameters  %s (%lld values)\n", static_cast<long long>(batch), threads,
              mebibytes(block).c_str(), static_cast<long long>(parameters.parameter_count()));
  if (training) {
    std::printf("  gradients   %s (%lld lane(s))\n  optimizer   %s (%s)\n", mebibytes(block * static_cast<std::size_t>(lanes)).c_str(),
                static_cast<long long>(lanes), mebibytes(block * optimizer_blocks).c_str(), optimizer.c_str());
  }
  std::printf("  arenas      %s (%zu x %s, oneDNN scratchpads and workspaces included)\n  total       %s\n",
              mebibytes(report.plan.arena_bytes * arenas).c_str(), arenas, mebibytes(report.plan.arena_bytes).c_str(),
              mebibytes(total).c_str());
  return 0;
}

}  // namespace ember::cli
