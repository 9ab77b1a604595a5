#include "engine/model_spec.h"

#include <fstream>
#include <map>
#include <sstream>

#include "engine/error.h"
#include "engine/json_text.h"
#include "engine/text.h"
#include "layers/registry.h"
#include "layers/residual_block.h"
#include "layers/transformer_encoder_block.h"

namespace ember {
namespace {

constexpr int spec_version = 1;

std::string where(std::string_view source, std::size_t index, const Json& layer) {
  std::string text = std::string(source) + ": layer ";
  if (layer.is_object() && layer.contains("name") && layer["name"].is_string()) {
    text += '\'';
    text += layer["name"].get_ref<const std::string&>();
    text += '\'';
  } else {
    text += '#';
    text += std::to_string(index);
  }
  return text;
}

using ExpandComposite = std::vector<Json> (*)(const std::string& name, const std::string& input, const Json& options);

// The expansion of a composite kind, or null for a layer kind.
ExpandComposite composite_expansion(const Json& layer) {
  if (!layer.is_object() || !layer.contains("kind")) return nullptr;
  if (layer["kind"] == transformer_encoder_block_kind) return expand_transformer_encoder_block;
  if (layer["kind"] == residual_block_kind) return expand_residual_block;
  return nullptr;
}

// Composite kinds (a transformer encoder block, a residual block) become the layers they
// are made of.
Json expand_composites(const Json& layers, std::string_view source) {
  Json expanded = Json::array();
  std::string previous = "input";
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const Json& layer = layers[i];
    const ExpandComposite expand = composite_expansion(layer);
    if (expand == nullptr) {
      expanded.push_back(layer);
      if (layer.is_object() && layer.contains("name") && layer["name"].is_string()) previous = layer["name"];
      continue;
    }
    const std::string at = where(source, i, layer);
    if (!layer.contains("name") || !layer["name"].is_string()) throw Error(at + ": field 'name' is missing or not a string");
    std::string input = previous;
    if (layer.contains("inputs")) {
      if (!layer["inputs"].is_array() || layer["inputs"].size() != 1 || !layer["inputs"][0].is_string()) {
        throw Error(at + ": field 'inputs': a " + layer["kind"].get<std::string>() + " takes one input, found " +
                    layer["inputs"].dump());
      }
      input = layer["inputs"][0];
    }
    Json options = layer;
    options.erase("name");
    options.erase("kind");
    options.erase("inputs");
    try {
      for (Json& part : expand(layer["name"], input, options)) expanded.push_back(std::move(part));
    } catch (const Error& e) {
      throw Error(at + ": " + e.what());
    }
    previous = layer["name"];
  }
  return expanded;
}

Graph graph_from_checked_spec(const Json& spec, std::string_view source) {
  const std::string src(source);
  if (!spec.is_object()) throw Error(src + ": expected a JSON object, found " + std::string(spec.type_name()));
  // Read as strings by the trainer and the CLI (the model's name, its loss, its data).
  for (const char* key : {"name", "loss", "data"}) {
    if (spec.contains(key) && !spec[key].is_string()) {
      throw Error(src + ": field '" + key + "': expected a string, found " + spec[key].dump());
    }
  }
  if (spec.contains("format") && spec["format"] != "ember.model") {
    throw Error(src + ": field 'format': expected \"ember.model\", found " + spec["format"].dump());
  }
  if (spec.contains("version")) {
    if (!spec["version"].is_number_integer() || spec["version"].get<int>() != spec_version) {
      throw Error(src + ": field 'version': this ember reads version " + std::to_string(spec_version) + ", found " +
                  spec["version"].dump());
    }
  }
  if (!spec.contains("input") || !spec["input"].is_array() || spec["input"].empty()) {
    throw Error(src + ": field 'input': expected one sample's shape, e.g. [1, 28, 28], found " +
                (spec.contains("input") ? spec["input"].dump() : std::string("nothing")));
  }
  std::vector<std::int64_t> dims;
  for (const Json& d : spec["input"]) {
    if (!d.is_number_integer() || d.get<std::int64_t>() <= 0 || d.get<std::int64_t>() > Shape::max_dimension) {
      throw Error(src + ": field 'input': dimensions must be positive integers up to " + std::to_string(Shape::max_dimension) +
                  ", found " + spec["input"].dump());
    }
    dims.push_back(d.get<std::int64_t>());
  }
  Graph graph{Shape(std::span<const std::int64_t>(dims))};

  if (!spec.contains("layers") || !spec["layers"].is_array() || spec["layers"].empty()) {
    throw Error(src + ": field 'layers': expected a non-empty array of layers");
  }
  std::map<std::string, ValueId> values{{"input", graph.input()}};
  ValueId previous = graph.input();
  const Json layers = expand_composites(spec["layers"], source);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const Json& layer = layers[i];
    const std::string at = where(source, i, layer);
    if (!layer.is_object()) throw Error(at + ": expected a JSON object, found " + std::string(layer.type_name()));
    if (!layer.contains("name") || !layer["name"].is_string()) throw Error(at + ": field 'name' is missing or not a string");
    if (!layer.contains("kind") || !layer["kind"].is_string()) throw Error(at + ": field 'kind' is missing or not a string");
    const std::string name = layer["name"];
    const std::string kind = layer["kind"];

    std::vector<ValueId> inputs;
    if (layer.contains("inputs")) {
      if (!layer["inputs"].is_array()) throw Error(at + ": field 'inputs': expected an array of layer names");
      for (const Json& input : layer["inputs"]) {
        if (!input.is_string()) throw Error(at + ": field 'inputs': expected layer names, found " + input.dump());
        auto it = values.find(input.get<std::string>());
        if (it == values.end()) {
          throw Error(at + ": input '" + input.get<std::string>() + "' is not 'input' or an earlier layer");
        }
        inputs.push_back(it->second);
      }
    } else {
      inputs.push_back(previous);
    }

    Json options = layer;
    options.erase("name");
    options.erase("kind");
    options.erase("inputs");
    std::unique_ptr<Layer> built;
    try {
      built = make_layer(kind, options);
    } catch (const Error& e) {
      throw Error(at + ": " + e.what());
    }
    try {
      previous = graph.add(name, std::move(built), inputs);
    } catch (const Error& e) {
      throw Error(src + ": " + e.what());  // Graph::add names the layer and its kind
    }
    values[name] = previous;
  }
  if (spec.contains("output")) {
    if (!spec["output"].is_string()) throw Error(src + ": field 'output': expected a layer name");
    auto it = values.find(spec["output"].get<std::string>());
    if (it == values.end()) throw Error(src + ": field 'output': no layer named '" + spec["output"].get<std::string>() + "'");
    graph.set_output(it->second);
  }
  return graph;
}

}  // namespace

