// ONNX export: every model passes ONNX's own checker and strict shape inference (the C++
// API of Debian's libonnx) at every supported opset, with the shapes ember computes; the
// things ONNX cannot express are refused with a message naming the layer.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include "engine/ember.h"
#include "engine/onnx_export.h"
#include "engine/optimizer.h"
#include "engine/training_state.h"
#include "onnx/onnx_test_models.h"
#include "support/expect_error.h"
#include "support/file_helpers.h"

namespace ember {
namespace {

using testing::all_test_models;
using testing::make_test_model;
using testing::throws_error_with;

onnx::ModelProto parse(const std::string& bytes) {
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(bytes));
  return model;
}

std::set<std::string> op_types(const onnx::ModelProto& model) {
  std::set<std::string> ops;
  for (const onnx::NodeProto& node : model.graph().node()) ops.insert(node.op_type());
  return ops;
}

TEST(OnnxExport, EveryModelPassesTheCheckerAndShapeInferenceAtEveryOpset) {
  for (const testing::TestModel& m : all_test_models()) {
    for (int opset = onnx_min_opset; opset <= onnx_max_opset; ++opset) {
      SCOPED_TRACE(m.name + " opset " + std::to_string(opset));
      OnnxExportOptions options;
      options.opset = opset;
      onnx::ModelProto model = parse(onnx_model_bytes(*m.graph, *m.parameters, options));
      EXPECT_NO_THROW(onnx::checker::check_model(model));
      EXPECT_NO_THROW(onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(),
                                                         onnx::ShapeInferenceOptions(true, 1)));
      ASSERT_EQ(model.opset_import_size(), 1);
      EXPECT_EQ(model.opset_import(0).version(), opset);
      // Inference found every intermediate value, and the output has ember's shape with a
      // dynamic batch.
      EXPECT_GT(model.graph().value_info_size(), 0);
      const onnx::TensorShapeProto& out = model.graph().output(0).type().tensor_type().shape();
      const Shape& expected = m.graph->value_shape(m.graph->output());
      ASSERT_EQ(out.dim_size(), expected.rank());
      EXPECT_EQ(out.dim(0).dim_param(), "batch");
      for (int axis = 1; axis < expected.rank(); ++axis) EXPECT_EQ(out.dim(axis).dim_value(), expected[axis]);
      // Every layer's output: ONNX infers ember's shape, the batch still dynamic.
      std::map<std::string, const onnx::TensorShapeProto*> inferred;
      for (const onnx::ValueInfoProto& v : model.graph().value_info()) inferred[v.name()] = &v.type().tensor_type().shape();
      for (const Node& node : m.graph->nodes()) {
        if (node.output == m.graph->output()) continue;
        ASSERT_TRUE(inferred.count(node.name)) << node.name;
        const onnx::TensorShapeProto& s = *inferred.at(node.name);
        const Shape& ember_shape = m.graph->value_shape(node.output);
        ASSERT_EQ(s.dim_size(), ember_shape.rank()) << node.name;
        EXPECT_EQ(s.dim(0).dim_param(), "batch") << node.name;
        for (int axis = 1; axis < ember_shape.rank(); ++axis) EXPECT_EQ(s.dim(axis).dim_value(), ember_shape[axis]) << node.name;
      }
      if (m.name == "every-kind" || m.name == "attn-cnn") {
        EXPECT_EQ(op_types(model).count("LayerNormalization"), opset >= 17 ? 1u : 0u) << "decomposed below opset 17";
      }
    }
  }
}

TEST(OnnxExport, InitializersCarryEmberParameterNamesAndValues) {
  const testing::TestModel m = make_test_model("resnet", builtin_model_spec("resnet"));
  const onnx::ModelProto model = parse(onnx_model_bytes(*m.graph, *m.parameters));
  std::set<std::string> names;
  for (const onnx::TensorProto& t : model.graph().initializer()) names.insert(t.name());
  for (const ParameterEntry& e : m.parameters->entries()) EXPECT_TRUE(names.count(e.name)) << e.name;
  for (const char* buffer : {"stem.bn.running_mean", "stem.bn.running_var", "stage3.block2.bn2.running_var"}) {
    EXPECT_TRUE(names.count(buffer)) << buffer;
  }
  for (const onnx::TensorProto& t : model.graph().initializer()) {
    if (t.name() != "head.weight") continue;
    const int entry = m.parameters->find("head.weight");
    ASSERT_EQ(t.raw_data().size(), 64u * 10u * sizeof(float));
    EXPECT_EQ(std::memcmp(t.raw_data().data(), m.parameters->value_data(entry), t.raw_data().size()), 0);
  }
  EXPECT_EQ(model.graph().input(0).name(), "input");
  EXPECT_EQ(op_types(model).count("BatchNormalization"), 1u) << "kept with its running statistics";
}

