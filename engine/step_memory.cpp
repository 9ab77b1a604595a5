#include "engine/step_memory.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "engine/checked.h"
#include "engine/error.h"
#include "engine/memory_limit.h"
#include "engine/step_program.h"
#include "engine/training_graph.h"

#include <oneapi/dnnl/dnnl.hpp>

namespace ember {

StepMemory estimate_step_memory(std::int64_t parameter_floats, std::span<const ProgramFootprint> programs,
                                const StepMemoryOptions& options, std::int64_t buffer_floats, std::size_t constant_bytes) {
  check_executor_options(options.executor);
  if (parameter_floats < 0) throw Error("step memory: parameter count must be >= 0, found " + std::to_string(parameter_floats));
  if (buffer_floats < 0) throw Error("step memory: buffer count must be >= 0, found " + std::to_string(buffer_floats));
  if (programs.empty()) throw Error("step memory: no step program given");
  const BatchLayout layout = batch_layout(options.executor, options.batch, options.mode);
  const bool training = options.mode == Mode::training;

  StepMemory memory;
  memory.block_bytes = checked_align_up(checked_float_bytes(parameter_floats, "parameter block"), tensor_alignment, "parameter block");
  memory.parameters = memory.block_bytes;
  memory.buffers = checked_align_up(checked_float_bytes(buffer_floats, "buffer block"), tensor_alignment, "buffer block");
  memory.gradient_lanes = training ? layout.gradient_lanes : 1;  // the store always holds lane 0
  memory.gradients = checked_multiply(memory.block_bytes, static_cast<std::size_t>(memory.gradient_lanes), "gradient lanes");
  memory.optimizer_blocks =
      training ? static_cast<int>(optimizer_state_names(options.optimizer, options.optimizer_options).size()) : 0;
  memory.optimizer_state = checked_multiply(memory.block_bytes, static_cast<std::size_t>(memory.optimizer_blocks), "optimizer state");
  for (const ProgramFootprint& program : programs) {
    memory.arena_bytes = std::max(memory.arena_bytes, align_up(program.arena_bytes));
    memory.kept_bytes = std::max(memory.kept_bytes, align_up(program.kept_bytes));
    memory.batch_bytes = std::max(memory.batch_bytes, align_up(program.batch_bytes));
  }
  memory.arena_count = layout.threads;
  memory.arenas = checked_multiply(static_cast<std::size_t>(memory.arena_count), memory.arena_bytes, "arenas");
  // The executor keeps, per micro-batch, the largest kept plan among the sizes it runs.
  memory.kept_count = memory.kept_bytes > 0 ? layout.micro_batches : 0;
  memory.kept = checked_add(checked_multiply(static_cast<std::size_t>(memory.kept_count), memory.kept_bytes, "kept memory"),
                            memory.batch_bytes, "kept memory");
  memory.constants = step_makes_constants(layout) ? constant_bytes : 0;
  return memory;
}

StepMemory estimate_step_memory(const Graph& graph, const ParameterStore& parameters, const StepMemoryOptions& options) {
  check_executor_options(options.executor);
  const BatchLayout layout = batch_layout(options.executor, options.batch, options.mode);
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  std::vector<ProgramFootprint> programs;
  std::vector<std::unique_ptr<StepProgram>> compiled;
  // The graph the executor runs in this mode.
  const std::unique_ptr<Graph> rewritten = options.mode == Mode::training ? relu_after_max_pools(graph) : nullptr;
  const Graph& runs = rewritten != nullptr ? *rewritten : graph;
  for (const std::int64_t size : {layout.full_size, layout.last_size}) {
    if (size == layout.last_size && size == layout.full_size && !programs.empty()) break;
    compiled.push_back(std::make_unique<StepProgram>(runs, parameters, size, options.mode, engine,
                                                     options.executor.plan_strategy));
    const StepProgram& program = *compiled.back();
    programs.push_back({program.arena_bytes(), program.kept_bytes(), program.batch_bytes()});
  }
  std::vector<const StepProgram*> views;
  for (const auto& program : compiled) views.push_back(program.get());
  std::size_t constant_bytes = 0;
  for (const StepConstants& c : step_constants(views)) {
    constant_bytes = checked_add(constant_bytes, align_up(c.bytes), "step constants");
  }
  return estimate_step_memory(parameters.total_floats(), programs, options, parameters.buffer_floats(), constant_bytes);
}

namespace {

void check_blocks(const Graph& graph, std::int64_t parameter_floats, std::int64_t buffer_floats, std::int64_t micro_batch,
                  std::size_t limit, std::string_view what) {
  std::size_t blocks = checked_multiply<std::size_t>(2, checked_float_bytes(parameter_floats, "parameter block"), "parameter blocks");
  std::string breakdown = "a block of values and one of gradients";
  if (buffer_floats > 0) {
    blocks = checked_add(blocks, checked_float_bytes(buffer_floats, "buffer block"), "parameter and buffer blocks");
    breakdown += ", and one of buffers";
  }
  check_memory_limit(blocks, limit, std::string(what) + ": the parameter memory", breakdown);
  for (ValueId value = 0; value < graph.value_count(); ++value) {
    const Shape shape = graph.value_shape(value).with_batch(micro_batch);
    const std::string name = value == graph.input() ? std::string("the input") : "layer '" + graph.nodes()[static_cast<std::size_t>(graph.producer(value))].name + "'";
    const std::string tensor = std::string(what) + ": the output of " + name + " " + shape.str();
    check_memory_limit(checked_float_bytes(shape.elements(), tensor), limit, tensor);
  }
}

}  // namespace

void check_model_memory(const Graph& graph, const ParameterLayout& layout, std::int64_t micro_batch, std::size_t limit,
                        std::string_view what) {
  check_blocks(graph, layout.total_floats, layout.buffer_floats, micro_batch, limit, what);
}

void check_model_memory(const Graph& graph, std::int64_t parameter_floats, std::int64_t micro_batch, std::size_t limit,
                        std::string_view what) {
  check_blocks(graph, parameter_floats, parameter_layout(graph).buffer_floats, micro_batch, limit, what);
}

void check_step_memory(const StepMemory& memory, std::size_t limit, std::string_view what) {
  check_memory_limit(memory.total(), limit, std::string(what) + ": the step",
                     "parameters " + format_bytes(memory.parameters) +
                         (memory.buffers > 0 ? ", buffers " + format_bytes(memory.buffers) : std::string()) +
                         ", gradients " + format_bytes(memory.gradients) +
                         ", optimizer state " + format_bytes(memory.optimizer_state) + ", " +
                         std::to_string(memory.arena_count) + " arena(s) " + format_bytes(memory.arenas) +
                         (memory.constants > 0 ? ", prepared weights " + format_bytes(memory.constants) : std::string()));
}

}  // namespace ember
