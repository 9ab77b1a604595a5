#pragma once
// ONNX export: a graph and its weights as an ONNX model (opset 13..17) that ONNX Runtime,
// TensorRT or any other ONNX consumer runs with ember's results.
//
// Every layer kind maps to standard operators: conv2d -> Conv, linear -> Gemm (or MatMul +
// Add on tokens), gelu -> its Erf (or Tanh) formula, layer_norm -> LayerNormalization (opset
// 17; decomposed into ReduceMean, Sub, Mul, Sqrt, Div below), multi_head_attention -> MatMul,
// Split, Reshape, Transpose, Softmax, ... (batch_norm keeps its running statistics, dropout
// is Identity). Composite blocks (residual_block) are already their layers in the graph.
//
// The graph input is "input" with shape (batch, sample dims...), the batch dynamic; the
// output is the output layer's name. Initializers carry ember's parameter names
// ("conv1.weight", PyTorch's state_dict names). The input normalization a checkpoint was
// trained with is not folded in: the model's input is the normalized tensor, as for
// InferenceSession; the checkpoint's mean, std and class names (when recorded) are stored
// as metadata_props ("ember.input_mean", "ember.input_std", "ember.class_names").
#include <map>
#include <string>

#include "engine/graph.h"
#include "engine/parameters.h"

namespace ember {

inline constexpr int onnx_min_opset = 13;
inline constexpr int onnx_max_opset = 17;
inline constexpr int onnx_default_opset = 17;

struct OnnxExportOptions {
  int opset = onnx_default_opset;
  std::string model_name = "ember";
  // Written as the model's metadata_props, in key order.
  std::map<std::string, std::string> metadata;
};

// The serialized ModelProto, checked by ONNX's checker (onnx::checker::check_model) and
// full shape inference before it is returned. Throws ember::Error naming the node (and
// layer kind) that cannot be exported, or the opset outside 13..17.
std::string onnx_model_bytes(const Graph& graph, const ParameterStore& parameters, const OnnxExportOptions& options = {});

// onnx_model_bytes written atomically to `path` (temporary file, fsync, rename).
void export_onnx(const Graph& graph, const ParameterStore& parameters, const std::string& path,
                 const OnnxExportOptions& options = {});

// A checkpoint written by `ember train --save` as ONNX, with its run settings' input
// normalization and class names as metadata.
void export_checkpoint_onnx(const std::string& checkpoint, const std::string& onnx_path, int opset = onnx_default_opset);

// Is ONNX support compiled in (EMBER_ONNX)? Without it the functions above throw.
bool onnx_available();

}  // namespace ember
