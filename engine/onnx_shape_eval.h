#pragma once
// The shape arithmetic of an ONNX graph, evaluated with the batch size symbolic. PyTorch
// exports `x.view(n, t * heads, d)` as Shape, Gather, Mul, Unsqueeze, Concat... feeding a
// Reshape; ember evaluates that arithmetic once, every integer as an affine function of the
// batch size N (a + b N), so that every Reshape and Slice on the data path has a known
// target shape and the nodes that only compute shapes can be dropped. Only engine/onnx_*.cpp
// and tests/onnx include it.
//
// PyTorch 2 also computes the attention's scale from a shape (Cast of the head dim to float,
// Sqrt, Div): float tensors of rank <= 1 computed from batch-independent integers and float
// constants are evaluated too, in double, and their nodes count as shape arithmetic.
//
// The evaluation never throws: whatever it cannot evaluate (an op it does not know, a
// product of two batch-dependent values, an index out of range, a malformed node) is left
// unknown, and whoever needs it reports the node.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

#include "engine/onnx_constants.h"

namespace ember {

// a + b N, N the batch size (N >= 1).
struct BatchAffine {
  std::int64_t constant = 0;
  std::int64_t per_batch = 0;
  bool is_constant() const { return per_batch == 0; }
  bool operator==(const BatchAffine&) const = default;
  std::string str() const;
};

// An integer tensor of rank 0 or 1 (a shape, an index, a size) with evaluated elements.
struct ShapeIntegers {
  bool scalar = false;
  std::vector<BatchAffine> values;
};

// A float tensor of rank 0 or 1 computed from batch-independent shape values (a scale).
struct ShapeFloats {
  bool scalar = false;
  std::vector<double> values;
};

struct OnnxShapeFacts {
  // Float tensors' shapes, dimension 0 of a graph input being N.
  std::map<std::string, std::vector<BatchAffine>> shapes;
  // Integer tensors evaluated (constants of rank <= 1 included).
  std::map<std::string, ShapeIntegers> integers;
  // Float tensors evaluated from batch-independent integers and float constants (not the
  // constants themselves).
  std::map<std::string, ShapeFloats> floats;
  // Nodes that only compute integers (or such floats) from shapes and constants: nothing to run.
  std::vector<bool> shape_only;

  const std::vector<BatchAffine>* shape(const std::string& tensor) const;
  const ShapeIntegers* integers_of(const std::string& tensor) const;
  const ShapeFloats* floats_of(const std::string& tensor) const;
  // The tensor's values when it is evaluated and independent of the batch size.
  std::optional<std::vector<std::int64_t>> constant_integers(const std::string& tensor) const;
};

// Evaluates `graph` (in its node order, which ONNX requires to be topological). Every graph
// input that is not an initializer has its dimension 0 taken as N and its other dimensions
// as written (unknown if not fixed).
OnnxShapeFacts evaluate_onnx_shapes(const onnx::GraphProto& graph, const std::map<std::string, OnnxConstant>& constants);

}  // namespace ember
