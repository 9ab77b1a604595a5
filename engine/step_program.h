#pragma once
// A StepProgram is one step of a graph (training: forward, loss, backward; or inference)
// compiled for one micro-batch size. The compiler (engine/step_compiler.cpp) runs named
// passes over the graph: fuse activations into the layers that can apply them, prepare every
// layer (oneDNN primitives are created there), legalize layouts (plain copies of blocked
// values for the layers that need plain data), differentiate (who writes which gradient,
// into which buffer), schedule the ops into phases separated by batch sync points, give
// every tensor its lifetime, and plan the memory. docs/architecture.md walks through it.
//
// A program is immutable once built: any number of threads may run it at once, each with
// its own Workspace (engine/workspace.h). That is what the executor's batch parallelism
// and the inference session's concurrent calls both rely on.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/loss.h"
#include "engine/memory_plan.h"
#include "engine/parameters.h"

namespace ember {

struct Anomaly;  // engine/anomaly.h
struct ProfiledOp;  // engine/profile.h
struct ThreadProfile;
struct Workspace;
struct Reorder;  // engine/step_compiler.cpp: a oneDNN reorder between a blocked value and its plain copy

struct StepResult {
  double loss_sum = 0.0;       // sum over samples of the per-sample loss
  std::int64_t correct = 0;    // top-1 hits (classification losses)
  std::int64_t samples = 0;
  double mean_loss() const { return samples > 0 ? loss_sum / static_cast<double>(samples) : 0.0; }
  StepResult& operator+=(const StepResult& other) {
    loss_sum += other.loss_sum;
    correct += other.correct;
    samples += other.samples;
    return *this;
  }
};

// One step's tensors and their placement, as data (for `ember plan` and tests).
// Tensors live in one of two places: the arena (a workspace's, reused by every
// micro-batch a thread runs) or, when they live across a sync point, the micro-batch's
// kept memory (one per micro-batch of the batch, as every micro-batch must reach the sync
// point before any goes on).
struct StepPlanReport {
  std::vector<TensorLifetime> tensors;  // in the arena
  std::vector<std::string> shapes;  // per tensor: "(16, 32, 28, 28)", "+ blocked" if oneDNN's layout pads; "-" for raw bytes
  MemoryPlan plan;
  std::vector<TensorLifetime> kept_tensors;  // kept per micro-batch
  std::vector<std::string> kept_shapes;
  MemoryPlan kept_plan;
  std::size_t batch_bytes = 0;      // per step: the reductions' results
  int phases = 1;                   // micro-batch phases; phases - 1 sync points
  std::vector<std::string> fused;   // "conv1+relu1": activations applied by the layer before them (inference)
  std::vector<std::string> ops;     // the op sequence: "forward conv1", "to_plain conv1", "loss", "backward fc1", ...
};

// What one run of a program reads and writes besides its workspace.
struct StepRun {
  const float* input = nullptr;       // micro_batch samples, plain row-major
  std::int64_t first_sample = 0;      // index of input's first sample in the whole batch
  float* gradients = nullptr;         // training: a gradient block laid out like the parameters
  bool accumulate = false;            // add to `gradients` instead of overwriting them
  const Loss* loss = nullptr;         // null: no loss (inference)
  const Targets* targets = nullptr;   // targets of the whole batch
  float grad_scale = 1.0f;            // 1 / batch size
  CounterRandom random;               // this step's random stream (dropout)
  float* output = nullptr;            // whole-batch output buffer to copy this micro-batch into
  // Non-null: check every op's outputs for NaN and infinity; at the first one, record it
  // here and stop the run (its results are then meaningless).
  std::optional<Anomaly>* anomaly = nullptr;
  std::int64_t micro_batch_index = 0;  // recorded with an anomaly
  // Compute threads each op may use (ForwardArgs::threads), at most the program's
  // max_threads. The executor runs micro-batches in parallel, one thread each.
  int threads = 1;
  // Non-null: running threads (of `threads`) that ops may give their parts to
  // (ForwardArgs::runner); ops then take threads from a smaller size of work on.
  const simd::PartRunner* runner = nullptr;
  // Non-null: time every op into this thread's tallies (engine/profile.h).
  ThreadProfile* profile = nullptr;
  // Non-null: called with a node once its last backward op of this run (the full stage)
  // is done, so its parameter gradients are final for the run (MPI's early sends).
  const std::function<void(int)>* parameters_written = nullptr;
};

// The compiled form. Values are the step's tensors as layers see them (graph values and
// plain copies of blocked ones); tensors are what the memory plan places (a value, a
// gradient, a partial gradient, a layer's saved or scratch bytes); ops run in order.
// forward_partial / reduce_forward / forward (and the backward three) are the stages of a
// batch-level layer (layers/layer.h); a reduce op is a sync point between two phases.
enum class OpKind {
  forward,
  forward_partial,
  reduce_forward,
  to_plain,
  loss,
  backward_partial,
  reduce_backward,
  backward,
  gradient_to_blocked,
};

struct StepValue {
  ValueInfo info;
  std::string name;            // the producing node's name; "input"; "<node>.plain" for a copy
  int copy_of = -1;            // a plain copy: the blocked value it copies
  int plain_copy = -1;         // a blocked value: its plain copy, if some reader needs one
  int producer = -1;           // the node that writes it (-1: the input, or a copy)
  bool requires_grad = false;  // training: backward produces its gradient
  int tensor = -1;             // where it lives (shared with its input when a layer runs in place)
  int gradient = -1;           // its gradient's tensor
  std::vector<int> partials;   // tensors a second reader's gradient is written to, then added in
  std::shared_ptr<const Reorder> reorder;  // a plain copy: the reorders to and from the blocked value
};

struct StepTensor {
  std::string name;
  std::size_t bytes = 0;
  std::string shape;  // for the report
  int first_use = -1;
  int last_use = -1;
  bool kept = false;       // lives across a sync point: in the micro-batch's kept memory
  std::size_t offset = 0;  // in the arena or the kept memory
};

// Where a backward op (or the loss, or a reorder of a gradient) writes one gradient: the
// value's gradient tensor itself when it is the value's first writer, else a partial
// buffer that is then added to it.
struct GradientWrite {
  int value = -1;    // -1: no gradient wanted
  int partial = -1;  // index into StepValue::partials, or -1 for the gradient itself
};

struct StepOp {
  OpKind kind = OpKind::forward;
  int node = -1;                // forward, backward: the graph node
  std::vector<int> inputs;      // values read (to_plain, gradient_to_blocked: the plain copy)
  int output = -1;              // value written or whose gradient is read
  std::vector<GradientWrite> input_grads;  // backward: per input; loss, gradient_to_blocked: one
  bool zero_output_grad = false;  // backward: no reader wrote the output's gradient (an unused branch)
  int saved = -1;               // tensors of the layer, -1 if it needs none
  int scratch = -1;
  int partial = -1;             // batch-level stages: the micro-batch's partial sums
  std::size_t batch_offset = 0; // batch-level stages: the layer's results in the batch memory
  int phase = 0;                // micro-batch ops: the phase they run in; a reduce op ends it
  std::string describe;         // for the report and anomaly messages
};

// Where a run's tensors are: the workspace's arena, and for programs with sync points the
// micro-batch's kept memory and the step's batch memory.
// One copy of constants a step needs: a node's constants_key(), shared by every program
// of the step that asks for it (PreparedLayer::constant_bytes).
struct StepConstants {
  int node = -1;
  std::string key;
  std::size_t bytes = 0;                // the largest any of the programs asks for
  const PreparedLayer* layer = nullptr;  // the first program's, which makes them
};
class StepProgram;
// The distinct constants of the programs a step runs (an executor's full and last
// micro-batch sizes), in the order first asked. The executor allocates one buffer for
// each and estimate_step_memory counts them from the same list.
std::vector<StepConstants> step_constants(std::span<const StepProgram* const> programs);

struct StepMemoryViews {
  std::byte* kept = nullptr;   // kept_bytes(), this micro-batch's
  std::byte* batch = nullptr;  // batch_bytes(), shared by every micro-batch of the step
};

class StepProgram {
 public:
  // computes_loss: runs are given a loss (training always is); an inference program that
  // computes none (a session's) plans no scratch for it. max_threads: the most threads a
  // run gives each op (StepRun::threads); layers size their scratch for it.
  StepProgram(const Graph& graph, const ParameterStore& parameters, std::int64_t micro_batch, Mode mode,
              const dnnl::engine& engine, PlanStrategy strategy, bool computes_loss = true, int max_threads = 1);
  ~StepProgram();
  StepProgram(const StepProgram&) = delete;
  StepProgram& operator=(const StepProgram&) = delete;

