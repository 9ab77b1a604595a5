#include "engine/model_spec.h"

#include <gtest/gtest.h>

#include "engine/error.h"
#include "engine/parameters.h"

namespace ember {
namespace {

std::string error_of(const Json& spec) {
  try {
    graph_from_spec(spec, "test.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(ModelSpec, BuiltInModelsBuildWithTheExpectedShapes) {
  const Graph seed = graph_from_spec(builtin_model_spec("seed-cnn"));
  EXPECT_EQ(seed.value_shape(seed.output()), (Shape{1, 10}));
  EXPECT_EQ(seed.value_shape(seed.find("pool1")->output), (Shape{1, 32, 14, 14}));
  ParameterStore seed_parameters(seed);
  // conv 32*9+32, fc1 6272*128+128, fc2 128*10+10
  EXPECT_EQ(seed_parameters.parameter_count(), 320 + 802944 + 1290);

  const Graph lenet = graph_from_spec(builtin_model_spec("lenet"));
  EXPECT_EQ(lenet.value_shape(lenet.find("pool2")->output), (Shape{1, 16, 5, 5}));
  EXPECT_EQ(lenet.value_shape(lenet.output()), (Shape{1, 10}));
}

TEST(ModelSpec, AttentionModelsBuildWithTheExpectedShapes) {
  const Graph attn = graph_from_spec(builtin_model_spec("attn-cnn"));
  EXPECT_EQ(attn.value_shape(attn.find("pool2")->output), (Shape{1, 64, 7, 7}));
  EXPECT_EQ(attn.value_shape(attn.find("tokens")->output), (Shape{1, 49, 64}));
  EXPECT_EQ(attn.value_shape(attn.find("block2")->output), (Shape{1, 49, 64}));
  EXPECT_EQ(attn.value_shape(attn.output()), (Shape{1, 10}));

  const Graph mse = graph_from_spec(builtin_model_spec("attention-mse"));
  EXPECT_EQ(mse.input_sample_shape(), (Shape{16, 8}));
  EXPECT_EQ(mse.value_shape(mse.find("attention")->output), (Shape{1, 32}));
  EXPECT_EQ(mse.value_shape(mse.output()), (Shape{1, 4}));
}

TEST(ModelSpec, ATransformerBlockExpandsIntoItsPreNormLayers) {
  const Json spec = Json::parse(R"({
    "input": [5, 16],
    "layers": [
      {"name": "block", "kind": "transformer_encoder_block", "d_model": 16, "heads": 2, "mlp_hidden": 24, "causal": true},
      {"name": "pool", "kind": "mean_pool_tokens", "inputs": ["block"]}
    ]})");
  const Graph graph = graph_from_spec(spec);
  std::vector<std::string> names;
  for (const Node& node : graph.nodes()) names.push_back(node.name + ":" + std::string(node.layer->kind()));
  EXPECT_EQ(names, (std::vector<std::string>{"block.norm1:layer_norm", "block.attention:multi_head_attention",
                                             "block.residual1:add", "block.norm2:layer_norm", "block.mlp_in:linear",
                                             "block.gelu:gelu", "block.mlp_out:linear", "block:add",
                                             "pool:mean_pool_tokens"}));
  // The residuals read the block's input and the first residual.
  EXPECT_EQ(graph.nodes()[2].inputs[0], graph.input());
  EXPECT_EQ(graph.nodes()[7].inputs[0], graph.nodes()[2].output);
  EXPECT_EQ(graph.nodes()[1].layer->options()["causal"], true);
  EXPECT_EQ(graph.nodes()[4].layer->options()["out_features"], 24);
  // Written back, the spec lists the expanded layers and rebuilds the same graph.
  const Json written = spec_from_graph(graph, "block");
  EXPECT_EQ(spec_from_graph(graph_from_spec(written), "block"), written);
}

TEST(ModelSpec, ATransformerBlockWithBadOptionsNamesThem) {
  const Json spec = Json::parse(R"({
    "input": [5, 16],
    "layers": [{"name": "block", "kind": "transformer_encoder_block", "d_model": 16, "heads": 2, "width": 3}]})");
  const std::string message = error_of(spec);
  EXPECT_NE(message.find("'block'"), std::string::npos) << message;
  EXPECT_NE(message.find("width"), std::string::npos) << message;
}

TEST(ModelSpec, EveryBuiltInModelRoundTrips) {
  for (const std::string& name : builtin_model_names()) {
    const Graph graph = graph_from_spec(builtin_model_spec(name));
    const Json spec = spec_from_graph(graph, name);
    const Graph rebuilt = graph_from_spec(spec);
    EXPECT_EQ(spec_from_graph(rebuilt, name), spec) << name;
    ASSERT_EQ(rebuilt.nodes().size(), graph.nodes().size());
    for (std::size_t i = 0; i < graph.nodes().size(); ++i) {
      EXPECT_EQ(rebuilt.nodes()[i].layer->options(), graph.nodes()[i].layer->options());
    }
  }
}

TEST(ModelSpec, ADagWithTwoConsumersRoundTrips) {
  const Json spec = Json::parse(R"({
    "input": [8],
    "layers": [
      {"name": "a", "kind": "linear", "in_features": 8, "out_features": 8},
      {"name": "r", "kind": "relu"},
      {"name": "sum", "kind": "add", "inputs": ["a", "r"]},
      {"name": "out", "kind": "linear", "in_features": 8, "out_features": 3}
    ]})");
  const Graph graph = graph_from_spec(spec);
  EXPECT_EQ(graph.nodes()[2].inputs, (std::vector<ValueId>{1, 2}));
  const Json written = spec_from_graph(graph, "dag");
  EXPECT_EQ(written["layers"][2]["inputs"], Json::parse(R"(["a", "r"])"));
  EXPECT_FALSE(written["layers"][1].contains("inputs"));
  EXPECT_EQ(spec_from_graph(graph_from_spec(written), "dag"), written);
}

TEST(ModelSpec, UnknownLayerKindIsNamed) {
  const Json spec = Json::parse(R"({"input": [4], "layers": [{"name": "x", "kind": "frobnicate"}]})");
  const std::string message = error_of(spec);
  EXPECT_NE(message.find("test.json: layer 'x'"), std::string::npos) << message;
  EXPECT_NE(message.find("unknown layer kind 'frobnicate'"), std::string::npos) << message;
}

TEST(ModelSpec, ShapeMismatchNamesTheLayerAndBothShapes) {
  const Json spec = Json::parse(R"({"input": [1, 28, 28], "layers": [
      {"name": "flat", "kind": "flatten"},
      {"name": "fc", "kind": "linear", "in_features": 100, "out_features": 10}]})");
  const std::string message = error_of(spec);
  EXPECT_NE(message.find("layer 'fc'"), std::string::npos) << message;
  EXPECT_NE(message.find("100"), std::string::npos) << message;
  EXPECT_NE(message.find("784"), std::string::npos) << message;
}

