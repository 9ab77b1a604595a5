#include "engine/training_graph.h"

#include <vector>

#include "layers/registry.h"

namespace ember {
namespace {

std::unique_ptr<Layer> copy_of(const Layer& layer) { return make_layer(layer.kind(), layer.options()); }

}  // namespace

std::unique_ptr<Graph> relu_after_max_pools(const Graph& graph) {
  const std::vector<Node>& nodes = graph.nodes();
  std::vector<int> readers(static_cast<std::size_t>(graph.value_count()), 0);
  for (const Node& node : nodes) {
    for (ValueId v : node.inputs) ++readers[static_cast<std::size_t>(v)];
  }
  ++readers[static_cast<std::size_t>(graph.output())];
  // swapped[n]: node n is a ReLU read only by node n + 1, a 2x2 max pool.
  std::vector<char> swapped(nodes.size(), 0);
  bool any = false;
  for (std::size_t n = 0; n + 1 < nodes.size(); ++n) {
    const Node& relu = nodes[n];
    const Node& pool = nodes[n + 1];
    if (relu.layer->activation() != FusedActivation::relu || relu.inputs.size() != 1) continue;
    if (!pool.layer->is_max_pool_2x2() || pool.inputs.size() != 1 || pool.inputs[0] != relu.output) continue;
    if (readers[static_cast<std::size_t>(relu.output)] != 1) continue;
    swapped[n] = 1;
    any = true;
    ++n;  // the pool is taken
  }
  if (!any) return nullptr;
  auto rewritten = std::make_unique<Graph>(graph.input_sample_shape());
  for (std::size_t n = 0; n < nodes.size(); ++n) {
    if (!swapped[n]) {
      rewritten->add(nodes[n].name, copy_of(*nodes[n].layer), nodes[n].inputs);
      continue;
    }
    const Node& relu = nodes[n];
    const Node& pool = nodes[n + 1];
    const ValueId pooled = rewritten->add(pool.name, copy_of(*pool.layer), relu.inputs);
    rewritten->add(relu.name, copy_of(*relu.layer), {pooled});  // its output: the pool's value id
    ++n;
  }
  rewritten->set_output(graph.output());
  return rewritten;
}

}  // namespace ember
