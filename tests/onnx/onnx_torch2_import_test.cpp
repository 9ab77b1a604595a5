// ONNX import of a current PyTorch's exports: tests/onnx/make_torch_onnx.py run with torch
// 2.15 (TorchScript exporter, committed as tests/data/onnx/torch2_*). torch 2 writes the
// attention differently from torch 1.13 (onnx_attention_import_test.cpp): the in-projection
// Gathered per third from (T, N, 3, E), the 1/D^(1/4) scales computed from the shapes, the
// out-projection a Gemm over (T * N, E). Every model runs through the C API with PyTorch's
// outputs; a changed, batch-dependent or misplaced scale or third is an error naming the node.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>

#include <onnx/onnx_pb.h>

#include "engine/ember.h"
#include "engine/onnx_import.h"
#include "engine/safetensors.h"
#include "engine/session.h"
#include "support/expect_error.h"
#include "torch_golden_checks.h"

namespace ember {
namespace {

using testing::load_model;
using testing::node_named;
using testing::read_bytes;
using testing::throws_error_with;

const std::string& data_dir = testing::torch_onnx_dir;

using testing::TorchGoldenCase;

const TorchGoldenCase torch2_cases[] = {
    {"torch2_encoder_relu_post", {3, 5, 6}, {3, 3}, 2},
    {"torch2_encoder_relu_post_opset14", {3, 5, 6}, {3, 3}, 2},  // LayerNorm decomposed
    {"torch2_encoder_gelu_pre", {3, 5, 6}, {3, 3}, 2},
    {"torch2_encoder_gelu_pre_opset14", {3, 5, 6}, {3, 3}, 2},
    {"torch2_mha_batch_first", {3, 5, 16}, {3, 5, 16}, 1},
    {"torch2_mha_seq_first", {3, 5, 16}, {3, 5, 16}, 1},
    {"torch2_mha_one_head", {3, 5, 16}, {3, 5, 16}, 1, 1},
    {"torch2_mha_no_bias", {3, 5, 16}, {3, 5, 16}, 1, 4, false},
    {"torch2_mha_causal", {3, 5, 16}, {3, 5, 16}, 1, 4, true, true},
    {"torch2_lenet", {3, 1, 32, 32}, {3, 10}},
    {"torch2_resnet8", {3, 1, 28, 28}, {3, 10}},
    {"torch2_gelu_mlp", {3, 16}, {3, 5}},
    {"torch2_gelu_mlp_opset13", {3, 16}, {3, 5}},
};

const SafetensorsFile& goldens() {
  static const SafetensorsFile file = SafetensorsFile::read(data_dir + "torch2_goldens.safetensors");
  return file;
}

TEST(OnnxTorch2Import, Torch2ExportsRunThroughTheCApiWithPyTorchsOutputs) {
  for (const TorchGoldenCase& c : torch2_cases) testing::expect_c_api_gives_pytorchs_outputs(c, goldens());
}

TEST(OnnxTorch2Import, AnyBatchSizeGivesTheSameRows) {
  for (const TorchGoldenCase& c : torch2_cases) testing::expect_one_sample_gives_its_row(c, goldens());
}

TEST(OnnxTorch2Import, EachAttentionBecomesOneMultiHeadAttentionLayer) {
  for (const TorchGoldenCase& c : torch2_cases) testing::expect_attention_layers(c);
}

// --- Graphs that are not exactly attention ------------------------------------------------

void add_integers(onnx::ModelProto& model, const std::string& name, std::vector<std::int64_t> values) {
  onnx::TensorProto* t = model.mutable_graph()->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::INT64);
  t->add_dims(static_cast<std::int64_t>(values.size()));
  for (const std::int64_t v : values) t->add_int64_data(v);
}
void import_mutated(const onnx::ModelProto& model) { import_onnx_bytes(model.SerializeAsString(), "mutated.onnx"); }

// In torch2_mha_batch_first.onnx (torch 2.15's names): the head dim D = 4 is Sliced from the
// queries' shape (Slice_3), Cast to float (Cast_2), and Div_1 divides Constant_30 (1.0) by its
// Sqrt; the Sqrt of that scales the queries in Mul_1 and the transposed keys in Mul_2;
// MatMul_1 makes the scores. Gather_3/4/5 take the query, key and value thirds.
TEST(OnnxTorch2Import, AChangedScaleIsAnErrorNamingTheScoresNode) {
  onnx::ModelProto model = load_model("torch2_mha_batch_first");
  onnx::TensorProto* one = node_named(model, "/mha/Constant_30")->mutable_attribute(0)->mutable_t();
  one->clear_raw_data();
  one->add_float_data(2.0f);  // 2 / sqrt(4) = 1 on the scores
  EXPECT_TRUE(throws_error_with([&] { import_mutated(model); },
                                {"mutated.onnx: node '/mha/MatMul_1' (MatMul)", "scaled by 1,", "1/sqrt(4) = 0.5;"}));
}

// The scale from the batch dimension instead of the head dim: not a constant of the model.
TEST(OnnxTorch2Import, AScaleThatDependsOnTheBatchIsAnError) {
  onnx::ModelProto model = load_model("torch2_mha_batch_first");
  add_integers(model, "first", {0});
  add_integers(model, "second", {1});
  node_named(model, "/mha/Slice_3")->set_input(1, "first");
  node_named(model, "/mha/Slice_3")->set_input(2, "second");
  EXPECT_TRUE(throws_error_with([&] { import_mutated(model); },
                                {"mutated.onnx: node '/mha/Mul_1' (Mul)", "query path", "batch-independent shapes"}));
}

// The query path Gathers the keys' third (index 1): the right shapes, the wrong tensor.
TEST(OnnxTorch2Import, TheWrongThirdIsAnError) {
  onnx::ModelProto model = load_model("torch2_mha_batch_first");
  onnx::NodeProto* query = node_named(model, "/mha/Gather_3");
  query->set_input(1, node_named(model, "/mha/Gather_4")->input(1));
  EXPECT_TRUE(throws_error_with([&] { import_mutated(model); }, {"mutated.onnx: node '/mha/MatMul_1' (MatMul)", "expected queries"}));
  // A Gather along the batch instead of the thirds: the queries' shape, and so the head dim
  // their scale is computed from, is unknown.
  onnx::ModelProto batch = load_model("torch2_mha_batch_first");
  onnx::AttributeProto* axis = node_named(batch, "/mha/Gather_3")->mutable_attribute(0);
  ASSERT_EQ(axis->name(), "axis");
  axis->set_i(1);
  EXPECT_TRUE(throws_error_with([&] { import_mutated(batch); }, {"node '/mha/Mul_1' (Mul)", "batch-independent shapes"}));
}

// Each node with an input dropped, an input swapped for another tensor, or an integer
// constant changed: an ember::Error, or a model that computes what the variant says (shape
// arithmetic nothing reads was hit, or the out-projection's Gemm lost its bias), never a crash.
TEST(OnnxTorch2Import, MalformedVariantsAreErrorsNotCrashes) {
  const onnx::ModelProto original = load_model("torch2_mha_batch_first");
  const std::function<void(onnx::NodeProto&)> mutations[] = {
      [](onnx::NodeProto& n) {
        if (n.input_size() > 0) n.mutable_input()->RemoveLast();
      },
      [](onnx::NodeProto& n) {
        if (n.input_size() > 0) n.set_input(0, "/mha/Shape_output_0");
      },
      [](onnx::NodeProto& n) {
        if (n.input_size() > 1) n.set_input(1, "input");
      },
      [](onnx::NodeProto& n) {
        for (onnx::AttributeProto& a : *n.mutable_attribute()) {
          if (a.has_t() && a.t().data_type() == onnx::TensorProto::INT64) {
            const std::int64_t count = a.t().dims_size() ? a.t().dims(0) : 1;
            a.mutable_t()->clear_raw_data();
            a.mutable_t()->clear_int64_data();
            for (std::int64_t d = 0; d < std::max<std::int64_t>(1, count); ++d) a.mutable_t()->add_int64_data(-1000003);
          }
          if (a.ints_size() > 0) a.set_ints(0, 7);
        }
      },
  };
  const std::span<const float> input = goldens().floats("torch2_mha_batch_first.input", std::vector<std::int64_t>{3, 5, 16});
  const std::span<const float> expected = goldens().floats("torch2_mha_batch_first.output", std::vector<std::int64_t>{3, 5, 16});
  std::vector<float> out_bias(16);
  for (const onnx::TensorProto& t : original.graph().initializer()) {
    if (t.name() == "mha.out_proj.bias") std::memcpy(out_bias.data(), t.raw_data().data(), std::min<std::size_t>(t.raw_data().size(), 64));
  }
  int errors = 0, variants = 0;
  for (int i = 0; i < original.graph().node_size(); ++i) {
    for (std::size_t m = 0; m < std::size(mutations); ++m) {
      const bool no_out_bias = m == 0 && original.graph().node(i).op_type() == "Gemm";
      onnx::ModelProto model = original;
      mutations[m](*model.mutable_graph()->mutable_node(i));
      if (model.SerializeAsString() == original.SerializeAsString()) continue;
      ++variants;
      try {
        TrainedModel imported = import_onnx_bytes(model.SerializeAsString(), "m.onnx");
        SessionOptions options;
        options.max_batch = 3;
        InferenceSession session(std::move(imported.graph), std::move(imported.parameters), options);
        std::vector<float> output(expected.size());
        session.run(input.data(), 3, output.data());
        for (std::size_t o = 0; o < output.size(); ++o) {
          const float want = expected[o] - (no_out_bias ? out_bias[o % 16] : 0.0f);
          ASSERT_NEAR(output[o], want, 1e-4f) << original.graph().node(i).name() << " mutation " << m;
        }
      } catch (const Error&) {
        ++errors;
      }
    }
  }
  std::printf("%d of %d variants refused\n", errors, variants);
  EXPECT_GT(errors, variants / 2);
}

}  // namespace
}  // namespace ember