TEST(ModelSpec, StructuralErrorsAreClear) {
  EXPECT_NE(error_of(Json::parse(R"({"layers": []})")).find("field 'input'"), std::string::npos);
  EXPECT_NE(error_of(Json::parse(R"({"input": [4]})")).find("field 'layers'"), std::string::npos);
  EXPECT_NE(error_of(Json::parse(R"({"input": [4], "version": 9, "layers": [{"name": "r", "kind": "relu"}]})"))
                .find("field 'version': this ember reads version 1, found 9"),
            std::string::npos);
  EXPECT_NE(error_of(Json::parse(R"({"input": [4], "layers": [{"kind": "relu"}]})")).find("field 'name'"),
            std::string::npos);
  EXPECT_NE(error_of(Json::parse(R"({"input": [4], "layers": [{"name": "r", "kind": "relu", "inputs": ["nope"]}]})"))
                .find("input 'nope' is not 'input' or an earlier layer"),
            std::string::npos);
  EXPECT_NE(error_of(Json::parse(R"({"input": [4], "layers": [{"name": "r", "kind": "relu"}, {"name": "r", "kind": "relu"}]})"))
                .find("'r' is used twice"),
            std::string::npos);
  EXPECT_NE(error_of(Json::parse(R"({"input": [0, 3], "layers": [{"name": "r", "kind": "relu"}]})"))
                .find("positive integers"),
            std::string::npos);
}

TEST(ModelSpec, UnknownBuiltInListsTheKnownOnes) {
  try {
    load_model_spec("resnet-9000");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("seed-cnn"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ember
