#include "engine/parameters.h"

#include <cmath>

#include "engine/checked.h"
#include "engine/random.h"

namespace ember {

ParameterLayout parameter_layout(const Graph& graph) {
  ParameterLayout layout;
  layout.node_entries.resize(graph.nodes().size());
  for (std::size_t n = 0; n < graph.nodes().size(); ++n) {
    const Node& node = graph.nodes()[n];
    std::vector<Shape> shapes;
    for (ValueId v : node.inputs) shapes.push_back(graph.value_shape(v));
    for (ParameterSpec& spec : node.layer->parameters(shapes)) {
      ParameterEntry entry;
      entry.name = node.name + "." + spec.name;
      entry.node = static_cast<int>(n);
      entry.offset = layout.total_floats;
      const std::string what = "parameter " + entry.name + " " + spec.shape.str();
      const std::size_t bytes = checked_align_up(checked_float_bytes(spec.shape.elements(), what), tensor_alignment, what);
      // Every offset, in bytes, must fit in size_t too.
      layout.total_floats = checked_add(layout.total_floats, static_cast<std::int64_t>(bytes / sizeof(float)), "parameter block");
      (void)checked_float_bytes(layout.total_floats, "parameter block");
      entry.spec = std::move(spec);
      layout.node_entries[n].push_back(static_cast<int>(layout.entries.size()));
      layout.entries.push_back(std::move(entry));
    }
  }
  return layout;
}

ParameterStore::ParameterStore(ParameterLayout layout)
    : entries_(std::move(layout.entries)),
      node_entries_(std::move(layout.node_entries)),
      total_floats_(layout.total_floats),
      values_(static_cast<std::size_t>(total_floats_) * sizeof(float)),
      gradients_(static_cast<std::size_t>(total_floats_) * sizeof(float)) {}

std::span<const int> ParameterStore::node_entries(int node) const {
  return node_entries_.at(static_cast<std::size_t>(node));
}

std::int64_t ParameterStore::parameter_count() const {
  std::int64_t n = 0;
  for (const ParameterEntry& e : entries_) n += e.spec.shape.elements();
  return n;
}

Tensor ParameterStore::value(int entry) {
  const ParameterEntry& e = entries_.at(static_cast<std::size_t>(entry));
  return Tensor{values_.floats() + e.offset, e.spec.shape};
}

Tensor ParameterStore::value(int entry) const {
  const ParameterEntry& e = entries_.at(static_cast<std::size_t>(entry));
  return Tensor{const_cast<float*>(values_.floats()) + e.offset, e.spec.shape};
}

Tensor ParameterStore::gradient(int entry) {
  const ParameterEntry& e = entries_.at(static_cast<std::size_t>(entry));
  return Tensor{gradients_.floats() + e.offset, e.spec.shape};
}

int ParameterStore::find(const std::string& name) const {
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

void ParameterStore::initialize(std::uint64_t seed) {
  Random random(seed);
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    const ParameterEntry& e = entries_[i];
    float* p = values_.floats() + e.offset;
    const std::int64_t n = e.spec.shape.elements();
    // kaiming_uniform_(a=sqrt(5)) gives gain sqrt(2/(1+5)) and bound gain*sqrt(3/fan_in)
    // = 1/sqrt(fan_in): the same bound PyTorch uses for biases.
    const float bound = 1.0f / std::sqrt(static_cast<float>(e.spec.fan_in > 0 ? e.spec.fan_in : 1));
    for (std::int64_t j = 0; j < n; ++j) {
      switch (e.spec.init) {
        case Init::kaiming_uniform:
        case Init::bias_uniform: p[j] = random.uniform(-bound, bound); break;
        case Init::zeros: p[j] = 0.0f; break;
        case Init::ones: p[j] = 1.0f; break;
        case Init::normal: p[j] = random.normal(); break;
        case Init::normal_scaled: p[j] = e.spec.scale * random.normal(); break;
        case Init::uniform_scaled: p[j] = random.uniform(-e.spec.scale, e.spec.scale); break;
      }
    }
  }
}

}  // namespace ember
