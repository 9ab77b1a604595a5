#pragma once
// The executor runs steps of a graph over whole batches: training (forward, loss,
// backward), evaluation and inference. It is the only place that decides threads.
//
// Batch parallelism (docs/architecture.md): the batch is cut into micro-batches of a fixed size;
// micro-batch j goes to gradient lane j mod L (L fixed, not the thread count), each lane
// processes its micro-batches in order, and the lanes are summed in lane order. So the
// result of a step is the same bitwise for any thread count up to L. Threads take whole
// lanes; oneDNN, called inside the parallel region, runs on the calling thread only, so
// ember never runs more than `threads` compute threads (engine/threading.h).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/loss.h"
#include "engine/parameters.h"
#include "engine/step_program.h"
#include "engine/workspace.h"

namespace ember {

struct ExecutorOptions {
  int threads = 1;
  std::int64_t micro_batch = 16;
  // Gradient lanes; results are identical for every thread count <= lanes.
  int gradient_lanes = 4;
  PlanStrategy plan_strategy = PlanStrategy::best_fit;
  // Check the batch input, the weights, and every op's outputs (forward outputs, input
  // and parameter gradients) for NaN and infinity; the first found throws an
  // AnomalyError (engine/anomaly.h) naming the phase, layer, tensor and element. Off: no
  // check runs. The checks only read, so results are the same bitwise either way.
  bool detect_anomaly = false;
};

// How the executor runs a batch: the micro-batch sizes, the gradient lanes and the
// threads (one arena each). run_batch() follows it and estimate_step_memory() counts from
// it, so the estimate cannot drift from what is allocated.
struct BatchLayout {
  std::int64_t micro_batches = 0;
  std::int64_t full_size = 0;       // samples in every micro-batch but the last
  std::int64_t last_size = 0;       // samples in the last micro-batch
  std::int64_t gradient_lanes = 0;  // training: lanes written, lane 0 included; inference: 0
  int threads = 0;                  // threads that run micro-batches
};
// Whether a training step with this layout makes its layers' constants
// (PreparedLayer::constant_bytes) at its start: only when at least two micro-batches
// share them. One micro-batch would pack as much as it does without, and write and read
// the packed copy besides (measured: seed-cnn at batch 16 ran ~5% slower with them).
bool step_makes_constants(const BatchLayout& layout);
// Throws ember::Error naming a thread or lane count outside 1..max_compute_threads
// (engine/threading.h) or a micro-batch below 1.
void check_executor_options(const ExecutorOptions& options);
// The micro-batch a training step of `batch` samples runs when none is asked for (the
// trainer's and the CLI's default; ExecutorOptions::micro_batch itself is always
// explicit): 16, doubled (up to 64) while the batch still cuts into at least two
// micro-batches of the doubled size and the model's parameters are at least a quarter as
// many floats as the doubled micro-batch's forward values. Every micro-batch moves
// parameter-sized memory a fixed number of times (its weight gradients written, its lane
// summed, packed weights read) and activations in proportion to its size: a larger one
// spreads the first over more samples, which pays while it is a large share (Zen 4:
// seed-cnn at batch 64 steps in ~7% less CPU time with 32 than with 16; attn-cnn and
// resnet, whose activations dwarf their weights, take 2-3% more). A function of the
// model and the batch only, never of the thread count, so neither are a step's bits.
std::int64_t auto_micro_batch(const Graph& graph, std::int64_t parameter_floats, std::int64_t batch);
// Throws ember::Error for a batch below 1.
BatchLayout batch_layout(const ExecutorOptions& options, std::int64_t batch, Mode mode);

// The rank of `ranks` that runs micro-batch j of a batch laid out so (engine/
// distributed.h): training, the rank of its gradient lane; evaluation, its own.
int micro_batch_rank(const BatchLayout& layout, std::int64_t j, int ranks);
bool rank_runs_micro_batch(const BatchLayout& layout, std::int64_t j, int rank, int ranks);

class StepProfile;  // engine/profile.h
class Communicator;  // engine/distributed.h

class Executor {
 public:
  Executor(const Graph& graph, ParameterStore& parameters, ExecutorOptions options);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // input: `batch` samples of the graph's input shape, plain row-major.
  // Writes the batch-mean gradient into parameters.gradients(). With detect_anomaly,
  // throws AnomalyError for the first non-finite value (the lowest micro-batch's first).
  StepResult train_step(const float* input, std::int64_t batch, const Targets& targets, const Loss& loss,
                        std::uint64_t step_seed);
  StepResult evaluate(const float* input, std::int64_t batch, const Targets& targets, const Loss& loss);
  // output: batch x output_sample_elements() floats.
  void infer(const float* input, std::int64_t batch, float* output);

