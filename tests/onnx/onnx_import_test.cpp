// ONNX import: models exported by PyTorch (tests/onnx/make_torch_onnx.py, committed in
// tests/data/onnx) run through the C API and the C++ session with PyTorch's outputs; what
// ember cannot import, and files that are not valid models, are errors naming the file,
// the node and the supported set.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <onnx/onnx_pb.h>

#include "engine/ember.h"
#include "engine/onnx_import.h"
#include "engine/safetensors.h"
#include "engine/session.h"
#include "support/expect_error.h"
#include "torch_golden_checks.h"
#include "support/file_helpers.h"

namespace ember {
namespace {

using testing::load_model;
using testing::node_named;
using testing::read_bytes;
using testing::throws_error_with;

const std::string& data_dir = testing::torch_onnx_dir;

struct TorchCase {
  std::string name;
  std::vector<std::int64_t> input_shape;
  std::vector<std::int64_t> output_shape;
  int batch_norms;  // BatchNormalization nodes the file keeps (imported as batch_norm2d)
};

const TorchCase torch_cases[] = {
    {"lenet", {3, 1, 32, 32}, {3, 10}, 0},
    {"resnet8", {3, 1, 28, 28}, {3, 10}, 9},
    {"gelu_mlp", {3, 16}, {3, 5}, 0},
    {"gelu_mlp_opset13", {3, 16}, {3, 5}, 0},  // LayerNorm decomposed by PyTorch
};


TEST(OnnxImport, PyTorchExportsRunThroughTheCApiWithPyTorchsOutputs) {
  const SafetensorsFile goldens = SafetensorsFile::read(data_dir + "torch_goldens.safetensors");
  for (const TorchCase& c : torch_cases) {
    testing::expect_c_api_gives_pytorchs_outputs(testing::TorchGoldenCase{c.name, c.input_shape, c.output_shape}, goldens);
  }
}

TEST(OnnxImport, PyTorchsBatchNormsAndGeluBecomeEmberLayers) {
  for (const TorchCase& c : torch_cases) {
    const TrainedModel model = import_onnx(data_dir + c.name + ".onnx");
    int batch_norms = 0, gelus = 0, layer_norms = 0;
    for (const Node& node : model.graph->nodes()) {
      batch_norms += node.layer->kind() == "batch_norm2d";
      gelus += node.layer->kind() == "gelu";
      layer_norms += node.layer->kind() == "layer_norm";
    }
    EXPECT_EQ(batch_norms, c.batch_norms) << c.name;
    const bool mlp = c.name.rfind("gelu_mlp", 0) == 0;
    EXPECT_EQ(gelus, mlp ? 1 : 0) << c.name;
    EXPECT_EQ(layer_norms, mlp ? 1 : 0) << c.name;
    EXPECT_EQ(static_cast<int>(model.graph->nodes().size()), mlp ? 5 : static_cast<int>(model.graph->nodes().size())) << c.name;
  }
}

class OnnxImportFileTest : public testing::TempDirectoryTest {};

// `ember import` writes a checkpoint that InferenceSession::open runs as the .onnx itself.
TEST_F(OnnxImportFileTest, ImportCommandWritesACheckpointThatRunsAlike) {
  const std::string command = std::string(EMBER_CLI_PATH) + " import " + data_dir + "resnet8.onnx --save " + path("r.safetensors") +
                              " > " + path("log") + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << read_bytes(path("log"));
  const SafetensorsFile goldens = SafetensorsFile::read(data_dir + "torch_goldens.safetensors");
  const std::span<const float> input = goldens.floats("resnet8.input", std::vector<std::int64_t>{3, 1, 28, 28});
  SessionOptions options;
  options.max_batch = 3;
  std::vector<float> from_checkpoint(30), from_onnx(30);
  InferenceSession::open(path("r.safetensors"), options)->run(input.data(), 3, from_checkpoint.data());
  InferenceSession::open(data_dir + "resnet8.onnx", options)->run(input.data(), 3, from_onnx.data());
  EXPECT_EQ(from_checkpoint, from_onnx);
}

// `ember export` from an imported checkpoint writes a file that imports to the same
// outputs; a bad --opset is a usage error (exit 2) that writes nothing.
TEST_F(OnnxImportFileTest, ExportCommandWritesTheCheckpointAsOnnx) {
  const std::string cli = std::string(EMBER_CLI_PATH);
  const std::string log = " > " + path("log") + " 2>&1";
  ASSERT_EQ(std::system((cli + " import " + data_dir + "lenet.onnx --save " + path("l.safetensors") + log).c_str()), 0);
  ASSERT_EQ(std::system((cli + " export --checkpoint " + path("l.safetensors") + " --onnx " + path("l.onnx") + " --opset 13" + log).c_str()), 0)
      << read_bytes(path("log"));
  EXPECT_NE(read_bytes(path("log")).find("opset 13"), std::string::npos);
  const int status = std::system((cli + " export --checkpoint " + path("l.safetensors") + " --onnx " + path("bad.onnx") + " --opset 18" + log).c_str());
  EXPECT_EQ(WEXITSTATUS(status), 2);
  EXPECT_NE(read_bytes(path("log")).find("--opset: expected 13 to 17, found 18"), std::string::npos) << read_bytes(path("log"));
  EXPECT_FALSE(std::filesystem::exists(path("bad.onnx")));

  const SafetensorsFile goldens = SafetensorsFile::read(data_dir + "torch_goldens.safetensors");
  const std::span<const float> input = goldens.floats("lenet.input", std::vector<std::int64_t>{3, 1, 32, 32});
  SessionOptions options;
  options.max_batch = 3;
  std::vector<float> from_torch_file(30), from_ember_file(30);
  InferenceSession::open(data_dir + "lenet.onnx", options)->run(input.data(), 3, from_torch_file.data());
  InferenceSession::open(path("l.onnx"), options)->run(input.data(), 3, from_ember_file.data());
  EXPECT_EQ(from_torch_file, from_ember_file);
}

TEST_F(OnnxImportFileTest, TruncatedOrForeignFilesAreErrorsNamingTheFile) {
  const std::string bytes = read_bytes(data_dir + "lenet.onnx");
  for (const std::size_t cut : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{100}, bytes.size() / 3, bytes.size() / 2,
                                bytes.size() - 1}) {
    SCOPED_TRACE(cut);
    EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(bytes.substr(0, cut), "cut.onnx"); }, {"cut.onnx"}));
  }
  testing::write_file(path("text.onnx"), testing::Bytes{'n', 'o', 't', ' ', 'o', 'n', 'n', 'x', '\n'});
  EXPECT_TRUE(throws_error_with([&] { import_onnx(path("text.onnx")); }, {path("text.onnx"), "not an ONNX model"}));
  EXPECT_TRUE(throws_error_with([&] { import_onnx(path("missing.onnx")); }, {path("missing.onnx"), "cannot open"}));
  char error[512] = "";
  EXPECT_EQ(ember_session_create(path("text.onnx").c_str(), 4, error, sizeof error), nullptr);
  EXPECT_NE(std::string(error).find("text.onnx"), std::string::npos) << error;
}

