#include "engine/parameters.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <string_view>

#include "engine/checked.h"
#include "engine/error.h"
#include "engine/random.h"

namespace ember {

namespace {

std::string init_name(Init init) {
  switch (init) {
    case Init::kaiming_uniform: return "kaiming_uniform";
    case Init::bias_uniform: return "bias_uniform";
    case Init::zeros: return "zeros";
    case Init::ones: return "ones";
    case Init::normal: return "normal";
    case Init::normal_scaled: return "normal_scaled";
    case Init::uniform_scaled: return "uniform_scaled";
  }
  return "init " + std::to_string(static_cast<int>(init));
}

// Appends one node's tensors to a block's entries, each padded to 64 bytes.
void place(std::vector<ParameterSpec> specs, int node, const std::string& node_name, const char* kind,
           const char* block, std::vector<ParameterEntry>& entries, std::vector<int>& node_entries,
           std::int64_t& total_floats) {
  for (ParameterSpec& spec : specs) {
    ParameterEntry entry;
    entry.name = node_name + "." + spec.name;
    entry.node = node;
    entry.offset = total_floats;
    const std::string what = std::string(kind) + " " + entry.name + " " + spec.shape.str();
    const std::size_t bytes = checked_align_up(checked_float_bytes(spec.shape.elements(), what), tensor_alignment, what);
    // Every offset, in bytes, must fit in size_t too.
    total_floats = checked_add(total_floats, static_cast<std::int64_t>(bytes / sizeof(float)), block);
    (void)checked_float_bytes(total_floats, block);
    entry.spec = std::move(spec);
    node_entries.push_back(static_cast<int>(entries.size()));
    entries.push_back(std::move(entry));
  }
}

}  // namespace

ParameterLayout parameter_layout(const Graph& graph) {
  ParameterLayout layout;
  layout.node_entries.resize(graph.nodes().size());
  layout.node_buffer_entries.resize(graph.nodes().size());
  for (std::size_t n = 0; n < graph.nodes().size(); ++n) {
    const Node& node = graph.nodes()[n];
    std::vector<Shape> shapes;
    for (ValueId v : node.inputs) shapes.push_back(graph.value_shape(v));
    const int index = static_cast<int>(n);
    place(node.layer->parameters(shapes), index, node.name, "parameter", "parameter block", layout.entries,
          layout.node_entries[n], layout.total_floats);
    place(node.layer->buffers(shapes), index, node.name, "buffer", "buffer block", layout.buffer_entries,
          layout.node_buffer_entries[n], layout.buffer_floats);
  }
  // Checkpoints store both kinds under these names, side by side.
  std::set<std::string_view> names;
  for (const ParameterEntry& entry : layout.entries) names.insert(entry.name);
  for (const ParameterEntry& entry : layout.buffer_entries) {
    if (!names.insert(entry.name).second) throw Error("buffer " + entry.name + ": a parameter or buffer has that name already");
    if (entry.spec.init != Init::zeros && entry.spec.init != Init::ones) {
      throw Error("buffer " + entry.name + ": expected init zeros or ones, found " + init_name(entry.spec.init));
    }
  }
  return layout;
}

ParameterStore::ParameterStore(ParameterLayout layout)
    : entries_(std::move(layout.entries)),
      node_entries_(std::move(layout.node_entries)),
      total_floats_(layout.total_floats),
      values_(static_cast<std::size_t>(total_floats_) * sizeof(float)),
      gradients_(static_cast<std::size_t>(total_floats_) * sizeof(float)),
      buffer_entries_(std::move(layout.buffer_entries)),
      node_buffer_entries_(std::move(layout.node_buffer_entries)),
      buffer_floats_(layout.buffer_floats),
      buffers_(static_cast<std::size_t>(buffer_floats_) * sizeof(float)) {}

std::span<const int> ParameterStore::node_entries(int node) const {
  return node_entries_.at(static_cast<std::size_t>(node));
}

std::int64_t ParameterStore::parameter_count() const {
  std::int64_t n = 0;
  for (const ParameterEntry& e : entries_) n += e.spec.shape.elements();
  return n;
}

std::span<const int> ParameterStore::node_buffer_entries(int node) const {
  return node_buffer_entries_.at(static_cast<std::size_t>(node));
}

std::int64_t ParameterStore::buffer_count() const {
  std::int64_t n = 0;
  for (const ParameterEntry& e : buffer_entries_) n += e.spec.shape.elements();
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

Tensor ParameterStore::buffer(int entry) {
  const ParameterEntry& e = buffer_entries_.at(static_cast<std::size_t>(entry));
  return Tensor{buffers_.floats() + e.offset, e.spec.shape};
}

Tensor ParameterStore::buffer(int entry) const {
  const ParameterEntry& e = buffer_entries_.at(static_cast<std::size_t>(entry));
  return Tensor{const_cast<float*>(buffers_.floats()) + e.offset, e.spec.shape};
}

namespace {

int index_of(const std::vector<ParameterEntry>& entries, const std::string& name) {
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

int ParameterStore::find(const std::string& name) const { return index_of(entries_, name); }

int ParameterStore::find_buffer(const std::string& name) const { return index_of(buffer_entries_, name); }

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
  for (const ParameterEntry& e : buffer_entries_) {
    // parameter_layout() admits nothing else.
    if (e.spec.init != Init::zeros && e.spec.init != Init::ones) {
      throw Error("buffer " + e.name + ": expected init zeros or ones, found " + init_name(e.spec.init));
    }
    const std::span<float> values = buffers().subspan(static_cast<std::size_t>(e.offset),
                                                     static_cast<std::size_t>(e.spec.shape.elements()));
    std::fill(values.begin(), values.end(), e.spec.init == Init::ones ? 1.0f : 0.0f);
  }
}

}  // namespace ember