  std::int64_t output_sample_elements() const;
  // Bytes of the buffers the executor holds now: arenas, flag buffers, gradient lanes
  // 1..L-1, training constants (estimate_step_memory counts them before they exist).
  std::size_t buffer_bytes() const;
  const ExecutorOptions& options() const { return options_; }
  // Non-null: time every later step's ops and phases into `profile` (engine/profile.h),
  // which must outlive the executor's steps. Null: no timing.
  void profile_into(StepProfile* profile) { profile_ = profile; }
  // Non-null with more than one rank: train_step and evaluate run only this rank's
  // micro-batches (rank_runs_micro_batch; the input must hold those samples, at their
  // places in the whole batch), and every rank gets the whole batch's gradient sum and
  // results, bitwise those of one process; a graph's sync points (batch statistics) reduce
  // every rank's micro-batches in micro-batch order. infer() stays local. Null: one process.
  void distribute_over(Communicator* communicator) { communicator_ = communicator; }
  const StepPlanReport& plan_report(std::int64_t micro_batch, Mode mode) {
    return program(micro_batch, mode, mode == Mode::training).report();
  }

 private:
  StepProgram& program(std::int64_t micro_batch, Mode mode, bool computes_loss);
  struct Batch;
  void check_batch_for_anomalies(const float* input, std::int64_t batch) const;
  void allocate_batch_memory(Batch& batch, const StepProgram& full, const StepProgram& last);
  void make_step_constants(const BatchLayout& layout, StepProgram& full, StepProgram& last);
  float* lane_gradients(std::int64_t lane);
  void run_phase(Batch& batch, int phase);
  void sum_gradient_lanes(std::int64_t lanes);
  bool distributed() const;
  void share_partials(const Batch& batch, int phase);
  void make_buckets();
  StepResult gather_results(const Batch& batch) const;
  StepResult run_batch(const float* input, std::int64_t batch, Mode mode, const Targets* targets, const Loss* loss,
                       std::uint64_t step_seed, float* output);

  const Graph& graph_;
  // What training steps run (engine/training_graph.h); null: graph_ itself.
  std::unique_ptr<Graph> training_graph_;
  ParameterStore& parameters_;
  ExecutorOptions options_;
  std::unique_ptr<dnnl::engine> engine_;
  std::vector<std::unique_ptr<StepProgram>> programs_;
  std::vector<Workspace> workspaces_;  // one per thread that runs micro-batches
  std::vector<AlignedBuffer> kept_;    // per micro-batch of a graph with sync points
  AlignedBuffer batch_memory_;         // the reductions' results, one per step
  std::vector<AlignedBuffer> extra_lanes_;  // lanes 1..L-1; lane 0 is the store's gradient block
  StepProfile* profile_ = nullptr;
  Communicator* communicator_ = nullptr;
  std::vector<std::int64_t> bucket_starts_;  // the gradient exchange's buckets (make_buckets)
  std::vector<int> node_buckets_;            // per node: its bucket; empty: whole lanes only
  // Training: what layers make of the weights for a step (PreparedLayer::constant_bytes),
  // one buffer per node and constants_key, remade at the start of every step.
  struct HeldConstants {
    int node;
    std::string key;
    AlignedBuffer memory;
  };
  std::vector<HeldConstants> constants_;
};

}  // namespace ember
