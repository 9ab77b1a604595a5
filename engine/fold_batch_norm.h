#pragma once
// Inference-time graph rewrite: a conv2d whose output is read only by a batch_norm2d
// with running statistics becomes one conv2d with bias that computes both:
//
//   s[o] = gamma[o] / sqrt(running_var[o] + eps)
//   W'[o, ...] = W[o, ...] * s[o],   b'[o] = (b[o] - running_mean[o]) * s[o] + beta[o]
//
// (b = 0 for a conv without bias; gamma = 1, beta = 0 without affine). Only for inference:
// training normalizes with batch statistics. The folded conv keeps the conv's name; the
// batch_norm2d node disappears and its readers read the conv. Every other node, parameter
// and buffer is copied unchanged.
#include <string>
#include <utility>
#include <vector>

#include "engine/graph.h"
#include "engine/parameters.h"

namespace ember {

struct FoldedModel {
  Graph graph;
  ParameterStore parameters;
  std::vector<std::pair<std::string, std::string>> folded;  // (conv2d, batch_norm2d) node names
};

FoldedModel fold_batch_norm(const Graph& graph, const ParameterStore& parameters);

}  // namespace ember
