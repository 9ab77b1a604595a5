#include "engine/model_spec.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "engine/error.h"
#include "engine/parameters.h"
#include "layers/residual_block.h"

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

std::vector<std::string> names_kinds_inputs(const std::vector<Json>& layers) {
  std::vector<std::string> lines;
  for (const Json& layer : layers) {
    std::string line = layer["name"].get<std::string>() + ":" + layer["kind"].get<std::string>() + "<";
    for (const Json& input : layer["inputs"]) line += input.get<std::string>() + ",";
    lines.push_back(line + ">");
  }
  return lines;
}

TEST(ModelSpec, AResidualBlockWithTheSameShapeAddsItsInput) {
  const std::vector<Json> layers = expand_residual_block("b", "x", Json{{"in_channels", 16}, {"out_channels", 16}});
  EXPECT_EQ(names_kinds_inputs(layers),
            (std::vector<std::string>{"b.conv1:conv2d<x,>", "b.bn1:batch_norm2d<b.conv1,>", "b.relu1:relu<b.bn1,>",
                                      "b.conv2:conv2d<b.relu1,>", "b.bn2:batch_norm2d<b.conv2,>", "b.add:add<b.bn2,x,>",
                                      "b:relu<b.add,>"}));
  EXPECT_EQ(layers[0], Json::parse(R"({"name": "b.conv1", "kind": "conv2d", "in_channels": 16, "out_channels": 16,
      "kernel": 3, "stride": 1, "padding": 1, "bias": false, "inputs": ["x"]})"));
  EXPECT_EQ(layers[1], Json::parse(R"({"name": "b.bn1", "kind": "batch_norm2d", "num_features": 16, "eps": 1e-5,
      "momentum": 0.1, "inputs": ["b.conv1"]})"));
}

TEST(ModelSpec, AResidualBlockThatStridesOrWidensProjectsItsInput) {
  for (const Json& options : {Json{{"in_channels", 16}, {"out_channels", 32}, {"stride", 2}},
                              Json{{"in_channels", 16}, {"out_channels", 16}, {"stride", 2}},
                              Json{{"in_channels", 8}, {"out_channels", 16}}}) {
    const std::vector<Json> layers = expand_residual_block("s2.b1", "prev", options);
    EXPECT_EQ(names_kinds_inputs(layers),
              (std::vector<std::string>{"s2.b1.conv1:conv2d<prev,>", "s2.b1.bn1:batch_norm2d<s2.b1.conv1,>",
                                        "s2.b1.relu1:relu<s2.b1.bn1,>", "s2.b1.conv2:conv2d<s2.b1.relu1,>",
                                        "s2.b1.bn2:batch_norm2d<s2.b1.conv2,>", "s2.b1.shortcut.conv:conv2d<prev,>",
                                        "s2.b1.shortcut.bn:batch_norm2d<s2.b1.shortcut.conv,>",
                                        "s2.b1.add:add<s2.b1.bn2,s2.b1.shortcut.bn,>", "s2.b1:relu<s2.b1.add,>"}))
        << options.dump();
    const std::int64_t stride = options.value("stride", 1);
    const std::int64_t in = options["in_channels"], out = options["out_channels"];
    // The strided convolutions are the first 3x3 and the 1x1 projection; the second 3x3 keeps the size.
    EXPECT_EQ(layers[0]["stride"], stride);
    EXPECT_EQ(layers[0]["in_channels"], in);
    EXPECT_EQ(layers[3]["stride"], 1);
    EXPECT_EQ(layers[3]["in_channels"], out);
    EXPECT_EQ(layers[5], (Json{{"name", "s2.b1.shortcut.conv"}, {"kind", "conv2d"}, {"in_channels", in},
                               {"out_channels", out}, {"kernel", 1}, {"stride", stride}, {"padding", 0},
                               {"bias", false}, {"inputs", {"prev"}}}));
  }
}

