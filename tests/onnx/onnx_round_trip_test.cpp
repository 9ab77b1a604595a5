// ember -> ONNX -> ember: every model comes back as the same layers with the same weights,
// so a session gives bitwise the same outputs (at opset 17, and at 13 where LayerNorm is
// decomposed). ember's multi-node exports (attention, GELU, attention pooling, tokens)
// are recognized as the layers they came from.
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include <onnx/onnx_pb.h>

#include "engine/onnx_export.h"
#include "engine/onnx_import.h"
#include "engine/session.h"
#include "onnx/onnx_test_models.h"
#include "support/expect_error.h"

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

// ember's multi-node layers are recognized only when nodes and constants are exactly what
// ember writes: a changed constant or attribute inside attention is not attention.
TEST(OnnxRoundTrip, AChangedEmberExportIsNotTakenForTheLayer) {
  const testing::TestModel m = testing::make_test_model("every-kind", Json::parse(testing::every_layer_kind_spec));
  onnx::ModelProto original;
  ASSERT_TRUE(original.ParseFromString(onnx_model_bytes(*m.graph, *m.parameters)));

  onnx::ModelProto scaled = original;
  for (onnx::TensorProto& t : *scaled.mutable_graph()->mutable_initializer()) {
    if (t.name() != "causal/scale") continue;
    const float scale = 0.25f;  // not 1/sqrt(head_dim) = 1/2
    t.set_raw_data(&scale, sizeof scale);
  }
  EXPECT_TRUE(testing::throws_error_with([&] { import_onnx_bytes(scaled.SerializeAsString(), "scaled.onnx"); },
                                         {"scaled.onnx", "causal/"}));

  onnx::ModelProto softmax_axis = original;
  for (onnx::NodeProto& node : *softmax_axis.mutable_graph()->mutable_node()) {
    if (node.name() == "plain/softmax") node.mutable_attribute(0)->set_i(-2);
  }
  EXPECT_TRUE(testing::throws_error_with([&] { import_onnx_bytes(softmax_axis.SerializeAsString(), "axis.onnx"); },
                                         {"axis.onnx", "plain/"}));
  // The unchanged file imports.
  EXPECT_NO_THROW(import_onnx_bytes(original.SerializeAsString(), "original.onnx"));
}

}  // namespace
}  // namespace ember