Graph graph_from_spec(const Json& spec, std::string_view source) {
  // Every field is checked above; this catches what a check missed, so a spec can never
  // end a caller that handles ember::Error with another exception type.
  try {
    return graph_from_checked_spec(spec, source);
  } catch (const Json::exception& e) {
    throw Error(std::string(source) + ": " + e.what());
  }
}

std::string spec_loss_name(const Json& spec) { return spec.value("loss", std::string(default_loss_name)); }

Json spec_from_graph(const Graph& graph, std::string_view name) {
  Json spec;
  spec["format"] = "ember.model";
  spec["version"] = spec_version;
  spec["name"] = std::string(name);
  spec["input"] = Json::array();
  for (std::int64_t d : graph.input_sample_shape().dims()) spec["input"].push_back(d);
  spec["layers"] = Json::array();
  ValueId previous = graph.input();
  for (const Node& node : graph.nodes()) {
    Json layer = node.layer->options();
    layer["name"] = node.name;
    layer["kind"] = std::string(node.layer->kind());
    if (!(node.inputs.size() == 1 && node.inputs[0] == previous)) {
      layer["inputs"] = Json::array();
      for (ValueId v : node.inputs) {
        layer["inputs"].push_back(v == graph.input() ? std::string("input") : graph.nodes()[graph.producer(v)].name);
      }
    }
    spec["layers"].push_back(std::move(layer));
    previous = node.output;
  }
  if (graph.output() != previous) spec["output"] = graph.nodes()[graph.producer(graph.output())].name;
  return spec;
}

