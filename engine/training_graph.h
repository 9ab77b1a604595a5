#pragma once
// The graph a training step runs: the model's graph with every ReLU whose only reader is a
// 2x2 max pool moved after that pool (conv -> relu -> pool runs as conv -> pool -> relu).
//
// ReLU is monotone, so max(relu(x)) = relu(max(x)) exactly, and the gradient is the same
// bits too: it reaches only the window's maximum either way (where the maximum is not
// positive, both orders give the whole window +0: the ReLU's mask is the pooled value's
// sign, and its backward selects, never multiplies). The ReLU then touches a quarter of
// the elements, forward and backward. Node names, the nodes' count and every value's id
// read after the pair stay as they were, so parameters (node order) and every reader of
// the pool's output are unchanged; only the two values inside a pair change shape.
// Inference keeps the model's graph (it fuses ReLU and pool into the convolution).
#include <memory>

#include "engine/graph.h"

namespace ember {

// The rewritten graph, or nullptr when no ReLU precedes a 2x2 max pool that way.
std::unique_ptr<Graph> relu_after_max_pools(const Graph& graph);

}  // namespace ember
