#pragma once
// Anomaly detection (ExecutorOptions::detect_anomaly, `ember train --detect-anomaly`):
// like PyTorch's torch.autograd.detect_anomaly, every op's outputs are checked for NaN
// and infinity as the step runs, so a non-finite value is reported where it first
// appears (phase, layer, tensor, element) rather than as a NaN loss steps later.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "engine/error.h"
#include "engine/graph.h"
#include "engine/parameters.h"
#include "engine/tensor.h"

namespace ember {

struct Anomaly {
  std::string phase;          // "forward", "backward" or "optimizer"
  std::string layer;          // the node's name; "input" for the batch input, "loss" for the loss
  std::string kind;           // the layer's kind ("conv2d") or the loss's name; empty for the input
  std::string tensor;         // "output", "input gradient", "conv1.weight gradient", "conv1.weight", ...
  std::int64_t index = -1;    // first non-finite element, row-major over the logical elements; -1: a scalar
  std::int64_t sample = -1;   // the batch sample that element belongs to; -1 for parameters
  float value = 0.0f;
  std::int64_t micro_batch = 0;  // orders the reports of threads: the lowest is thrown
  std::string note;           // what else is known, e.g. that the layer's inputs were finite
};

// "non-finite value in the backward pass at layer conv1 (conv2d): conv1.weight gradient,
// element 17, is nan"
std::string describe(const Anomaly& anomaly);

class AnomalyError : public Error {
 public:
  explicit AnomalyError(Anomaly anomaly) : Error(describe(anomaly)), anomaly_(std::move(anomaly)) {}
  const Anomaly& anomaly() const { return anomaly_; }

 private:
  Anomaly anomaly_;
};

struct NonFiniteElement {
  std::int64_t index = -1;  // row-major over the logical elements
  float value = 0.0f;
};

// The first non-finite logical element of a tensor, if any. A tensor in a blocked oneDNN
// layout (nChw16c, ...) is first scanned whole, padding lanes included, in one fast pass;
// only when that finds something is it reordered to plain row-major and scanned again,
// so the index is the logical one and junk in padding lanes is never reported. Checked
// by hand: over arenas filled with NaN, every blocked tensor of lenet, seed-cnn and
// attn-cnn (training and inference) had finite (zero) padding after its op, so the
// second pass runs only for real anomalies.
std::optional<NonFiniteElement> first_non_finite(const Tensor& tensor, const dnnl::engine& engine, dnnl::stream& stream);
std::optional<NonFiniteElement> first_non_finite(std::span<const float> values);

// The first non-finite element of a block laid out like the parameters (their values, or
// gradients), in entry order, reported for the entry's layer: tensor "<entry><suffix>".
std::optional<Anomaly> find_parameter_anomaly(const Graph& graph, const ParameterStore& parameters,
                                              std::span<const float> block, std::string_view phase,
                                              std::string_view suffix);

// The first non-finite element of the store's buffers (BatchNorm's running statistics,
// which a training forward updates), reported for the buffer's layer: tensor "<entry>".
std::optional<Anomaly> find_buffer_anomaly(const Graph& graph, const ParameterStore& parameters, std::string_view phase);

}  // namespace ember