namespace {

// The tutorial's CNN, with the shape bug fixed: on 28x28 Fashion-MNIST one 2x2 pool
// leaves 14x14, so the first Linear sees 32*14*14 = 6272 features, not 32*8*8.
const char* const seed_cnn = R"({
  "format": "ember.model", "version": 1, "name": "seed-cnn",
  "input": [1, 28, 28],
  "layers": [
    {"name": "conv1", "kind": "conv2d", "in_channels": 1, "out_channels": 32, "kernel": 3, "padding": 1},
    {"name": "relu1", "kind": "relu"},
    {"name": "pool1", "kind": "max_pool2d", "kernel": 2},
    {"name": "flatten", "kind": "flatten"},
    {"name": "fc1", "kind": "linear", "in_features": 6272, "out_features": 128},
    {"name": "relu2", "kind": "relu"},
    {"name": "fc2", "kind": "linear", "in_features": 128, "out_features": 10}
  ]
})";

// LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, on 32x32 inputs: 28x28
// images are zero-padded by 2, as in the original paper.
const char* const lenet = R"({
  "format": "ember.model", "version": 1, "name": "lenet",
  "input": [1, 32, 32],
  "layers": [
    {"name": "conv1", "kind": "conv2d", "in_channels": 1, "out_channels": 6, "kernel": 5},
    {"name": "relu1", "kind": "relu"},
    {"name": "pool1", "kind": "max_pool2d", "kernel": 2},
    {"name": "conv2", "kind": "conv2d", "in_channels": 6, "out_channels": 16, "kernel": 5},
    {"name": "relu2", "kind": "relu"},
    {"name": "pool2", "kind": "max_pool2d", "kernel": 2},
    {"name": "flatten", "kind": "flatten"},
    {"name": "fc1", "kind": "linear", "in_features": 400, "out_features": 120},
    {"name": "relu3", "kind": "relu"},
    {"name": "fc2", "kind": "linear", "in_features": 120, "out_features": 84},
    {"name": "relu4", "kind": "relu"},
    {"name": "fc3", "kind": "linear", "in_features": 84, "out_features": 10}
  ]
})";

// Convolution then attention: two conv blocks (two 3x3 convolutions at 28x28, one at
// 14x14) turn a 28x28 image into a 7x7 map of 64 features, read as 49 tokens with a
// learned position each, then two pre-norm transformer
// encoder blocks (d 64, 4 heads), a final LayerNorm, the mean over tokens and a classifier.
const char* const attn_cnn = R"({
  "format": "ember.model", "version": 1, "name": "attn-cnn",
  "input": [1, 28, 28],
  "layers": [
    {"name": "conv1", "kind": "conv2d", "in_channels": 1, "out_channels": 32, "kernel": 3, "padding": 1},
    {"name": "relu1", "kind": "relu"},
    {"name": "conv2", "kind": "conv2d", "in_channels": 32, "out_channels": 32, "kernel": 3, "padding": 1},
    {"name": "relu2", "kind": "relu"},
    {"name": "pool1", "kind": "max_pool2d", "kernel": 2},
    {"name": "conv3", "kind": "conv2d", "in_channels": 32, "out_channels": 64, "kernel": 3, "padding": 1},
    {"name": "relu3", "kind": "relu"},
    {"name": "pool2", "kind": "max_pool2d", "kernel": 2},
    {"name": "tokens", "kind": "tokens_from_feature_map"},
    {"name": "position", "kind": "positional_embedding", "tokens": 49, "features": 64},
    {"name": "block1", "kind": "transformer_encoder_block", "d_model": 64, "heads": 4, "mlp_hidden": 128},
    {"name": "block2", "kind": "transformer_encoder_block", "d_model": 64, "heads": 4, "mlp_hidden": 128},
    {"name": "norm", "kind": "layer_norm", "features": 64},
    {"name": "pool", "kind": "mean_pool_tokens"},
    {"name": "classifier", "kind": "linear", "in_features": 64, "out_features": 10}
  ]
})";

// The tutorial's attention example with its shape bugs fixed, trained with MSE on the
// synthetic attention-retrieval task (engine/synthetic_task.h): each of 16 tokens is
// embedded, attention pooling scores the tokens and takes their softmax-weighted sum,
// and a Linear maps it to the 4 target values.
const char* const attention_mse = R"({
  "format": "ember.model", "version": 1, "name": "attention-mse",
  "input": [16, 8], "loss": "mse", "data": "attention-retrieval",
  "layers": [
    {"name": "embed", "kind": "linear", "in_features": 8, "out_features": 32},
    {"name": "attention", "kind": "attention_pool", "features": 32},
    {"name": "head", "kind": "linear", "in_features": 32, "out_features": 4}
  ]
})";

