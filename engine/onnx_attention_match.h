#pragma once
// PyTorch's export of nn.MultiheadAttention (self-attention, no mask) recognized as ember's
// multi_head_attention layer. Only engine/onnx_*.cpp include it.
//
// Each Softmax whose scores come from a MatMul of two computed tensors is an attention.
// From there the data path is followed back to one (N, T, E) tensor and forward to the
// (N, T, E) result, and every node on it is interpreted on a symbolic layout: each axis of
// each tensor is a list of factors (batch N, tokens T, the E input features, the
// 3E in-projection, its query/key/value thirds, heads H and head dims D split from them),
// with the shapes that onnx_shape_eval.h evaluated for every Reshape. The match holds only
// if the layouts say exactly: X W_in^T + b_in, sliced in thirds (torch 1.13) or reshaped to
// (.., 3, E) and Gathered per third (torch 2), each third split into H heads of D = E / H; softmax(Q K^T / sqrt(D)) over the keys, times V, over the same
// (batch, head) pairs; the heads merged back and projected by W_out, b_out; the result laid
// out as (N, T, E) again; a constant causal mask (0 on and below the diagonal, -inf above)
// added to the scores makes the layer causal. A scale is a constant or a float that
// onnx_shape_eval.h evaluated from batch-independent shapes (torch 2's 1/D^(1/4) on Q and K). Anything else (another mask, another scale,
// heads that do not divide, an intermediate also used elsewhere) is an error naming the node.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "engine/onnx_constants.h"
#include "engine/onnx_shape_eval.h"

namespace ember {

struct OnnxAttention {
  std::string name;    // for the ember layer: the common prefix of the nodes' names
  std::string input;   // (N, T, E)
  std::string output;  // (N, T, E)
  std::int64_t d_model = 0;
  std::int64_t heads = 0;
  bool bias = false;
  bool causal = false;  // a causal attn_mask was added to the scores
  // As multi_head_attention's parameters: in_proj_weight (3E, E), in_proj_bias (3E),
  // out_proj_weight (E, E), out_proj_bias (E).
  std::map<std::string, OnnxConstant> weights;
  std::vector<int> nodes;  // the data-path nodes the layer replaces
};

// Every attention in `graph` but at the Softmax nodes `skipped` marks (ember's own export,
// imported as its layer); `source` names the file in errors.
std::vector<OnnxAttention> match_onnx_attention(const onnx::GraphProto& graph, const std::map<std::string, OnnxConstant>& constants,
                                                const OnnxShapeFacts& facts, const std::vector<bool>& skipped,
                                                const std::string& source);

}  // namespace ember
