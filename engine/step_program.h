#pragma once
// A StepProgram is one step of a graph (training: forward, loss, backward; or inference)
// compiled for one micro-batch size: every layer prepared (oneDNN primitives created),
// the reorders between oneDNN's blocked layouts and plain consumers inserted, and every
// tensor of the step given an offset in one arena by the memory plan.
//
// It is immutable once built: any number of threads may run it at once, each with its
// own arena, stream and flag buffer. That is what the executor's batch parallelism and
// the inference session's concurrent calls both rely on.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/graph.h"
#include "engine/loss.h"
#include "engine/memory_plan.h"
#include "engine/parameters.h"

namespace ember {

struct Anomaly;  // engine/anomaly.h

struct StepResult {
  double loss_sum = 0.0;       // sum over samples of the per-sample loss
  std::int64_t correct = 0;    // top-1 hits (classification losses)
  std::int64_t samples = 0;
  double mean_loss() const { return samples > 0 ? loss_sum / static_cast<double>(samples) : 0.0; }
};

// One step's tensors and their placement, as data (for `ember plan` and tests).
struct StepPlanReport {
  std::vector<TensorLifetime> tensors;
  std::vector<std::string> shapes;  // per tensor: "(16, 32, 28, 28)", "+ blocked" if oneDNN's layout pads; "-" for raw bytes
  MemoryPlan plan;
  std::vector<std::string> fused;   // "conv1+relu1": ReLUs applied by the layer before them (inference)
};

// What one run of a program reads and writes besides its arena.
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
};

class StepProgram {
 public:
  StepProgram(const Graph& graph, const ParameterStore& parameters, std::int64_t micro_batch, Mode mode,
              const dnnl::engine& engine, PlanStrategy strategy);
  ~StepProgram();
  StepProgram(const StepProgram&) = delete;
  StepProgram& operator=(const StepProgram&) = delete;

  std::int64_t micro_batch() const { return micro_batch_; }
  Mode mode() const { return mode_; }
  std::size_t arena_bytes() const { return report_.plan.arena_bytes; }
  // Bytes of the per-run flag buffer run() needs.
  std::size_t flag_bytes() const { return slots_.size(); }
  const StepPlanReport& report() const { return report_; }

  // Runs one micro-batch on the calling thread. `arena` holds arena_bytes(), 64-byte
  // aligned; `flags` holds flag_bytes().
  StepResult run(const StepRun& run, std::byte* arena, std::span<char> flags, dnnl::stream& stream) const;

 private:
  enum class OpKind { forward, reorder_to_plain, loss, backward, reorder_grad_to_blocked };
  struct Op {
    OpKind kind;
    int index;  // node for forward/backward, slot for reorders and the loss
  };

  const Graph& graph_;
  const ParameterStore& parameters_;
  const dnnl::engine& engine_;
  std::int64_t micro_batch_;
  Mode mode_;

  // A slot is a tensor of the step seen by layers: a graph value, or a plain copy of a
  // value that stays in a blocked oneDNN layout but is read by a layer that needs plain
  // row-major data (or by the loss).
  std::vector<std::unique_ptr<PreparedLayer>> layers_;  // per node
  std::vector<ValueInfo> slots_;
  std::vector<int> copy_of_;                    // per slot: the blocked slot it copies, or -1
  std::vector<int> plain_copy_;                 // per slot: its plain copy, or -1
  std::vector<dnnl::reorder> to_plain_;         // per copy slot
  std::vector<dnnl::reorder> grad_to_blocked_;  // per copy slot
  std::vector<dnnl::memory::desc> plain_desc_;  // per copy slot
  std::vector<std::vector<int>> input_slots_;   // per node
  std::vector<int> output_slot_;                // per node
  int loss_slot_ = -1;
  std::vector<char> requires_grad_;             // per slot
  std::vector<char> runs_backward_;             // per node
  std::vector<char> elided_;                    // per node: a ReLU fused into its producer
  std::vector<int> gradient_writers_;           // per slot

  std::vector<std::size_t> value_offset_, grad_offset_;                 // per slot
  std::vector<std::vector<std::size_t>> partial_offsets_;               // per slot: its partial gradient buffers
  std::vector<std::size_t> saved_offset_, forward_scratch_offset_, backward_scratch_offset_;  // per node
  std::vector<Op> ops_;
  StepPlanReport report_;
};

}  // namespace ember
