#pragma once
// The JSON model spec: a model as data, so it can be written by hand, stored in a
// checkpoint and rebuilt exactly.
//
//   {
//     "format": "ember.model", "version": 1, "name": "seed-cnn",
//     "input": [1, 28, 28],                      // one sample's shape
//     "layers": [
//       {"name": "conv1", "kind": "conv2d", "in_channels": 1, "out_channels": 32, "kernel": 3, "padding": 1},
//       {"name": "relu1", "kind": "relu"},        // "inputs" defaults to the previous layer
//       {"name": "sum", "kind": "add", "inputs": ["a", "b"]},
//       ...
//     ],
//     "output": "fc2"                            // optional: defaults to the last layer
//   }
//
// Every other key of a layer object is that layer's option.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/graph.h"

namespace ember {

// Builds the graph; errors name the layer (by name and index) and the field.
// `source` names where the spec came from, for messages ("model.json", "checkpoint x").
Graph graph_from_spec(const Json& spec, std::string_view source = "model spec");
// The spec of a graph; graph_from_spec(spec_from_graph(g, name)) rebuilds g exactly.
Json spec_from_graph(const Graph& graph, std::string_view name);

// The loss a spec trains with (engine/loss.h make_loss): its "loss" field, else
// default_loss_name. graph_from_spec has checked that the field is a string.
inline constexpr const char* default_loss_name = "cross_entropy";
std::string spec_loss_name(const Json& spec);

// Built-in models by name ("seed-cnn", "lenet", "attn-cnn", "attention-mse", "resnet");
// throws listing the known names.
Json builtin_model_spec(std::string_view name);
std::vector<std::string> builtin_model_names();

// A CIFAR-style ResNet (He et al. 2016, section 4.2) for images of shape `input`
// (channels, height, width), any channel count and size: a 3x3 stem (conv without bias,
// batch_norm2d, relu) to 16 channels, three stages of `blocks_per_stage` residual_blocks
// (layers/residual_block.h) with 16, 32 and 64 channels, the second and third starting
// with a stride-2 block, global_avg_pool and a Linear to `classes`. Layer names are
// "stem.conv", "stage2.block1", ..., "pool", "head" (PyTorch's names in
// tests/pytorch/ember_models.py). The built-in "resnet" is resnet_spec({1, 28, 28}, 3, 10):
// ResNet-20 for Fashion-MNIST.
Json resnet_spec(std::span<const std::int64_t> input, std::int64_t blocks_per_stage, std::int64_t classes);

// A built-in name, or a path to a JSON spec file.
Json load_model_spec(std::string_view name_or_path);

}  // namespace ember
