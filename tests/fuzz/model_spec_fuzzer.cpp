// A JSON model spec (engine/model_spec.h) on arbitrary text: parsed as `ember plan --model
// FILE` would, built into a graph and its parameters, rebuilt from spec_from_graph (which
// must reproduce the spec exactly), and, for small graphs, the step's memory estimated
// (which compiles its step programs) for inference and training.
#include <cstdint>

#include "engine/model_spec.h"
#include "engine/parameters.h"
#include "engine/step_memory.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

// Compiling a step program creates oneDNN primitives: kept for graphs that run quickly.
constexpr std::int64_t max_estimated_value_elements = std::int64_t{1} << 16;
constexpr std::int64_t max_estimated_parameter_floats = std::int64_t{1} << 20;

bool cheap_to_compile(const ember::Graph& graph, const ember::ParameterStore& parameters) {
  if (parameters.total_floats() > max_estimated_parameter_floats) return false;
  std::int64_t elements = 0;
  for (ember::ValueId v = 0; v < graph.value_count(); ++v) {
    const std::int64_t value = graph.value_shape(v).elements();
    if (value > max_estimated_value_elements - elements) return false;
    elements += value;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = ember::fuzz::write_input("model.json", data, size);
  ember::fuzz::expect_only_ember_errors([&] {
    const ember::Json spec = ember::load_model_spec(path);
    const ember::Graph graph = ember::graph_from_spec(spec, path);
    const ember::ParameterStore parameters(graph);
    const ember::Json written = ember::spec_from_graph(graph, "fuzz");
    if (ember::spec_from_graph(ember::graph_from_spec(written, "spec_from_graph"), "fuzz") != written) {
      ember::fuzz::finding("graph_from_spec(spec_from_graph(g)) does not rebuild g");
    }
    if (!cheap_to_compile(graph, parameters)) return;
    for (const ember::Mode mode : {ember::Mode::inference, ember::Mode::training}) {
      ember::fuzz::expect_only_ember_errors([&] {
        ember::StepMemoryOptions options;
        options.batch = 3;
        options.executor.micro_batch = 2;
        options.mode = mode;
        const ember::StepMemory memory = ember::estimate_step_memory(graph, parameters, options);
        if (memory.total() < memory.parameters) ember::fuzz::finding("the step's memory total wrapped around");
      });
    }
  });
  return 0;
}
