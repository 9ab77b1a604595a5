#include <cstdio>
#include <string>

#include "engine/step_plan.h"
#include "engine/text.h"
#include "engine/threading.h"
#include "tools/ember/commands.h"
#include "tools/ember/flags.h"

namespace ember::cli {
namespace {

std::string mebibytes_text(std::size_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f MiB", mebibytes(bytes));
  return text;
}

// One memory region's tensors: where each lives, and when (positions in the op list).
void print_tensors(const char* region, const std::vector<TensorLifetime>& tensors, const std::vector<std::string>& shapes,
                   const MemoryPlan& plan) {
  if (tensors.empty()) return;
  std::printf("\n%-28s %-26s %14s %12s %6s %6s  (%s)\n", "tensor", "shape", "bytes", "offset", "first", "last", region);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const TensorLifetime& t = tensors[i];
    std::printf("%-28s %-26s %14zu %12zu %6d %6d\n", t.name.c_str(), shapes[i].c_str(), t.bytes, plan.offsets[i],
                t.first_use, t.last_use);
  }
}

void print_plan_sizes(const char* region, const MemoryPlan& plan) {
  const double ratio = plan.lower_bound_bytes > 0
                           ? static_cast<double>(plan.arena_bytes) / static_cast<double>(plan.lower_bound_bytes)
                           : 1.0;
  std::printf("  %-11s %s\n  naive       %s\n  lower bound %s (%s = %.3f x lower bound)\n", region,
              mebibytes_text(plan.arena_bytes).c_str(), mebibytes_text(plan.naive_bytes).c_str(),
              mebibytes_text(plan.lower_bound_bytes).c_str(), region, ratio);
}

}  // namespace

int plan_command(int argc, char** argv) {
  Flags flags("plan", "Print the memory plan of one step of a model: every tensor with its shape, size, offset and "
                      "lifetime, the arena totals, and the memory of the whole step.");
  flags.model()
      .value("batch-size", "samples per step (cut into micro-batches)", "16", "B")
      .value("micro-batch", "samples a thread carries through the network at once (the planned size; auto: as ember train chooses, 16 in inference)", "auto", "N")
      .value("threads", "compute threads (one arena each)", "1", "N")
      .value("optimizer", "training: sgd (no state), sgd-momentum, adam or adamw", "adam", "NAME")
      .toggle("training", "plan a training step (forward, loss, backward) instead of inference")
      .memory_limit();
  if (!flags.parse(argc, argv, 2)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  StepPlanRequest request;
  request.model = flags.text("model");
  request.batch = flags.positive_integer("batch-size");
  request.micro_batch = flags.positive_integer_or_auto("micro-batch");
  const std::int64_t threads = flags.positive_integer("threads");
  if (threads > max_compute_threads) {
    throw UsageError("ember plan: --threads: expected 1 to " + std::to_string(max_compute_threads) + ", found '" +
                     flags.text("threads") + "'");
  }
  request.threads = static_cast<int>(threads);
  request.training = flags.on("training");
  request.optimizer = flags.choice("optimizer", {"sgd", "sgd-momentum", "adam", "adamw"});
  request.memory_limit = flags.memory_size("memory-limit");
  const StepPlan plan = plan_step(request);
  const StepPlanReport& report = plan.report;
  const StepMemory& memory = plan.memory;
  const bool training = request.training;
  const std::int64_t batch = request.batch, micro_batch = plan.micro_batch;
  const std::string& optimizer = request.optimizer;
  const std::size_t memory_limit = plan.memory_limit;
  // The op sequence first: the tensors' first and last uses are positions in it.
  std::printf("%-6s %s\n", "op", "runs");
  for (std::size_t i = 0; i < report.ops.size(); ++i) std::printf("%-6zu %s\n", i, report.ops[i].c_str());
  print_tensors("arena", report.tensors, report.shapes, report.plan);
  print_tensors("kept", report.kept_tensors, report.kept_shapes, report.kept_plan);
  std::printf("\nper micro-batch of %lld (%s)\n", static_cast<long long>(micro_batch), training ? "training" : "inference");
  print_plan_sizes("arena", report.plan);
  if (report.phases > 1) {
    std::printf("  phases      %d (%d sync points: whole-batch reductions)\n", report.phases, report.phases - 1);
    print_plan_sizes("kept", report.kept_plan);
    std::printf("  batch       %s (the reductions' results, once per step)\n", mebibytes_text(report.batch_bytes).c_str());
  }
  for (const std::string& fused : report.fused) std::printf("  fused       %s (the second applied by the first)\n", fused.c_str());

  std::printf("\nwhole step, batch %lld on %lld thread(s) (input batch not included)\n  parameters  %s (%lld values)\n",
              static_cast<long long>(batch), static_cast<long long>(threads), mebibytes_text(memory.parameters).c_str(),
              static_cast<long long>(plan.parameter_count));
  // Layer state that is not trained (BatchNorm's running statistics); most models have none.
  if (memory.buffers > 0) {
    std::printf("  buffers     %s (%lld values, not trained)\n", mebibytes_text(memory.buffers).c_str(),
                static_cast<long long>(plan.buffer_count));
  }
  std::printf("  gradients   %s (%lld lane(s)%s)\n", mebibytes_text(memory.gradients).c_str(),
              static_cast<long long>(memory.gradient_lanes), training ? "" : ", the store's block, unused in inference");
  if (training) {
    std::printf("  optimizer   %s (%s, %d block(s))\n", mebibytes_text(memory.optimizer_state).c_str(), optimizer.c_str(),
                memory.optimizer_blocks);
  }
  std::printf("  arenas      %s (%d x %s, oneDNN scratchpads and workspaces included)\n",
              mebibytes_text(memory.arenas).c_str(), memory.arena_count, mebibytes_text(memory.arena_bytes).c_str());
  if (memory.kept > 0) {
    std::printf("  kept        %s (%lld micro-batch(es) x %s across sync points, and the batch memory)\n",
                mebibytes_text(memory.kept).c_str(), static_cast<long long>(memory.kept_count),
                mebibytes_text(memory.kept_bytes).c_str());
  }
  if (memory.constants > 0) {
    std::printf("  constants   %s (weights prepared once per step: packed for the GEMMs)\n",
                mebibytes_text(memory.constants).c_str());
  }
  std::printf("  total       %s\n", mebibytes_text(memory.total()).c_str());
  // The plan is printed either way, so the figure that exceeds the limit can be read.
  std::printf("  limit       %s\n", mebibytes_text(memory_limit).c_str());
  check_step_memory(memory, memory_limit, flags.text("model"));
  return 0;
}

}  // namespace ember::cli
