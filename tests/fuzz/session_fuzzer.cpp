// A JSON model spec all the way to inference through the C API: the graph and freshly
// initialized weights are saved as a checkpoint (as `ember train --save` would), which
// ember_session_create loads and ember_session_run runs on a batch of zeros and of ones.
// Reaches the executor and the kernels with graphs no built-in model has. Graphs too large
// to run quickly are skipped.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/ember.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "engine/parameters.h"
#include "engine/training_state.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/small_model.h"

namespace {

void check(bool condition, const char* what) {
  if (!condition) ember::fuzz::finding(what);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string spec_path = ember::fuzz::write_input("model.json", data, size);
  std::string checkpoint;
  ember::fuzz::expect_only_ember_errors([&] {
    const ember::Graph graph = ember::graph_from_spec(ember::load_model_spec(spec_path), spec_path);
    ember::ParameterStore parameters(graph);
    if (!ember::fuzz::small(graph, parameters)) return;
    parameters.initialize(1);
    const auto optimizer = ember::make_optimizer("sgd", ember::OptimizerOptions{}, parameters);
    ember::TrainingState state;
    state.model_spec = ember::spec_from_graph(graph, "fuzz");
    state.optimizer = {{"name", "sgd"}, {"learning_rate", 0.1}};
    state.run = ember::Json::object();
    const std::string path = ember::fuzz::temporary_path("checkpoint.safetensors");
    ember::save_training_state(path, state, parameters, *optimizer);
    checkpoint = path;
  });
  if (checkpoint.empty()) return 0;

  char error[256];
  ember_session* session = ember_session_create(checkpoint.c_str(), 2, error, sizeof error);
  if (!session) {
    // A refusal of a checkpoint ember itself wrote must at least explain itself.
    check(std::strlen(ember_last_error()) > 0, "ember_session_create failed with an empty ember_last_error()");
    return 0;
  }
  const std::int64_t input = ember_session_input_elements(session);
  const std::int64_t output = ember_session_output_elements(session);
  for (const float fill : {0.0f, 1.0f}) {
    const std::vector<float> in(static_cast<std::size_t>(2 * input), fill);
    std::vector<float> out(static_cast<std::size_t>(2 * output) + 1, -7.0f);
    const int status = ember_session_run(session, in.data(), in.size(), 2, out.data(), out.size() - 1);
    check(status == 0 || std::strlen(ember_last_error()) > 0, "ember_session_run failed with an empty ember_last_error()");
    check(out.back() == -7.0f, "ember_session_run wrote past the output it was given");
  }
  ember_session_destroy(session);
  return 0;
}