// A minimal model: input (batch, 2, 4, 4) -> one node.
struct SmallModel {
  onnx::ModelProto model;
  onnx::GraphProto* graph;
  onnx::NodeProto* node;

  explicit SmallModel(const std::string& op, int opset = 17) {
    model.set_ir_version(8);
    model.add_opset_import()->set_version(opset);
    graph = model.mutable_graph();
    onnx::ValueInfoProto* input = graph->add_input();
    input->set_name("x");
    auto* type = input->mutable_type()->mutable_tensor_type();
    type->set_elem_type(onnx::TensorProto::FLOAT);
    type->mutable_shape()->add_dim()->set_dim_param("batch");
    for (int d : {2, 4, 4}) type->mutable_shape()->add_dim()->set_dim_value(d);
    node = graph->add_node();
    node->set_op_type(op);
    node->set_name("the_node");
    node->add_input("x");
    node->add_output("y");
    graph->add_output()->set_name("y");
  }
  onnx::TensorProto* weight(const std::string& name, std::vector<std::int64_t> dims) {
    onnx::TensorProto* t = graph->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    std::int64_t count = 1;
    for (std::int64_t d : dims) {
      t->add_dims(d);
      count *= d;
    }
    for (std::int64_t i = 0; i < count; ++i) t->add_float_data(0.5f);
    return t;
  }
  std::string bytes() const { return model.SerializeAsString(); }
};

