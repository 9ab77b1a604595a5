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
      .toggle("training", "plan a training step (forward, loss, backward) instead of inference");
  if (!flags.parse(argc, argv, 2)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  const std::int64_t batch = flags.positive_integer("batch-size");
  const Graph graph = graph_from_spec(load_model_spec(flags.text("model")), flags.text("model"));
  ParameterStore parameters(graph);
  ExecutorOptions options;
  options.micro_batch = batch;
  Executor executor(graph, parameters, options);
  const StepPlanReport report = executor.plan_report(batch, flags.on("training") ? Mode::training : Mode::inference);

  std::printf("%-28s %14s %12s %6s %6s\n", "tensor", "bytes", "offset", "first", "last");
  for (std::size_t i = 0; i < report.tensors.size(); ++i) {
    const TensorLifetime& t = report.tensors[i];
    std::printf("%-28s %14zu %12zu %6d %6d\n", t.name.c_str(), t.bytes, report.plan.offsets[i], t.first_use, t.last_use);
  }
  std::printf("\narena       %s\nnaive       %s\nlower bound %s\nparameters  %s (%lld values)\n",
              mebibytes(report.plan.arena_bytes).c_str(), mebibytes(report.plan.naive_bytes).c_str(),
              mebibytes(report.plan.lower_bound_bytes).c_str(),
              mebibytes(static_cast<std::size_t>(parameters.total_floats()) * sizeof(float)).c_str(),
              static_cast<long long>(parameters.parameter_count()));
  return 0;
}

}  // namespace ember::cli
