// ONNX import of PyTorch's attention: nn.TransformerEncoder classifiers and a bare
// nn.MultiheadAttention exported by torch.onnx.export (tests/onnx/make_torch_onnx.py,
// committed in tests/data/onnx) run through the C API with PyTorch's outputs, at any batch
// size, and fine-tune; graphs that are not exactly unmasked attention with the
// 1/sqrt(head dim) scale are errors naming the node; malformed variants never crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>

#include <onnx/onnx_pb.h>

#include "engine/ember.h"
#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/onnx_import.h"
#include "engine/optimizer.h"
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

const TorchGoldenCase attention_cases[] = {
    {"encoder_relu_post", {3, 5, 6}, {3, 3}, 2},
    {"encoder_relu_post_opset13", {3, 5, 6}, {3, 3}, 2},  // LayerNorm decomposed
    {"encoder_gelu_pre", {3, 5, 6}, {3, 3}, 2},
    {"encoder_gelu_pre_opset13", {3, 5, 6}, {3, 3}, 2},
    {"mha_batch_first", {3, 5, 16}, {3, 5, 16}, 1},
    {"mha_seq_first", {3, 5, 16}, {3, 5, 16}, 1},  // transposed to (T, N, E) and back
    {"mha_one_head", {3, 5, 16}, {3, 5, 16}, 1, 1},
    {"mha_no_bias", {3, 5, 16}, {3, 5, 16}, 1, 4, false},
    {"mha_causal", {3, 5, 16}, {3, 5, 16}, 1, 4, true, true},
};


TEST(OnnxAttentionImport, PyTorchTransformersRunThroughTheCApiWithPyTorchsOutputs) {
  const SafetensorsFile goldens = SafetensorsFile::read(testing::torch_onnx_dir + "torch_goldens.safetensors");
  for (const TorchGoldenCase& c : attention_cases) testing::expect_c_api_gives_pytorchs_outputs(c, goldens);
}

TEST(OnnxAttentionImport, AnyBatchSizeGivesTheSameRows) {
  const SafetensorsFile goldens = SafetensorsFile::read(testing::torch_onnx_dir + "torch_goldens.safetensors");
  for (const TorchGoldenCase& c : attention_cases) testing::expect_one_sample_gives_its_row(c, goldens);
}

TEST(OnnxAttentionImport, EachAttentionBecomesOneMultiHeadAttentionLayer) {
  for (const TorchGoldenCase& c : attention_cases) testing::expect_attention_layers(c);
}

