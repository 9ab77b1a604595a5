#pragma once
// The executor runs steps of a graph: training (forward, loss, backward), evaluation
// and inference. It is the only place that knows about threads.
//
// Batch parallelism (DESIGN.md): the batch is cut into micro-batches of a fixed size;
// micro-batch j goes to gradient lane j mod L (L fixed, not the thread count), each lane
// processes its micro-batches in order, and the lanes are summed in lane order. So the
// result of a step is the same bitwise for any thread count up to L. Threads take whole
// lanes; oneDNN, called inside the parallel region, runs on the calling thread only, so
// ember never runs more than `threads` compute threads.
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/graph.h"
#include "engine/loss.h"
#include "engine/memory_plan.h"
#include "engine/parameters.h"

namespace ember {

struct ExecutorOptions {
  int threads = 1;
  std::int64_t micro_batch = 16;
  // Gradient lanes; results are identical for every thread count <= lanes.
  int gradient_lanes = 4;
  PlanStrategy plan_strategy = PlanStrategy::best_fit;
};

struct StepResult {
  double loss_sum = 0.0;       // sum over samples of the per-sample loss
  std::int64_t correct = 0;    // top-1 hits (classification losses)
  std::int64_t samples = 0;
  double mean_loss() const { return samples > 0 ? loss_sum / static_cast<double>(samples) : 0.0; }
};

// One step's layout at one micro-batch size and mode, as data (for `ember plan` and tests).
struct StepPlanReport {
  std::vector<TensorLifetime> tensors;
  MemoryPlan plan;
};

class Executor {
 public:
  Executor(const Graph& graph, ParameterStore& parameters, ExecutorOptions options);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // input: `batch` samples of the graph's input shape, plain row-major.
  // Writes the batch-mean gradient into parameters.gradients().
  StepResult train_step(const float* input, std::int64_t batch, const Targets& targets, const Loss& loss,
                        std::uint64_t step_seed);
  StepResult evaluate(const float* input, std::int64_t batch, const Targets& targets, const Loss& loss);
  // output: batch x output_sample_elements() floats.
  void infer(const float* input, std::int64_t batch, float* output);

  std::int64_t output_sample_elements() const;
  Shape output_shape(std::int64_t batch) const;
  const ExecutorOptions& options() const { return options_; }
  StepPlanReport plan_report(std::int64_t micro_batch, Mode mode);

 private:
  struct CompiledStep;
  struct ThreadState;
  struct MicroBatchRun;
  // Runs one micro-batch through a compiled step on the calling thread.
  StepResult run_micro_batch(const CompiledStep& step, ThreadState& thread, const MicroBatchRun& run);
  const CompiledStep& compiled(std::int64_t micro_batch, Mode mode);
  void prepare_threads(std::size_t arena_bytes);
  std::vector<std::int64_t> micro_batch_sizes(std::int64_t batch) const;
  StepResult run_batch(const float* input, std::int64_t batch, Mode mode, const Targets* targets, const Loss* loss,
                       std::uint64_t step_seed, float* output);

  const Graph& graph_;
  ParameterStore& parameters_;
  ExecutorOptions options_;
  std::unique_ptr<dnnl::engine> engine_;
  std::vector<std::unique_ptr<CompiledStep>> compiled_;
  std::vector<std::unique_ptr<ThreadState>> threads_;
  std::vector<AlignedBuffer> extra_lanes_;  // lanes 1..L-1; lane 0 is the store's gradient block
};

}  // namespace ember
