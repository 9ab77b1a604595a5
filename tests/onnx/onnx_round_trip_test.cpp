// ember -> ONNX -> ember: every model comes back as the same layers with the same weights,
// so a session gives bitwise the same outputs (at opset 17, and at 13 where LayerNorm is
// decomposed). ember's multi-node exports (attention, GELU, attention pooling, tokens)
// are recognized as the layers they came from.
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "engine/onnx_export.h"
#include "engine/onnx_import.h"
#include "engine/session.h"
#include "onnx/onnx_test_models.h"

namespace ember {
namespace {

std::vector<float> run(std::unique_ptr<Graph> graph, std::unique_ptr<ParameterStore> parameters, const std::vector<float>& input,
                       std::int64_t batch) {
  SessionOptions options;
  options.max_batch = batch;
  options.micro_batch = 4;
  InferenceSession session(std::move(graph), std::move(parameters), options);
  std::vector<float> output(static_cast<std::size_t>(batch * session.output_sample_elements()));
  session.run(input.data(), batch, output.data());
  return output;
}

std::map<std::string, int> kind_counts(const Graph& graph) {
  std::map<std::string, int> counts;
  for (const Node& node : graph.nodes()) {
    if (node.layer->kind() != "dropout") ++counts[std::string(node.layer->kind())];  // dropout is an Identity
  }
  return counts;
}

TEST(OnnxRoundTrip, EveryModelComesBackBitwiseAtOpsets13And17) {
  const std::int64_t batch = 5;
  for (int opset : {13, 17}) {
    for (testing::TestModel& m : testing::all_test_models()) {
      SCOPED_TRACE(m.name + " opset " + std::to_string(opset));
      OnnxExportOptions options;
      options.opset = opset;
      const std::string bytes = onnx_model_bytes(*m.graph, *m.parameters, options);
      TrainedModel imported = import_onnx_bytes(bytes, m.name + ".onnx");
      EXPECT_EQ(kind_counts(*imported.graph), kind_counts(*m.graph));
      EXPECT_EQ(imported.parameters->parameter_count(), m.parameters->parameter_count());
      EXPECT_EQ(imported.graph->input_sample_shape(), m.graph->input_sample_shape());
      const std::vector<float> input = testing::test_input(*m.graph, batch);
      const std::vector<float> expected = run(std::move(m.graph), std::move(m.parameters), input, batch);
      const std::vector<float> found = run(std::move(imported.graph), std::move(imported.parameters), input, batch);
      ASSERT_EQ(found.size(), expected.size());
      EXPECT_EQ(std::memcmp(found.data(), expected.data(), found.size() * sizeof(float)), 0) << "not bitwise equal";
    }
  }
}

}  // namespace
}  // namespace ember