// The imported encoder trains: a few SGD steps on one batch lower its loss.
TEST(OnnxAttentionImport, TheImportedEncoderFineTunes) {
  const SafetensorsFile goldens = SafetensorsFile::read(data_dir + "torch_goldens.safetensors");
  const std::span<const float> input = goldens.floats("encoder_gelu_pre.input", std::vector<std::int64_t>{3, 5, 6});
  TrainedModel model = import_onnx(data_dir + "encoder_gelu_pre.onnx");
  Executor executor(*model.graph, *model.parameters, ExecutorOptions{});
  OptimizerOptions sgd;
  sgd.learning_rate = 0.05f;
  const std::unique_ptr<Optimizer> optimizer = make_optimizer("sgd", sgd, *model.parameters);
  const std::vector<std::int32_t> labels{0, 1, 2};
  const CrossEntropyLoss loss;
  std::vector<double> losses;
  for (int step = 0; step < 5; ++step) {
    losses.push_back(executor.train_step(input.data(), 3, Targets{labels, nullptr}, loss, static_cast<std::uint64_t>(step)).mean_loss());
    optimizer->step();
  }
  for (const double l : losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_LT(losses.back(), losses.front());
}

// --- Graphs that are not exactly attention ------------------------------------------------

std::string import_error(const onnx::ModelProto& model) {
  try {
    import_onnx_bytes(model.SerializeAsString(), "mutated.onnx");
  } catch (const Error& e) {
    return e.what();
  }
  return "(imported)";
}
void set_float(onnx::TensorProto* t, float value) {
  t->clear_raw_data();
  t->clear_float_data();
  t->add_float_data(value);
}
onnx::TensorProto* add_initializer(onnx::ModelProto& model, const std::string& name, std::vector<std::int64_t> dims,
                                   std::vector<std::int64_t> integers, std::vector<float> floats = {}) {
  onnx::TensorProto* t = model.mutable_graph()->add_initializer();
  t->set_name(name);
  t->set_data_type(integers.empty() ? onnx::TensorProto::FLOAT : onnx::TensorProto::INT64);
  for (const std::int64_t d : dims) t->add_dims(d);
  for (const std::int64_t v : integers) t->add_int64_data(v);
  for (const float v : floats) t->add_float_data(v);
  return t;
}

// In mha_batch_first.onnx (torch 1.13's names): the query is divided by Constant_14 (2 =
// sqrt(16 / 4)) in Div_2; MatMul_1 makes the scores; Reshape_1 splits the keys into heads.
TEST(OnnxAttentionImport, AnotherScaleIsAnErrorNamingTheScoresNode) {
  onnx::ModelProto model = load_model("mha_batch_first");
  set_float(node_named(model, "/mha/Constant_14")->mutable_attribute(0)->mutable_t(), 4.0f);
  const std::string error = import_error(model);
  EXPECT_NE(error.find("mutated.onnx: node '/mha/MatMul_1' (MatMul)"), std::string::npos) << error;
  EXPECT_NE(error.find("scaled by 0.25,"), std::string::npos) << error;
  EXPECT_NE(error.find("1/sqrt(4) = 0.5;"), std::string::npos) << error;
}

// Inserts `node` just before the node named `before` (ONNX's topological order).
void insert_before(onnx::ModelProto& model, const onnx::NodeProto& node, const std::string& before) {
  auto* nodes = model.mutable_graph()->mutable_node();
  *nodes->Add() = node;
  int index = 0;
  while (nodes->Get(index).name() != before) ++index;
  for (int i = nodes->size() - 1; i > index; --i) nodes->SwapElements(i, i - 1);
}
onnx::NodeProto scale_node(const std::string& op, const std::string& name, const std::string& input, const std::string& factor) {
  onnx::NodeProto n;
  n.set_op_type(op);
  n.set_name(name);
  n.add_input(input);
  n.add_input(factor);
  n.add_output(name);
  return n;
}
std::vector<float> run_model(const onnx::ModelProto& model, std::span<const float> input, std::size_t outputs) {
  TrainedModel imported = import_onnx_bytes(model.SerializeAsString(), "scaled.onnx");
  SessionOptions options;
  options.max_batch = 3;
  InferenceSession session(std::move(imported.graph), std::move(imported.parameters), options);
  std::vector<float> output(outputs);
  session.run(input.data(), 3, output.data());
  return output;
}

// The 1/sqrt(D) may sit anywhere before the Softmax: 1/D^(1/4) on the queries and on the
// keys, or all of it on the scores (as other exporters write it).
TEST(OnnxAttentionImport, TheScaleMayBeSplitOrMovedToTheScores) {
  const SafetensorsFile goldens = SafetensorsFile::read(data_dir + "torch_goldens.safetensors");
  const std::span<const float> input = goldens.floats("mha_batch_first.input", std::vector<std::int64_t>{3, 5, 16});
  const std::span<const float> expected = goldens.floats("mha_batch_first.output", std::vector<std::int64_t>{3, 5, 16});

  onnx::ModelProto split = load_model("mha_batch_first");
  set_float(node_named(split, "/mha/Constant_14")->mutable_attribute(0)->mutable_t(), std::sqrt(2.0f));
  add_initializer(split, "root_half", {}, {}, {1.0f / std::sqrt(2.0f)});
  insert_before(split, scale_node("Mul", "scaled_keys", "/mha/Transpose_3_output_0", "root_half"), "/mha/MatMul_1");
  node_named(split, "/mha/MatMul_1")->set_input(1, "scaled_keys");

  onnx::ModelProto on_scores = load_model("mha_batch_first");
  set_float(node_named(on_scores, "/mha/Constant_14")->mutable_attribute(0)->mutable_t(), 1.0f);
  add_initializer(on_scores, "two", {}, {}, {2.0f});
  insert_before(on_scores, scale_node("Div", "scaled_scores", "/mha/MatMul_1_output_0", "two"), "/mha/Softmax");
  node_named(on_scores, "/mha/Softmax")->set_input(0, "scaled_scores");

  for (const onnx::ModelProto* model : {&split, &on_scores}) {
    const std::vector<float> output = run_model(*model, input, expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) ASSERT_NEAR(output[i], expected[i], 1e-4f) << "output " << i;
  }
}

// A mask other than the causal one: a second input, zeros, or -inf below the diagonal.
TEST(OnnxAttentionImport, AMaskIsAnErrorNamingItsNode) {
  std::vector<float> anticausal(25, 0.0f);
  for (int row = 0; row < 5; ++row) {
    for (int column = 0; column < row; ++column) anticausal[static_cast<std::size_t>(row * 5 + column)] = -INFINITY;
  }
  for (const std::vector<float>& constant : {std::vector<float>{}, std::vector<float>(25, 0.0f), anticausal}) {
    const bool as_input = constant.empty();
    SCOPED_TRACE(as_input);
    onnx::ModelProto model = load_model("mha_batch_first");
    onnx::NodeProto* softmax = node_named(model, "/mha/Softmax");
    onnx::NodeProto* mask = model.mutable_graph()->add_node();
    mask->set_op_type("Add");
    mask->set_name("attn_mask_add");
    mask->add_input(softmax->input(0));
    mask->add_input("attn_mask");
    mask->add_output("masked_scores");
    softmax->set_input(0, "masked_scores");
    if (as_input) {
      onnx::ValueInfoProto* in = model.mutable_graph()->add_input();
      in->set_name("attn_mask");
      in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
      for (const int d : {5, 5}) in->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(d);
    } else {
      add_initializer(model, "attn_mask", {5, 5}, {}, constant);
    }
    // Nodes must stay in topological order: the Add just before the Softmax.
    auto* nodes = model.mutable_graph()->mutable_node();
    int softmax_index = 0;
    while (nodes->Get(softmax_index).name() != "/mha/Softmax") ++softmax_index;
    for (int i = nodes->size() - 1; i > softmax_index; --i) nodes->SwapElements(i, i - 1);
    EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(model.SerializeAsString(), "masked.onnx"); },
                                  {"masked.onnx: node 'attn_mask_add' (Add)", "attention mask", "not supported"}));
  }
}

