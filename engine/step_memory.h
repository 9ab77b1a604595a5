#pragma once
// The memory of a whole step, known before anything runs: every buffer an Executor, its
// ParameterStore and its Optimizer allocate to run a batch (`ember plan` prints it).
//
// Counted, each as the AlignedBuffer the engine allocates (zero-filled, so resident):
//   parameters       the store's value block
//   buffers          the store's buffer block (Layer::buffers(): BatchNorm's statistics)
//   gradients        lane 0, the store's gradient block (allocated in inference too),
//                    and in training the executor's lanes 1..L-1 (BatchLayout)
//   optimizer state  one block per optimizer_state_names() entry (adam: 2, sgd with
//                    momentum: 1, plain sgd: 0)
//   arenas           one per thread that runs micro-batches, each the largest plan among
//                    the micro-batch sizes the batch runs (full and last); oneDNN's
//                    scratchpads and workspaces are tensors of those plans.
//   kept             graphs with sync points (BatchNorm in training): the tensors that
//                    live across a sync point, for every micro-batch of the batch, and
//                    the step's batch memory (the reductions' results).
//   constants        training with two or more micro-batches (step_makes_constants):
//                    what layers make of the weights once per step (Linear's packed W^T
//                    and W), one copy per node and constants_key (step_constants in
//                    engine/step_program.h).
// Not counted: the caller's batch (input and targets; in `ember train` the trainer's one
// batch buffer, like the dataset, is the caller's data), and what is not a planned buffer:
// oneDNN primitive objects and their JIT code, ember's compiled step programs (op lists,
// memory descriptors), thread stacks and the allocator's own overhead. tests/memory
// measures the peak RSS of real training steps against total() to keep that part small.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "engine/executor.h"
#include "engine/optimizer.h"
#include "engine/parameters.h"

namespace ember {

struct StepMemoryOptions {
  std::int64_t batch = 1;
  ExecutorOptions executor;         // threads, micro-batch, gradient lanes, plan strategy
  Mode mode = Mode::training;
  std::string optimizer = "adam";   // training: sgd | adam | adamw; ignored in inference
  OptimizerOptions optimizer_options;  // sgd keeps a momentum buffer when momentum != 0
};

struct StepMemory {
  std::size_t block_bytes = 0;      // one parameter-shaped block (padding included)
  std::size_t parameters = 0;
  std::size_t buffers = 0;          // the buffer block (padding included)
  std::size_t gradients = 0;
  std::int64_t gradient_lanes = 0;  // blocks in `gradients`
  std::size_t optimizer_state = 0;
  int optimizer_blocks = 0;         // blocks in `optimizer_state`
  std::size_t arenas = 0;           // arena_count x arena_bytes
  int arena_count = 0;
  std::size_t arena_bytes = 0;      // one arena
  std::size_t kept = 0;             // kept_count x kept_bytes + batch_bytes
  std::int64_t kept_count = 0;      // micro-batches that keep memory (0 without sync points)
  std::size_t kept_bytes = 0;       // one micro-batch's, as allocated
  std::size_t batch_bytes = 0;
  std::size_t constants = 0;        // training: the step's constants, each aligned
  std::size_t total() const { return parameters + buffers + gradients + optimizer_state + arenas + kept + constants; }
};

// What one compiled micro-batch size needs (StepProgram::arena_bytes(), kept_bytes() and
// batch_bytes()).
struct ProgramFootprint {
  std::size_t arena_bytes = 0;  // per thread
  std::size_t kept_bytes = 0;   // per micro-batch
  std::size_t batch_bytes = 0;  // per step
};

// The arithmetic: `parameter_floats` is ParameterStore::total_floats(), `buffer_floats`
// its buffer_floats(); `programs` holds the footprints of the micro-batch sizes the batch
// runs (BatchLayout's full and last); `constant_bytes` the bytes of their step_constants,
// each aligned (counted when step_makes_constants).
StepMemory estimate_step_memory(std::int64_t parameter_floats, std::span<const ProgramFootprint> programs,
                                const StepMemoryOptions& options, std::int64_t buffer_floats = 0,
                                std::size_t constant_bytes = 0);

// Compiles the step programs the batch needs (on an engine of its own, freed on return)
// and counts. Throws ember::Error on bad options, as the Executor would.
StepMemory estimate_step_memory(const Graph& graph, const ParameterStore& parameters, const StepMemoryOptions& options);

// The memory limit (engine/memory_limit.h), checked in the order a model is built; `limit`
// is resolved (not default_memory_limit) and `what` names the model for the message.
// First, before the ParameterStore is allocated (`layout` is what it will be made from):
// its three blocks (values, gradients and buffers),
// and every value of the graph at `micro_batch` samples, each alone, so that compiling the
// step (whose sizes are sums of such tensors) cannot overflow either.
void check_model_memory(const Graph& graph, const ParameterLayout& layout, std::int64_t micro_batch, std::size_t limit,
                        std::string_view what);
// The same for a caller that holds only ParameterStore::total_floats() (the buffer block
// is taken from parameter_layout(graph)).
void check_model_memory(const Graph& graph, std::int64_t parameter_floats, std::int64_t micro_batch, std::size_t limit,
                        std::string_view what);
// Then, once the step is estimated, the whole of it before any arena is allocated.
void check_step_memory(const StepMemory& memory, std::size_t limit, std::string_view what);

}  // namespace ember