// The built-in resnet: ResNet-20 (three residual blocks per stage) for Fashion-MNIST.
Json builtin_resnet() { return resnet_spec(std::vector<std::int64_t>{1, 28, 28}, 3, 10); }

using BuiltinSpec = Json (*)();

const std::map<std::string, BuiltinSpec, std::less<>>& builtins() {
  static const std::map<std::string, BuiltinSpec, std::less<>> table{
      {"seed-cnn", [] { return Json::parse(seed_cnn); }},
      {"lenet", [] { return Json::parse(lenet); }},
      {"attn-cnn", [] { return Json::parse(attn_cnn); }},
      {"attention-mse", [] { return Json::parse(attention_mse); }},
      {"resnet", builtin_resnet}};
  return table;
}

}  // namespace

Json resnet_spec(std::span<const std::int64_t> input, std::int64_t blocks_per_stage, std::int64_t classes) {
  std::string shape;
  for (std::int64_t d : input) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
  if (input.size() != 3) {
    throw Error("resnet: input: expected one image's shape (channels, height, width), found (" + shape + ")");
  }
  for (std::int64_t d : input) {
    if (d < 1 || d > Shape::max_dimension) {
      throw Error("resnet: input: dimensions must be positive integers up to " + std::to_string(Shape::max_dimension) +
                  ", found (" + shape + ")");
    }
  }
  if (blocks_per_stage < 1) throw Error("resnet: blocks per stage must be positive, found " + std::to_string(blocks_per_stage));
  if (classes < 1) throw Error("resnet: classes must be positive, found " + std::to_string(classes));
  Json layers = Json::array();
  layers.push_back({{"name", "stem.conv"}, {"kind", "conv2d"}, {"in_channels", input[0]}, {"out_channels", 16},
                    {"kernel", 3}, {"padding", 1}, {"bias", false}});
  layers.push_back({{"name", "stem.bn"}, {"kind", "batch_norm2d"}, {"num_features", 16}});
  layers.push_back({{"name", "stem.relu"}, {"kind", "relu"}});
  std::int64_t channels = 16;
  const std::int64_t widths[] = {16, 32, 64};
  for (int stage = 0; stage < 3; ++stage) {
    for (std::int64_t block = 0; block < blocks_per_stage; ++block) {
      // The second and third stages halve the resolution in their first block.
      const std::int64_t stride = stage > 0 && block == 0 ? 2 : 1;
      layers.push_back({{"name", "stage" + std::to_string(stage + 1) + ".block" + std::to_string(block + 1)},
                        {"kind", residual_block_kind}, {"in_channels", channels}, {"out_channels", widths[stage]},
                        {"stride", stride}});
      channels = widths[stage];
    }
  }
  layers.push_back({{"name", "pool"}, {"kind", "global_avg_pool"}});
  layers.push_back({{"name", "head"}, {"kind", "linear"}, {"in_features", channels}, {"out_features", classes}});
  Json spec{{"format", "ember.model"}, {"version", spec_version}, {"name", "resnet"}, {"input", Json::array()}, {"layers", layers}};
  for (std::int64_t d : input) spec["input"].push_back(d);
  return spec;
}

std::vector<std::string> builtin_model_names() {
  std::vector<std::string> names;
  for (const auto& [name, make] : builtins()) names.push_back(name);
  return names;
}

Json builtin_model_spec(std::string_view name) {
  auto it = builtins().find(name);
  if (it == builtins().end()) {
    throw Error("unknown model '" + std::string(name) + "'; built-in models: " + join(builtin_model_names()) +
                " (or a path to a JSON spec)");
  }
  return it->second();
}

Json load_model_spec(std::string_view name_or_path) {
  if (builtins().find(name_or_path) != builtins().end()) return builtin_model_spec(name_or_path);
  const std::string path(name_or_path);
  if (path.find('/') == std::string::npos && path.find(".json") == std::string::npos) {
    return builtin_model_spec(name_or_path);  // throws with the list of known names
  }
  std::ifstream file(path);
  if (!file) throw Error(path + ": cannot open model spec");
  std::stringstream text;
  text << file.rdbuf();
  return parse_json(text.str(), path);
}

}  // namespace ember