  std::int64_t micro_batch() const { return micro_batch_; }
  Mode mode() const { return mode_; }
  bool computes_loss() const { return computes_loss_; }
  std::size_t arena_bytes() const { return report_.plan.arena_bytes; }
  const StepPlanReport& report() const { return report_; }

  int max_threads() const { return max_threads_; }

  // The layers whose forward (and, in training, backward) reads constants made from the
  // weights (PreparedLayer::constant_bytes). A session makes them once and an executor at
  // the start of every training step; either hands each program its copy with
  // use_constants() before the program runs (not while it runs). A program given none
  // runs from the weights, with the same bits.
  struct ConstantsRequest {
    int node;
    const PreparedLayer* layer;
  };
  std::vector<ConstantsRequest> constants_requests() const;
  void use_constants(int node, const std::byte* constants);

  std::size_t kept_bytes() const { return report_.kept_plan.arena_bytes; }
  std::size_t batch_bytes() const { return report_.batch_bytes; }
  // Phases a micro-batch runs in; between two, every micro-batch's partial sums are
  // reduced (reduce()).
  int phase_count() const { return report_.phases; }

  // Runs one micro-batch's ops of `phase` on the calling thread in `workspace`, whose
  // arena holds arena_bytes() (Workspace::reserve). Results add up over the phases.
  StepResult run_phase(int phase, const StepRun& run, Workspace& workspace, StepMemoryViews memory) const;
  // A program without sync points in one call.
  StepResult run(const StepRun& run, Workspace& workspace) const;
  // The reduction that ends `phase`, once per step on one thread: micro-batch j ran
  // `programs[j]` (the full or the last size) with kept memory `kept[j]`. A training
  // forward reduction updates the layer's buffers (running statistics) in the store.
  // `profile` non-null: the reduction's time is added to its op there.
  static void reduce(int phase, std::span<const StepProgram* const> programs, std::span<std::byte* const> kept,
                     std::byte* batch, ThreadProfile* profile = nullptr);
  // Where the partial sums the reduction ending `phase` reads lie in a micro-batch's kept
  // memory (across MPI ranks they are exchanged before it: engine/executor.cpp).
  struct KeptRange {
    std::size_t offset = 0, bytes = 0;
  };
  KeptRange reduced_partials(int phase) const;
  // The ops by index, as a profile names them (StepRun::profile).
  std::vector<ProfiledOp> profiled_ops() const;

 private:
  struct Compiler;  // engine/step_compiler.cpp
  class Runner;     // engine/step_program.cpp
  std::size_t reduce_op(int phase) const;  // the index of the op that ends `phase`

  const Graph& graph_;
  const ParameterStore& parameters_;
  const dnnl::engine& engine_;
  std::int64_t micro_batch_;
  Mode mode_;
  bool computes_loss_;
  int max_threads_;

  std::vector<std::unique_ptr<PreparedLayer>> layers_;  // per node; null for a fused activation
  std::vector<const std::byte*> constants_;             // per node; null: none given
  std::vector<StepValue> values_;
  std::vector<StepTensor> tensors_;
  std::vector<StepOp> ops_;
  int loss_value_ = -1;  // the plain value the loss reads and the output is copied from
  StepPlanReport report_;
};

}  // namespace ember