TEST(ModelSpec, AResidualBlockWithBadOptionsNamesThem) {
  auto message_for = [](const std::string& block) {
    return error_of(Json::parse(R"({"input": [4, 6, 6], "layers": [)" + block + "]}"));
  };
  std::string message = message_for(R"({"name": "block", "kind": "residual_block", "in_channels": 4, "width": 3})");
  EXPECT_NE(message.find("test.json: layer 'block'"), std::string::npos) << message;
  EXPECT_NE(message.find("width"), std::string::npos) << message;
  message = message_for(R"({"name": "block", "kind": "residual_block", "out_channels": 4})");
  EXPECT_NE(message.find("'block'"), std::string::npos) << message;
  EXPECT_NE(message.find("in_channels"), std::string::npos) << message;
  message = message_for(R"({"name": "block", "kind": "residual_block", "in_channels": 4, "stride": 0})");
  EXPECT_NE(message.find("stride"), std::string::npos) << message;
  EXPECT_NE(message.find("0"), std::string::npos) << message;
  message = message_for(R"({"name": "block", "kind": "residual_block", "in_channels": 4, "inputs": ["input", "input"]})");
  EXPECT_NE(message.find("field 'inputs'"), std::string::npos) << message;
  EXPECT_NE(message.find("residual_block takes one input"), std::string::npos) << message;
}

TEST(ModelSpec, AResNetSpecNamesItsLayersAsPyTorchDoes) {
  const Json spec = resnet_spec(std::vector<std::int64_t>{3, 32, 32}, 2, 100);
  EXPECT_EQ(spec["input"], Json::parse("[3, 32, 32]"));
  std::vector<std::string> names;
  for (const Json& layer : spec["layers"]) names.push_back(layer["name"].get<std::string>() + ":" + layer["kind"].get<std::string>());
  EXPECT_EQ(names, (std::vector<std::string>{
                       "stem.conv:conv2d", "stem.bn:batch_norm2d", "stem.relu:relu", "stage1.block1:residual_block",
                       "stage1.block2:residual_block", "stage2.block1:residual_block", "stage2.block2:residual_block",
                       "stage3.block1:residual_block", "stage3.block2:residual_block", "pool:global_avg_pool",
                       "head:linear"}));
  EXPECT_EQ(spec["layers"][0]["in_channels"], 3);
  EXPECT_EQ(spec["layers"][3]["stride"], 1);
  EXPECT_EQ(spec["layers"][5]["stride"], 2);
  EXPECT_EQ(spec["layers"][5]["in_channels"], 16);
  EXPECT_EQ(spec["layers"][5]["out_channels"], 32);
  EXPECT_EQ(spec["layers"][6]["stride"], 1);
  EXPECT_EQ(spec["layers"][7]["stride"], 2);
  EXPECT_EQ(spec["layers"][10]["out_features"], 100);
  EXPECT_EQ(builtin_model_spec("resnet"), resnet_spec(std::vector<std::int64_t>{1, 28, 28}, 3, 10));
}

