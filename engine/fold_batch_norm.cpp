#include "engine/fold_batch_norm.h"

#include <cmath>
#include <cstring>

#include "engine/error.h"
#include "layers/registry.h"

namespace ember {
namespace {

// For each node, the batch_norm2d node folded into it (or -1), and which nodes vanish.
struct FoldPlan {
  std::vector<int> batch_norm_of;
  std::vector<char> removed;
};

FoldPlan plan_folds(const Graph& graph) {
  const std::vector<Node>& nodes = graph.nodes();
  std::vector<int> readers(static_cast<std::size_t>(graph.value_count()), 0);
  for (const Node& node : nodes) {
    for (ValueId v : node.inputs) ++readers[static_cast<std::size_t>(v)];
  }
  ++readers[static_cast<std::size_t>(graph.output())];  // the model's output is read too
  FoldPlan plan{std::vector<int>(nodes.size(), -1), std::vector<char>(nodes.size(), 0)};
  for (std::size_t n = 0; n < nodes.size(); ++n) {
    const Node& node = nodes[n];
    if (node.layer->kind() != "batch_norm2d" || node.inputs.size() != 1) continue;
    const Json options = node.layer->options();
    if (!options.value("track_running_stats", false)) continue;
    const ValueId source = node.inputs[0];
    const int producer = graph.producer(source);
    if (producer < 0 || nodes[static_cast<std::size_t>(producer)].layer->kind() != "conv2d") continue;
    if (readers[static_cast<std::size_t>(source)] != 1) continue;
    plan.batch_norm_of[static_cast<std::size_t>(producer)] = static_cast<int>(n);
    plan.removed[n] = 1;
  }
  return plan;
}

void copy_tensor(Tensor to, const Tensor& from, const std::string& name) {
  if (to.elements() != from.elements()) {
    throw Error("fold_batch_norm: tensor '" + name + "' has " + std::to_string(to.elements()) + " elements, expected " +
                std::to_string(from.elements()));
  }
  std::memcpy(to.data, from.data, static_cast<std::size_t>(from.elements()) * sizeof(float));
}

// W' = W s, b' = (b - mean) s + beta into the folded conv's entries.
void fold_values(const Graph& graph, const ParameterStore& source, int conv, int batch_norm, ParameterStore& target, int target_node) {
  const Json options = graph.nodes()[static_cast<std::size_t>(batch_norm)].layer->options();
  const double eps = options.at("eps").get<double>();
  const bool affine = options.at("affine").get<bool>();
  const std::span<const int> conv_entries = source.node_entries(conv);
  const std::span<const int> bn_entries = source.node_entries(batch_norm);
  const std::span<const int> bn_buffers = source.node_buffer_entries(batch_norm);
  const Tensor weight = source.value(conv_entries[0]);
  const float* bias = conv_entries.size() > 1 ? source.value(conv_entries[1]).data : nullptr;
  const float* gamma = affine ? source.value(bn_entries[0]).data : nullptr;
  const float* beta = affine ? source.value(bn_entries[1]).data : nullptr;
  const float* mean = source.buffer(bn_buffers[0]).data;
  const float* var = source.buffer(bn_buffers[1]).data;

  const std::span<const int> folded = target.node_entries(target_node);
  Tensor folded_weight = target.value(folded[0]);
  Tensor folded_bias = target.value(folded[1]);
  const std::int64_t outputs = weight.shape[0];
  const std::int64_t per_output = weight.elements() / outputs;
  for (std::int64_t o = 0; o < outputs; ++o) {
    const double s = (gamma != nullptr ? gamma[o] : 1.0) / std::sqrt(static_cast<double>(var[o]) + eps);
    for (std::int64_t i = 0; i < per_output; ++i) {
      folded_weight.data[o * per_output + i] = static_cast<float>(weight.data[o * per_output + i] * s);
    }
    const double b = bias != nullptr ? bias[o] : 0.0;
    folded_bias.data[o] = static_cast<float>((b - mean[o]) * s + (beta != nullptr ? beta[o] : 0.0));
  }
}

}  // namespace

FoldedModel fold_batch_norm(const Graph& graph, const ParameterStore& parameters) {
  const FoldPlan plan = plan_folds(graph);
  const std::vector<Node>& nodes = graph.nodes();
  Graph folded_graph(graph.input_sample_shape());
  std::vector<ValueId> value_map(static_cast<std::size_t>(graph.value_count()), -1);
  value_map[0] = folded_graph.input();
  std::vector<int> new_node(nodes.size(), -1);  // old node -> its node in the folded graph
  std::vector<std::pair<std::string, std::string>> folded_names;
  for (std::size_t n = 0; n < nodes.size(); ++n) {
    const Node& node = nodes[n];
    if (plan.removed[n]) {
      // Its readers read the conv it was folded into.
      value_map[static_cast<std::size_t>(node.output)] = value_map[static_cast<std::size_t>(node.inputs[0])];
      continue;
    }
    Json options = node.layer->options();
    if (plan.batch_norm_of[n] >= 0) {
      options["bias"] = true;
      folded_names.emplace_back(node.name, nodes[static_cast<std::size_t>(plan.batch_norm_of[n])].name);
    }
    std::vector<ValueId> inputs;
    for (ValueId v : node.inputs) inputs.push_back(value_map[static_cast<std::size_t>(v)]);
    value_map[static_cast<std::size_t>(node.output)] = folded_graph.add(node.name, make_layer(node.layer->kind(), options), inputs);
    new_node[n] = static_cast<int>(folded_graph.nodes().size()) - 1;
  }
  folded_graph.set_output(value_map[static_cast<std::size_t>(graph.output())]);

  ParameterStore folded_parameters(folded_graph);
  for (std::size_t n = 0; n < nodes.size(); ++n) {
    if (new_node[n] < 0) continue;
    if (plan.batch_norm_of[n] >= 0) {
      fold_values(graph, parameters, static_cast<int>(n), plan.batch_norm_of[n], folded_parameters, new_node[n]);
      continue;
    }
    const std::span<const int> from = parameters.node_entries(static_cast<int>(n));
    const std::span<const int> to = folded_parameters.node_entries(new_node[n]);
    for (std::size_t i = 0; i < from.size(); ++i) {
      copy_tensor(folded_parameters.value(to[i]), parameters.value(from[i]), parameters.entries()[static_cast<std::size_t>(from[i])].name);
    }
    const std::span<const int> from_buffers = parameters.node_buffer_entries(static_cast<int>(n));
    const std::span<const int> to_buffers = folded_parameters.node_buffer_entries(new_node[n]);
    for (std::size_t i = 0; i < from_buffers.size(); ++i) {
      copy_tensor(folded_parameters.buffer(to_buffers[i]), parameters.buffer(from_buffers[i]),
                  parameters.buffer_entries()[static_cast<std::size_t>(from_buffers[i])].name);
    }
  }
  return FoldedModel{std::move(folded_graph), std::move(folded_parameters), std::move(folded_names)};
}

}  // namespace ember