TEST(OnnxAttentionImport, HeadsThatDoNotMatchOrDivideAreErrorsNamingTheReshape) {
  // The keys split into 2 heads of 8 while the queries and values have 4 of 4.
  onnx::ModelProto two_heads = load_model("mha_batch_first");
  add_initializer(two_heads, "two_heads", {3}, {0, -1, 8});
  node_named(two_heads, "/mha/Reshape_1")->set_input(1, "two_heads");
  EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(two_heads.SerializeAsString(), "h.onnx"); },
                                {"node '/mha/Reshape_1' (Reshape)", "splits 2 heads where another path split 4"}));
  // 16 features do not divide into heads of 5: the target shape has no value.
  onnx::ModelProto fives = load_model("mha_batch_first");
  add_initializer(fives, "fives", {3}, {0, -1, 5});
  node_named(fives, "/mha/Reshape_1")->set_input(1, "fives");
  EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(fives.SerializeAsString(), "h.onnx"); },
                                {"node '/mha/Reshape_1' (Reshape)", "target shape could not be evaluated"}));
  // Tokens instead of features split into heads: not attention.
  onnx::ModelProto tokens = load_model("mha_batch_first");
  add_initializer(tokens, "swap", {3}, {0, 16, -1});
  node_named(tokens, "/mha/Reshape_1")->set_input(1, "swap");
  const std::string error = import_error(tokens);
  EXPECT_NE(error.find("'/mha/Reshape_1' (Reshape)"), std::string::npos) << error;
}