TEST(ModelSpec, AResNetSpecRefusesBadArguments) {
  auto message_for = [](std::vector<std::int64_t> input, std::int64_t blocks, std::int64_t classes) {
    try {
      resnet_spec(input, blocks, classes);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message_for({28, 28}, 3, 10).find("input: expected one image's shape (channels, height, width), found (28, 28)"),
            std::string::npos);
  EXPECT_NE(message_for({1, 0, 28}, 3, 10).find("found (1, 0, 28)"), std::string::npos);
  EXPECT_NE(message_for({1, 28, 28}, 0, 10).find("blocks per stage must be positive, found 0"), std::string::npos);
  EXPECT_NE(message_for({1, 28, 28}, 3, 0).find("classes must be positive, found 0"), std::string::npos);
}

// Needs the batch_norm2d and global_avg_pool layers.
TEST(ModelSpec, AResNetBuildsForAnyImageShape) {
  const Graph builtin = graph_from_spec(builtin_model_spec("resnet"));
  EXPECT_EQ(builtin.value_shape(builtin.find("stem.relu")->output), (Shape{1, 16, 28, 28}));
  EXPECT_EQ(builtin.value_shape(builtin.find("stage1.block3")->output), (Shape{1, 16, 28, 28}));
  EXPECT_EQ(builtin.value_shape(builtin.find("stage2.block1")->output), (Shape{1, 32, 14, 14}));
  EXPECT_EQ(builtin.value_shape(builtin.find("stage3.block3")->output), (Shape{1, 64, 7, 7}));
  EXPECT_EQ(builtin.value_shape(builtin.output()), (Shape{1, 10}));
  // PyTorch's ResNet(3) of tests/pytorch/ember_models.py: 272186 parameters (buffers aside).
  EXPECT_EQ(ParameterStore(builtin).parameter_count(), 272186);

  const Graph colour = graph_from_spec(resnet_spec(std::vector<std::int64_t>{3, 32, 32}, 1, 100));
  EXPECT_EQ(colour.value_shape(colour.find("stage3.block1")->output), (Shape{1, 64, 8, 8}));
  EXPECT_EQ(colour.value_shape(colour.output()), (Shape{1, 100}));
  // Odd sizes: a stride-2 3x3 with padding 1 takes n to ceil(n / 2), as its 1x1 projection does.
  const Graph odd = graph_from_spec(resnet_spec(std::vector<std::int64_t>{2, 17, 23}, 1, 10));
  EXPECT_EQ(odd.value_shape(odd.find("stage2.block1")->output), (Shape{1, 32, 9, 12}));
  EXPECT_EQ(odd.value_shape(odd.find("stage3.block1")->output), (Shape{1, 64, 5, 6}));
  EXPECT_EQ(odd.value_shape(odd.output()), (Shape{1, 10}));
}

// The tensors of a resnet, parameters and buffers, are named as PyTorch names the same
// model's state_dict (ResNet(1) of tests/pytorch/ember_models.py, listed by PyTorch), so a
// checkpoint and a state_dict map one to one. Needs the batch_norm2d and global_avg_pool layers.
TEST(ModelSpec, AResNetsTensorsAreNamedAsPyTorchsStateDict) {
  const Graph graph = graph_from_spec(resnet_spec(std::vector<std::int64_t>{1, 28, 28}, 1, 10));
  const ParameterStore store(graph);
  std::vector<std::string> names;
  for (const ParameterEntry& e : store.entries()) names.push_back(e.name);
  for (const ParameterEntry& e : store.buffer_entries()) names.push_back(e.name);
  std::vector<std::string> state_dict{
      "stem.conv.weight", "stem.bn.weight", "stem.bn.bias", "stem.bn.running_mean", "stem.bn.running_var",
      "stem.bn.num_batches_tracked", "stage1.block1.conv1.weight", "stage1.block1.bn1.weight",
      "stage1.block1.bn1.bias", "stage1.block1.bn1.running_mean", "stage1.block1.bn1.running_var",
      "stage1.block1.bn1.num_batches_tracked", "stage1.block1.conv2.weight", "stage1.block1.bn2.weight",
      "stage1.block1.bn2.bias", "stage1.block1.bn2.running_mean", "stage1.block1.bn2.running_var",
      "stage1.block1.bn2.num_batches_tracked", "stage2.block1.conv1.weight", "stage2.block1.bn1.weight",
      "stage2.block1.bn1.bias", "stage2.block1.bn1.running_mean", "stage2.block1.bn1.running_var",
      "stage2.block1.bn1.num_batches_tracked", "stage2.block1.conv2.weight", "stage2.block1.bn2.weight",
      "stage2.block1.bn2.bias", "stage2.block1.bn2.running_mean", "stage2.block1.bn2.running_var",
      "stage2.block1.bn2.num_batches_tracked", "stage2.block1.shortcut.conv.weight",
      "stage2.block1.shortcut.bn.weight", "stage2.block1.shortcut.bn.bias", "stage2.block1.shortcut.bn.running_mean",
      "stage2.block1.shortcut.bn.running_var", "stage2.block1.shortcut.bn.num_batches_tracked",
      "stage3.block1.conv1.weight", "stage3.block1.bn1.weight", "stage3.block1.bn1.bias",
      "stage3.block1.bn1.running_mean", "stage3.block1.bn1.running_var", "stage3.block1.bn1.num_batches_tracked",
      "stage3.block1.conv2.weight", "stage3.block1.bn2.weight", "stage3.block1.bn2.bias",
      "stage3.block1.bn2.running_mean", "stage3.block1.bn2.running_var", "stage3.block1.bn2.num_batches_tracked",
      "stage3.block1.shortcut.conv.weight", "stage3.block1.shortcut.bn.weight", "stage3.block1.shortcut.bn.bias",
      "stage3.block1.shortcut.bn.running_mean", "stage3.block1.shortcut.bn.running_var",
      "stage3.block1.shortcut.bn.num_batches_tracked", "head.weight", "head.bias"};
  std::sort(names.begin(), names.end());
  std::sort(state_dict.begin(), state_dict.end());
  EXPECT_EQ(names, state_dict);
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
