#pragma once
// The models the ONNX tests export: every built-in model and two specs that between them
// use every layer kind (and the options that change the export: GELU's tanh form, causal
// and bias-free attention, average pooling without padding counts, BatchNorm1d, a Linear
// without bias), with weights from a seed and BatchNorm statistics and norm affines drawn
// at random, so that no layer is an identity.
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/model_spec.h"
#include "engine/parameters.h"

namespace ember::testing {

inline const char* const every_layer_kind_spec = R"({
  "format": "ember.model", "version": 1, "name": "every-kind",
  "input": [3, 12, 12],
  "layers": [
    {"name": "conv1", "kind": "conv2d", "in_channels": 3, "out_channels": 8, "kernel": 3, "padding": 1},
    {"name": "bn1", "kind": "batch_norm2d", "num_features": 8},
    {"name": "relu1", "kind": "relu"},
    {"name": "avg", "kind": "avg_pool2d", "kernel": 3, "stride": 2, "padding": 1, "count_include_pad": false},
    {"name": "conv2", "kind": "conv2d", "in_channels": 8, "out_channels": 8, "kernel": 3, "padding": 1, "bias": false},
    {"name": "sum", "kind": "add", "inputs": ["conv2", "avg"]},
    {"name": "gelu_tanh", "kind": "gelu", "approximate": "tanh"},
    {"name": "pool", "kind": "max_pool2d", "kernel": 2},
    {"name": "tokens", "kind": "tokens_from_feature_map"},
    {"name": "position", "kind": "positional_embedding", "tokens": 9, "features": 8},
    {"name": "norm", "kind": "layer_norm", "features": 8, "eps": 1e-4},
    {"name": "causal", "kind": "multi_head_attention", "d_model": 8, "heads": 2, "causal": true},
    {"name": "plain", "kind": "multi_head_attention", "d_model": 8, "heads": 4, "bias": false},
    {"name": "drop", "kind": "dropout", "p": 0.25},
    {"name": "mlp", "kind": "linear", "in_features": 8, "out_features": 8},
    {"name": "gelu", "kind": "gelu"},
    {"name": "attend", "kind": "attention_pool", "features": 8},
    {"name": "mean", "kind": "mean_pool_tokens", "inputs": ["position"]},
    {"name": "pooled", "kind": "add", "inputs": ["attend", "mean"]},
    {"name": "head", "kind": "linear", "in_features": 8, "out_features": 6, "bias": false},
    {"name": "bn2", "kind": "batch_norm1d", "num_features": 6},
    {"name": "probabilities", "kind": "softmax"}
  ]
})";

inline const char* const residual_spec = R"({
  "format": "ember.model", "version": 1, "name": "residual",
  "input": [2, 8, 8],
  "layers": [
    {"name": "stem", "kind": "conv2d", "in_channels": 2, "out_channels": 4, "kernel": 3, "padding": 1},
    {"name": "block", "kind": "residual_block", "in_channels": 4, "out_channels": 8, "stride": 2},
    {"name": "same", "kind": "residual_block", "in_channels": 8},
    {"name": "gap", "kind": "global_avg_pool"},
    {"name": "copy", "kind": "flatten"},
    {"name": "out", "kind": "linear", "in_features": 8, "out_features": 3}
  ]
})";

struct TestModel {
  std::string name;
  std::unique_ptr<Graph> graph;
  std::unique_ptr<ParameterStore> parameters;
};

// Weights from PyTorch's initialization with seed 7; parameters that start as zeros or
// ones (biases, norm affines) and the running statistics drawn instead.
inline TestModel make_test_model(const std::string& name, const Json& spec) {
  TestModel model{name, std::make_unique<Graph>(graph_from_spec(spec, name)), nullptr};
  model.parameters = std::make_unique<ParameterStore>(*model.graph);
  model.parameters->initialize(7);
  std::mt19937 random(11);
  std::uniform_real_distribution<float> spread(-0.3f, 0.3f);
  for (int i = 0; i < static_cast<int>(model.parameters->entries().size()); ++i) {
    const ParameterEntry& e = model.parameters->entries()[static_cast<std::size_t>(i)];
    if (e.spec.init != Init::zeros && e.spec.init != Init::ones) continue;
    Tensor t = model.parameters->value(i);
    for (std::int64_t k = 0; k < e.spec.shape.elements(); ++k) t.data[k] += spread(random);
  }
  for (int i = 0; i < static_cast<int>(model.parameters->buffer_entries().size()); ++i) {
    const ParameterEntry& e = model.parameters->buffer_entries()[static_cast<std::size_t>(i)];
    if (e.spec.name == "num_batches_tracked") continue;
    Tensor t = model.parameters->buffer(i);
    for (std::int64_t k = 0; k < e.spec.shape.elements(); ++k) t.data[k] += spread(random);  // var stays >= 0.7
  }
  return model;
}

inline std::vector<TestModel> all_test_models() {
  std::vector<TestModel> models;
  for (const std::string& name : builtin_model_names()) models.push_back(make_test_model(name, builtin_model_spec(name)));
  models.push_back(make_test_model("every-kind", Json::parse(every_layer_kind_spec)));
  models.push_back(make_test_model("residual", Json::parse(residual_spec)));
  return models;
}

// A fixed input batch: normal values from `seed`.
inline std::vector<float> test_input(const Graph& graph, std::int64_t batch, unsigned seed = 3) {
  std::mt19937 random(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> input(static_cast<std::size_t>(batch * graph.input_sample_shape().elements()));
  for (float& x : input) x = normal(random);
  return input;
}

}  // namespace ember::testing
