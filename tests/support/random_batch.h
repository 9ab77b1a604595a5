#pragma once
// A batch of a graph's input filled from U(0, 1) and class labels from a seed: what the
// executor and anomaly tests run steps on.
#include <cstdint>
#include <random>
#include <vector>

#include "engine/graph.h"

namespace ember::testing {

struct Batch {
  std::vector<float> input;
  std::vector<std::int32_t> labels;
};

// Labels in [0, classes).
inline Batch random_batch(const Graph& graph, std::int64_t batch, int classes, unsigned seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> value(0.0f, 1.0f);
  std::uniform_int_distribution<int> label(0, classes - 1);
  Batch b;
  b.input.resize(static_cast<std::size_t>(batch * graph.input_sample_shape().elements()));
  for (float& x : b.input) x = value(random);
  for (std::int64_t i = 0; i < batch; ++i) b.labels.push_back(label(random));
  return b;
}

// Labels over the graph's outputs, one class each.
inline Batch random_batch(const Graph& graph, std::int64_t batch, unsigned seed) {
  return random_batch(graph, batch, static_cast<int>(graph.value_shape(graph.output()).sample_elements()), seed);
}

}  // namespace ember::testing