TEST(OnnxImport, AnUnsupportedOpNamesTheNodeItsTypeAndTheSupportedSet) {
  SmallModel m("Sin");
  EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(m.bytes(), "sin.onnx"); },
                                {"sin.onnx", "node 'the_node' (Sin)", "op type Sin", "Conv, BatchNormalization"}));
  SmallModel other_domain("Relu");
  other_domain.node->set_domain("com.microsoft");
  EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(other_domain.bytes(), "d.onnx"); }, {"the_node", "com.microsoft"}));
}

TEST(OnnxImport, AnUnsupportedAttributeIsAnErrorNotADifferentModel) {
  SmallModel m("Conv");
  m.node->add_input("w");
  m.weight("w", {2, 1, 3, 3});
  onnx::AttributeProto* group = m.node->add_attribute();
  group->set_name("group");
  group->set_type(onnx::AttributeProto::INT);
  group->set_i(2);
  EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(m.bytes(), "g.onnx"); }, {"node 'the_node' (Conv)", "group"}));

  SmallModel softmax("Softmax");
  onnx::AttributeProto* axis = softmax.node->add_attribute();
  axis->set_name("axis");
  axis->set_type(onnx::AttributeProto::INT);
  axis->set_i(1);
  EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(softmax.bytes(), "s.onnx"); }, {"Softmax", "last axis", "found axis 1"}));
}

TEST(OnnxImport, MissingInitializersWrongDtypesAndDynamicShapesAreNamed) {
  SmallModel missing("Conv");
  missing.node->add_input("w");  // never defined
  EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(missing.bytes(), "m.onnx"); }, {"m.onnx", "the_node", "'w'"}));

  SmallModel doubles("Conv");
  doubles.node->add_input("w");
  doubles.weight("w", {2, 2, 3, 3})->set_data_type(onnx::TensorProto::DOUBLE);
  EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(doubles.bytes(), "f64.onnx"); }, {"f64.onnx", "initializer 'w'", "data type 11"}));

  SmallModel short_data("Conv");
  short_data.node->add_input("w");
  short_data.weight("w", {2, 2, 3, 3})->mutable_float_data()->RemoveLast();
  EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(short_data.bytes(), "s.onnx"); }, {"initializer 'w'", "35 floats for 36"}));

  SmallModel dynamic("Relu");
  dynamic.graph->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(2)->set_dim_param("h");
  EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(dynamic.bytes(), "dyn.onnx"); },
                                {"dyn.onnx", "input 'x'", "dimension 2", "only the batch"}));

  SmallModel old("Relu", 11);
  EXPECT_TRUE(throws_error_with([&] { import_onnx_bytes(old.bytes(), "old.onnx"); }, {"old.onnx", "opset 11", "13 to 17"}));
}

TEST(OnnxImport, TheImportedReluModelRuns) {
  SmallModel m("Relu");
  const TrainedModel model = import_onnx_bytes(m.bytes(), "relu.onnx");
  ASSERT_EQ(model.graph->nodes().size(), 1u);
  EXPECT_EQ(model.graph->nodes()[0].layer->kind(), "relu");
  EXPECT_EQ(model.graph->input_sample_shape(), (Shape{2, 4, 4}));
}

}  // namespace
}  // namespace ember