TEST(OnnxExport, OpsetOutsideThirteenToSeventeenIsRefused) {
  const testing::TestModel m = make_test_model("lenet", builtin_model_spec("lenet"));
  for (int opset : {12, 18}) {
    OnnxExportOptions options;
    options.opset = opset;
    EXPECT_TRUE(throws_error_with([&] { onnx_model_bytes(*m.graph, *m.parameters, options); },
                                  {"opset must be 13 to 17", "found " + std::to_string(opset)}));
  }
}

TEST(OnnxExport, WhatOnnxCannotExpressIsRefusedNamingTheLayer) {
  const testing::TestModel padded = make_test_model("padded", Json::parse(R"({
    "format": "ember.model", "version": 1, "input": [4, 8],
    "layers": [{"name": "flat", "kind": "flatten"},
               {"name": "lengths", "kind": "linear", "in_features": 32, "out_features": 1},
               {"name": "attention", "kind": "multi_head_attention", "d_model": 8, "heads": 2, "key_padding_mask": true,
                "inputs": ["input", "lengths"]}]})"));
  EXPECT_TRUE(throws_error_with([&] { onnx_model_bytes(*padded.graph, *padded.parameters); },
                                {"layer 'attention'", "multi_head_attention", "key_padding_mask"}));
  const testing::TestModel batch_statistics = make_test_model("batch-statistics", Json::parse(R"({
    "format": "ember.model", "version": 1, "input": [2, 4, 4],
    "layers": [{"name": "bn", "kind": "batch_norm2d", "num_features": 2, "track_running_stats": false}]})"));
  EXPECT_TRUE(throws_error_with([&] { onnx_model_bytes(*batch_statistics.graph, *batch_statistics.parameters); },
                                {"layer 'bn'", "batch_norm2d", "track_running_stats"}));
}

class OnnxExportFileTest : public testing::TempDirectoryTest {};

TEST_F(OnnxExportFileTest, CheckpointExportStoresNormalizationAndClassNamesAndWritesAtomically) {
  testing::TestModel m = make_test_model("seed-cnn", builtin_model_spec("seed-cnn"));
  TrainingState state;
  state.model_spec = spec_from_graph(*m.graph, "seed-cnn");
  state.optimizer = Json{{"name", "sgd"}};
  state.run = Json{{"mean", 0.2860}, {"std", 0.3530}, {"class_names", {"T-shirt", "Trouser"}}};
  const auto optimizer = make_optimizer("sgd", OptimizerOptions{}, *m.parameters);
  save_training_state(path("model.safetensors"), state, *m.parameters, *optimizer);

  export_checkpoint_onnx(path("model.safetensors"), path("model.onnx"));
  std::ifstream file(path("model.onnx"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const onnx::ModelProto model = parse(bytes);
  std::map<std::string, std::string> metadata;
  for (const auto& entry : model.metadata_props()) metadata[entry.key()] = entry.value();
  EXPECT_EQ(Json::parse(metadata.at("ember.input_mean")).get<double>(), 0.2860);
  EXPECT_EQ(Json::parse(metadata.at("ember.input_std")).get<double>(), 0.3530);
  EXPECT_EQ(Json::parse(metadata.at("ember.class_names")), (Json{"T-shirt", "Trouser"}));
  EXPECT_EQ(model.producer_name(), "ember");

  // The C API writes the same file; only the two files are left in the directory.
  char error[2048] = "";
  ASSERT_EQ(ember_export_onnx(path("model.safetensors").c_str(), path("c.onnx").c_str(), 0, error, sizeof error), 0) << error;
  std::ifstream c_file(path("c.onnx"), std::ios::binary);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(c_file)), std::istreambuf_iterator<char>()), bytes);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(directory_), std::filesystem::directory_iterator()), 3);
  EXPECT_EQ(ember_export_onnx(path("model.safetensors").c_str(), path("bad.onnx").c_str(), 12, error, sizeof error), -1);
  EXPECT_NE(std::string(error).find("opset"), std::string::npos) << error;
  EXPECT_FALSE(std::filesystem::exists(path("bad.onnx")));

  // Per-channel normalization (a list per key) goes out and comes back as the run has it.
  state.run = Json{{"mean", {0.485, 0.456, 0.406}}, {"std", 0.25}};
  save_training_state(path("channels.safetensors"), state, *m.parameters, *optimizer);
  export_checkpoint_onnx(path("channels.safetensors"), path("channels.onnx"));
  const TrainedModel imported = load_trained_model(path("channels.onnx"));
  EXPECT_EQ(imported.run.at("mean"), (Json{0.485, 0.456, 0.406}));
  EXPECT_EQ(imported.run.at("std"), Json(0.25));
}

}  // namespace
}  // namespace ember
