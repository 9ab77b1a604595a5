#pragma once
// The checks every ONNX model exported by PyTorch gets (tests/onnx/make_torch_onnx.py, one
// goldens file per torch version, each holding "<name>.input" and "<name>.output" at
// batch 3): served through the C API with PyTorch's outputs, one sample alone giving its
// row of the batch, and each attention imported as one multi_head_attention layer; and
// the helpers that load an export for a test to change.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "engine/ember.h"
#include "engine/model_spec.h"
#include "engine/onnx_import.h"
#include "engine/safetensors.h"
#include "engine/session.h"

namespace ember::testing {

inline const std::string torch_onnx_dir = std::string(EMBER_TEST_DATA_DIR) + "/onnx/";

inline std::string read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}
// A committed export, parsed, for tests to change.
inline onnx::ModelProto load_model(const std::string& name) {
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(read_bytes(torch_onnx_dir + name + ".onnx")));
  return model;
}
inline onnx::NodeProto* node_named(onnx::ModelProto& model, const std::string& name) {
  for (onnx::NodeProto& node : *model.mutable_graph()->mutable_node()) {
    if (node.name() == name) return &node;
  }
  ADD_FAILURE() << "no node " << name;
  return model.mutable_graph()->mutable_node(0);
}

struct TorchGoldenCase {
  std::string name;
  std::vector<std::int64_t> input_shape;  // batch 3
  std::vector<std::int64_t> output_shape;
  int attentions = 0;  // 2: an encoder of two layers; 1: a bare nn.MultiheadAttention
  int heads = 4;
  bool bias = true;
  bool causal = false;  // attn_mask: the causal mask
};

// Through the C API, PyTorch's outputs within 1e-4.
inline void expect_c_api_gives_pytorchs_outputs(const TorchGoldenCase& c, const SafetensorsFile& goldens) {
  SCOPED_TRACE(c.name);
  const std::span<const float> input = goldens.floats(c.name + ".input", c.input_shape);
  const std::span<const float> expected = goldens.floats(c.name + ".output", c.output_shape);
  char error[512] = "";
  ember_session* session = ember_session_create((torch_onnx_dir + c.name + ".onnx").c_str(), 8, error, sizeof error);
  ASSERT_NE(session, nullptr) << error;
  std::vector<float> output(expected.size());
  ASSERT_EQ(ember_session_run(session, input.data(), input.size(), 3, output.data(), output.size()), 0) << ember_last_error();
  float worst = 0.0f;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(output[i], expected[i], 1e-4f) << "output " << i;
    worst = std::max(worst, std::fabs(output[i] - expected[i]));
  }
  std::printf("%s: max |ember - torch| = %.3g\n", c.name.c_str(), static_cast<double>(worst));
  ember_session_destroy(session);
}

// The batch is symbolic in the file: one sample alone gives its row of the batch of 3.
inline void expect_one_sample_gives_its_row(const TorchGoldenCase& c, const SafetensorsFile& goldens) {
  SCOPED_TRACE(c.name);
  const std::span<const float> input = goldens.floats(c.name + ".input", c.input_shape);
  const std::span<const float> expected = goldens.floats(c.name + ".output", c.output_shape);
  const std::size_t in_row = input.size() / 3, out_row = expected.size() / 3;
  SessionOptions options;
  options.max_batch = 3;
  const auto session = InferenceSession::open(torch_onnx_dir + c.name + ".onnx", options);
  std::vector<float> output(out_row);
  session->run(input.data() + 2 * in_row, 1, output.data());
  for (std::size_t i = 0; i < out_row; ++i) EXPECT_NEAR(output[i], expected[2 * out_row + i], 1e-4f) << "output " << i;
}

// Each attention is one multi_head_attention (d_model 16) with the case's options; an
// encoder keeps its four LayerNorms; the import rebuilds from its spec (ember import).
inline void expect_attention_layers(const TorchGoldenCase& c) {
  SCOPED_TRACE(c.name);
  const TrainedModel model = import_onnx(torch_onnx_dir + c.name + ".onnx");
  int attentions = 0, layer_norms = 0;
  for (const Node& node : model.graph->nodes()) {
    if (node.layer->kind() == "multi_head_attention") {
      ++attentions;
      EXPECT_EQ(node.layer->options()["heads"], c.heads);
      EXPECT_EQ(node.layer->options()["d_model"], 16);
      EXPECT_EQ(node.layer->options()["bias"], c.bias);
      EXPECT_EQ(node.layer->options()["causal"], c.causal);
    }
    layer_norms += node.layer->kind() == "layer_norm";
  }
  EXPECT_EQ(attentions, c.attentions);
  const Graph rebuilt = graph_from_spec(spec_from_graph(*model.graph, c.name), c.name);
  EXPECT_EQ(rebuilt.nodes().size(), model.graph->nodes().size());
  if (c.attentions == 0) return;
  const bool encoder = c.attentions == 2;
  EXPECT_EQ(layer_norms, encoder ? 4 : 0);
  // Linear, 2 x (attention, add, norm, linear, activation, linear, add, norm), mean, Linear.
  EXPECT_EQ(model.graph->nodes().size(), encoder ? 19u : 1u);
}

}  // namespace ember::testing
