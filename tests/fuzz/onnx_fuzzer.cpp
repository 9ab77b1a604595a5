// The ONNX importer (engine/onnx_import.h) on arbitrary bytes. What it accepts must be a
// model ember can keep and run: its spec rebuilds the same graph, and a session runs it
// (graphs too large to run quickly are skipped) on a batch of zeros and of ones.
#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/model_spec.h"
#include "engine/onnx_import.h"
#include "engine/session.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/small_model.h"

namespace {

constexpr std::size_t memory_limit = std::size_t{256} << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ember::fuzz::expect_only_ember_errors([&] {
    ember::TrainedModel model =
        ember::import_onnx_bytes(std::string_view(reinterpret_cast<const char*>(data), size), "input.onnx", memory_limit);
    const ember::Json spec = ember::spec_from_graph(*model.graph, "fuzz");
    const ember::Graph rebuilt = ember::graph_from_spec(spec, "the imported model's spec");
    if (rebuilt.nodes().size() != model.graph->nodes().size()) ember::fuzz::finding("the imported model's spec rebuilds another graph");
    if (!ember::fuzz::small(*model.graph, *model.parameters)) return;
    ember::SessionOptions options;
    options.max_batch = 2;
    options.memory_limit = memory_limit;
    const ember::InferenceSession session(std::move(model.graph), std::move(model.parameters), options);
    for (const float fill : {0.0f, 1.0f}) {
      const std::vector<float> in(static_cast<std::size_t>(2 * session.input_sample_elements()), fill);
      std::vector<float> out(static_cast<std::size_t>(2 * session.output_sample_elements()));
      session.run(in.data(), 2, out.data());
    }
  });
  return 0;
}
