#pragma once
// One layer's ONNX nodes and initializers, as onnx_export writes them: the importer
// recognizes ember's own multi-node layers (attention, GELU, ...) by exporting the layer
// it supposes and comparing. Only engine/onnx_*.cpp include it.
#include <onnx/onnx_pb.h>

#include "engine/graph.h"
#include "engine/parameters.h"

namespace ember {

// Appends graph node `node`'s ONNX nodes and initializers to `onnx_graph`. Its inputs are
// named after their producers ("input" for the model's input), its output after the node.
void add_layer_nodes(onnx::GraphProto& onnx_graph, const Graph& graph, const ParameterStore& parameters, int node, int opset);

}  // namespace ember