// The weights times the keys' third instead of the values': the right shapes, the wrong
// tensor; the layouts know which third of the in-projection each path took.
TEST(OnnxAttentionImport, KeysInPlaceOfTheValuesAreAnError) {
  onnx::ModelProto model = load_model("mha_batch_first");
  onnx::NodeProto* keys = model.mutable_graph()->add_node();
  keys->set_op_type("Transpose");
  keys->set_name("keys_as_values");
  keys->add_input("/mha/Reshape_1_output_0");
  keys->add_output("keys_as_values");
  onnx::AttributeProto* perm = keys->add_attribute();
  perm->set_name("perm");
  perm->set_type(onnx::AttributeProto::INTS);
  for (const int p : {1, 0, 2}) perm->add_ints(p);
  node_named(model, "/mha/MatMul_2")->set_input(1, "keys_as_values");
  auto* nodes = model.mutable_graph()->mutable_node();
  int matmul_index = 0;
  while (nodes->Get(matmul_index).name() != "/mha/MatMul_2") ++matmul_index;
  for (int i = nodes->size() - 1; i > matmul_index; --i) nodes->SwapElements(i, i - 1);
  EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(model.SerializeAsString(), "kv.onnx"); },
                                {"node '/mha/MatMul_2' (MatMul)", "expected the values"}));
}

TEST(OnnxAttentionImport, AttentionWeightsUsedElsewhereAreAnError) {
  onnx::ModelProto model = load_model("mha_batch_first");
  model.mutable_graph()->add_output()->set_name("/mha/Softmax_output_0");
  const std::string error = import_error(model);
  EXPECT_NE(error.find("node '/mha/Softmax' (Softmax)"), std::string::npos) << error;
}

// Each node with an input dropped, an input swapped for another tensor, or an integer
// constant changed: an ember::Error, or a model that computes what the variant says (only
// shape arithmetic nothing reads was hit, or the out-projection lost its bias), never a
// crash (the release build runs it; the ONNX fuzz target covers the sanitizers).
TEST(OnnxAttentionImport, MalformedVariantsAreErrorsNotCrashes) {
  const onnx::ModelProto original = load_model("mha_batch_first");
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
            a.mutable_t()->clear_raw_data();
            a.mutable_t()->clear_int64_data();
            for (std::int64_t d = 0; d < std::max<std::int64_t>(1, a.t().dims_size() ? a.t().dims(0) : 1); ++d) {
              a.mutable_t()->add_int64_data(-1000003);
            }
          }
          if (a.ints_size() > 0) a.set_ints(0, 7);
        }
      },
  };
  const SafetensorsFile goldens = SafetensorsFile::read(data_dir + "torch_goldens.safetensors");
  const std::span<const float> input = goldens.floats("mha_batch_first.input", std::vector<std::int64_t>{3, 5, 16});
  const std::span<const float> expected = goldens.floats("mha_batch_first.output", std::vector<std::int64_t>{3, 5, 16});
  // The one valid model among the variants: the out-projection's Gemm without its bias.
  std::vector<float> out_bias;
  for (const onnx::TensorProto& t : original.graph().initializer()) {
    if (t.name() == "mha.out_proj.bias") out_bias.assign(t.float_data().begin(), t.float_data().end());
    if (t.name() == "mha.out_proj.bias" && out_bias.empty()) {
      out_bias.resize(16);
      std::memcpy(out_bias.data(), t.raw_data().data(), std::min<std::size_t>(t.raw_data().size(), 64));
    }
  }
  int errors = 0, variants = 0;
  for (int i = 0; i < original.graph().node_size(); ++i) {
    for (std::size_t m = 0; m < std::size(mutations); ++m) {
      const auto& mutate = mutations[m];
      const bool no_out_bias = m == 0 && original.graph().node(i).op_type() == "Gemm";
      onnx::ModelProto model = original;
      mutate(*model.mutable_graph()->mutable_node(i));
      if (model.SerializeAsString() == original.SerializeAsString()) continue;
      ++variants;
      try {
        TrainedModel imported = import_onnx_bytes(model.SerializeAsString(), "m.onnx");
        // What imports is the same model (the mutation hit shape arithmetic nothing uses).
        SessionOptions options;
        options.max_batch = 3;
        InferenceSession session(std::move(imported.graph), std::move(imported.parameters), options);
        std::vector<float> output(expected.size());
        session.run(input.data(), 3, output.data());
        for (std::size_t o = 0; o < output.size(); ++o) {
          const float want = expected[o] - (no_out_bias ? out_bias.at(o % 16) : 0.0f);
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
