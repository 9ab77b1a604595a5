#pragma once
// All weights of a model in one contiguous block, all gradients in another with the same
// layout: an optimizer step is one pass over the block, a gradient all-reduce one call.
// Each tensor starts on a 64-byte boundary (entries are padded to 16 floats).
//
// Buffers (Layer::buffers(): BatchNorm's running statistics) live in a third block of
// their own, laid out the same way. Optimizers, clipping and weight decay take the value
// and gradient blocks, so they never see it; checkpoints save and restore it.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/aligned_buffer.h"
#include "engine/graph.h"
#include "engine/tensor.h"

namespace ember {

// A parameter, or a buffer (then `offset` is into the buffer block).
struct ParameterEntry {
  std::string name;        // "<node>.<parameter>", e.g. "conv1.weight", "bn1.running_mean"
  int node = -1;           // index into Graph::nodes()
  ParameterSpec spec;
  std::int64_t offset = 0; // in floats, into the block
};

// Where each parameter and buffer of a graph goes in its block, computed without
// allocating (sizes checked: they come from a spec): what a checkpoint's tensors and the
// memory limit are weighed against before a ParameterStore exists. A buffer must be
// initialized with Init::zeros or Init::ones, and no two tensors of a node may share a
// name; parameter_layout() throws ember::Error naming the tensor otherwise.
struct ParameterLayout {
  std::vector<ParameterEntry> entries;
  std::vector<std::vector<int>> node_entries;  // per graph node, in Layer::parameters() order
  std::int64_t total_floats = 0;               // padding included
  std::vector<ParameterEntry> buffer_entries;
  std::vector<std::vector<int>> node_buffer_entries;  // per graph node, in Layer::buffers() order
  std::int64_t buffer_floats = 0;                     // padding included
  std::size_t block_bytes() const { return static_cast<std::size_t>(total_floats) * sizeof(float); }
  std::size_t buffer_block_bytes() const { return static_cast<std::size_t>(buffer_floats) * sizeof(float); }
};
ParameterLayout parameter_layout(const Graph& graph);

class ParameterStore {
 public:
  // Allocates the value and gradient blocks (two blocks of layout.block_bytes(), zeroed)
  // and the buffer block (layout.buffer_block_bytes(), zeroed).
  explicit ParameterStore(ParameterLayout layout);
  explicit ParameterStore(const Graph& graph) : ParameterStore(parameter_layout(graph)) {}

  const std::vector<ParameterEntry>& entries() const { return entries_; }
  // The entries of one node, in its Layer::parameters() order.
  std::span<const int> node_entries(int node) const;
  std::int64_t total_floats() const { return total_floats_; }  // padding included
  std::int64_t parameter_count() const;                       // padding excluded

  std::span<float> values() { return {values_.floats(), static_cast<std::size_t>(total_floats_)}; }
  std::span<const float> values() const { return {values_.floats(), static_cast<std::size_t>(total_floats_)}; }
  std::span<float> gradients() { return {gradients_.floats(), static_cast<std::size_t>(total_floats_)}; }
  std::span<const float> gradients() const { return {gradients_.floats(), static_cast<std::size_t>(total_floats_)}; }
  Tensor value(int entry);
  // A view for readers (layers get parameters as const Tensors and never write them).
  Tensor value(int entry) const;
  Tensor gradient(int entry);
  const float* value_data(int entry) const { return values_.floats() + entries_[static_cast<std::size_t>(entry)].offset; }
  int find(const std::string& name) const;  // -1 if absent

  // Buffers: entries index buffer_entries(), offsets are into buffers().
  const std::vector<ParameterEntry>& buffer_entries() const { return buffer_entries_; }
  // The buffer entries of one node, in its Layer::buffers() order.
  std::span<const int> node_buffer_entries(int node) const;
  std::int64_t buffer_floats() const { return buffer_floats_; }  // padding included
  std::int64_t buffer_count() const;                            // padding excluded
  std::span<float> buffers() { return {buffers_.floats(), static_cast<std::size_t>(buffer_floats_)}; }
  std::span<const float> buffers() const { return {buffers_.floats(), static_cast<std::size_t>(buffer_floats_)}; }
  Tensor buffer(int entry);
  // A view for readers; only a training forward (ReduceArgs::buffers) writes buffers.
  Tensor buffer(int entry) const;
  int find_buffer(const std::string& name) const;  // -1 if absent

  // PyTorch's default initialization, in distribution, from a seed; buffers get their
  // Init (zeros or ones), which draws nothing, so the weights of a seed do not depend on
  // the buffers a model has.
  void initialize(std::uint64_t seed);

 private:
  std::vector<ParameterEntry> entries_;
  std::vector<std::vector<int>> node_entries_;
  std::int64_t total_floats_ = 0;
  AlignedBuffer values_;
  AlignedBuffer gradients_;
  std::vector<ParameterEntry> buffer_entries_;
  std::vector<std::vector<int>> node_buffer_entries_;
  std::int64_t buffer_floats_ = 0;
  AlignedBuffer buffers_;
};

}  // namespace ember
