#include "engine/step_memory.h"

#include <algorithm>

#include "engine/error.h"
#include "engine/step_program.h"

namespace ember {

StepMemory estimate_step_memory(std::int64_t parameter_floats, std::span<const ProgramFootprint> programs,
                                const StepMemoryOptions& options) {
  check_executor_options(options.executor);
  if (parameter_floats < 0) throw Error("step memory: parameter count must be >= 0, found " + std::to_string(parameter_floats));
  if (programs.empty()) throw Error("step memory: no step program given");
  const BatchLayout layout = batch_layout(options.executor, options.batch, options.mode);
  const bool training = options.mode == Mode::training;

  StepMemory memory;
  memory.block_bytes = align_up(static_cast<std::size_t>(parameter_floats) * sizeof(float));
  memory.parameters = memory.block_bytes;
  memory.gradient_lanes = training ? layout.gradient_lanes : 1;  // the store always holds lane 0
  memory.gradients = memory.block_bytes * static_cast<std::size_t>(memory.gradient_lanes);
  memory.optimizer_blocks =
      training ? static_cast<int>(optimizer_state_names(options.optimizer, options.optimizer_options).size()) : 0;
  memory.optimizer_state = memory.block_bytes * static_cast<std::size_t>(memory.optimizer_blocks);
  for (const ProgramFootprint& program : programs) {
    memory.arena_bytes = std::max(memory.arena_bytes, align_up(program.arena_bytes));
    memory.flag_bytes = std::max(memory.flag_bytes, align_up(program.flag_bytes));
  }
  memory.arena_count = layout.threads;
  memory.arenas = static_cast<std::size_t>(memory.arena_count) * (memory.arena_bytes + memory.flag_bytes);
  return memory;
}

StepMemory estimate_step_memory(const Graph& graph, const ParameterStore& parameters, const StepMemoryOptions& options) {
  check_executor_options(options.executor);
  const BatchLayout layout = batch_layout(options.executor, options.batch, options.mode);
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  std::vector<ProgramFootprint> programs;
  for (const std::int64_t size : {layout.full_size, layout.last_size}) {
    if (size == layout.last_size && size == layout.full_size && !programs.empty()) break;
    const StepProgram program(graph, parameters, size, options.mode, engine, options.executor.plan_strategy);
    programs.push_back({program.arena_bytes(), program.flag_bytes()});
  }
  return estimate_step_memory(parameters.total_floats(), programs, options);
}

}  // namespace ember
