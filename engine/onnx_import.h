#pragma once
// ONNX import: a model exported by PyTorch (torch.onnx.export) or by ember (onnx_export.h)
// as an ember graph and weights, which InferenceSession, `ember eval` and the C API run.
//
// Operators are mapped to ember's layers (the supported set is listed in every error):
// Conv, BatchNormalization, Relu, the Erf (and Tanh) formula of GELU, MaxPool, AveragePool,
// GlobalAveragePool, Flatten and a Reshape to (N, -1), Gemm, MatMul (+ Add) against a
// constant, Add, Softmax over the last axis, LayerNormalization and its decomposed form,
// Dropout and Identity; PyTorch's nn.MultiheadAttention export (so nn.TransformerEncoderLayer's
// too: self-attention, any head count, with or without biases, batch first or not, no mask but a causal attn_mask)
// as multi_head_attention (onnx_attention_match.h), as torch 1.13 and torch 2.x (TorchScript
// exporter) write it, its shape arithmetic (Shape, Gather, Unsqueeze, Concat, Slice, Cast,
// int64 Add/Sub/Mul/Div/Mod, ConstantOfShape, Equal, Where, and torch 2's float scale from a
// shape: Cast, Sqrt, Div) evaluated with the batch size symbolic and dropped (onnx_shape_eval.h). Subgraphs of
// initializers and constants only (a Transpose of a weight, a Constant node) are folded
// first. Anything else is an error naming the node,
// its op type and the supported set: an import never runs a silently different model.
// A malformed or truncated file, a missing initializer, a dtype other than float (or
// int64 for shapes), or a dynamic dimension other than the batch is an error naming the
// file.
//
// The model's input is its one graph input that is not an initializer, batch first; the
// metadata_props ember.input_mean and ember.input_std (written by onnx_export) become the
// run settings' "mean" and "std".
#include <cstddef>
#include <string>
#include <string_view>

#include "engine/training_state.h"

namespace ember {

TrainedModel import_onnx(const std::string& path, std::size_t memory_limit = 0);
// The same from the file's bytes; `source` names it in errors.
TrainedModel import_onnx_bytes(std::string_view bytes, const std::string& source, std::size_t memory_limit = 0);
// `ember import`: the model saved as an ember checkpoint (its spec, weights and run settings).
void import_onnx_to_checkpoint(const std::string& onnx_path, const std::string& checkpoint);

// Does `path` name an ONNX file (ends in ".onnx")? load_trained_model reads those with
// import_onnx.
inline bool is_onnx_path(std::string_view path) { return path.size() >= 5 && path.substr(path.size() - 5) == ".onnx"; }

}  // namespace ember
