#include "engine/anomaly.h"

#include <vector>

#include "engine/blocked_layout.h"

#include "simd/elementwise.h"

namespace ember {

std::string describe(const Anomaly& a) {
  std::string where = a.layer == "input" ? std::string("the input") : "layer " + a.layer + " (" + a.kind + ")";
  std::string text = "non-finite value in the " + a.phase + (a.phase == "optimizer" ? " step" : " pass") + " at " + where +
                     ": " + a.tensor;
  if (a.index >= 0) text += ", element " + std::to_string(a.index);
  if (a.sample >= 0) text += " (sample " + std::to_string(a.sample) + " of the batch)";
  text += ", is " + std::to_string(a.value);
  if (!a.note.empty()) text += "; " + a.note;
  return text;
}

std::optional<NonFiniteElement> first_non_finite(std::span<const float> values) {
  const std::int64_t index =
      simd::elementwise_kernels().first_non_finite(values.data(), static_cast<std::int64_t>(values.size()));
  if (index < 0) return std::nullopt;
  return NonFiniteElement{index, values[static_cast<std::size_t>(index)]};
}

std::optional<NonFiniteElement> first_non_finite(const Tensor& tensor, const dnnl::engine& engine, dnnl::stream& stream) {
  if (tensor.is_plain()) {
    return first_non_finite(std::span<const float>(tensor.data, static_cast<std::size_t>(tensor.elements())));
  }
  const std::span<const float> padded(tensor.data, tensor.bytes() / sizeof(float));
  if (!first_non_finite(padded)) return std::nullopt;
  // Something non-finite in the buffer: find it among the logical elements.
  const auto& dims = tensor.shape.dims();
  dnnl::memory::dims plain_dims(dims.begin(), dims.end());
  dnnl::memory::dims strides(plain_dims.size(), 1);
  for (std::size_t i = plain_dims.size(); i-- > 1;) strides[i - 1] = strides[i] * plain_dims[i];
  const dnnl::memory::desc plain_desc(plain_dims, dnnl::memory::data_type::f32, strides);
  std::vector<float> plain(static_cast<std::size_t>(tensor.elements()));
  dnnl::memory from(tensor.blocked->desc, engine, tensor.data);
  dnnl::memory to(plain_desc, engine, plain.data());
  dnnl::reorder(from, to).execute(stream, from, to);
  stream.wait();
  return first_non_finite(std::span<const float>(plain));
}

namespace {

std::optional<Anomaly> find_entry_anomaly(const Graph& graph, const std::vector<ParameterEntry>& entries,
                                          std::span<const float> block, std::string_view phase, std::string_view suffix) {
  for (const ParameterEntry& entry : entries) {
    const auto values = block.subspan(static_cast<std::size_t>(entry.offset), static_cast<std::size_t>(entry.spec.shape.elements()));
    if (const auto bad = first_non_finite(values)) {
      const Node& node = graph.nodes()[static_cast<std::size_t>(entry.node)];
      Anomaly a;
      a.phase = std::string(phase);
      a.layer = node.name;
      a.kind = std::string(node.layer->kind());
      a.tensor = entry.name + std::string(suffix);
      a.index = bad->index;
      a.value = bad->value;
      return a;
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<Anomaly> find_parameter_anomaly(const Graph& graph, const ParameterStore& parameters,
                                              std::span<const float> block, std::string_view phase,
                                              std::string_view suffix) {
  return find_entry_anomaly(graph, parameters.entries(), block, phase, suffix);
}

std::optional<Anomaly> find_buffer_anomaly(const Graph& graph, const ParameterStore& parameters, std::string_view phase) {
  return find_entry_anomaly(graph, parameters.buffer_entries(), parameters.buffers(), phase, "");
}

}  // namespace ember
