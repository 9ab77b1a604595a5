#pragma once
// A model: a small static DAG of layers. Value 0 is the model input; each node produces
// one value and may read several (a value may feed several layers). Nodes are kept in
// topological order: a node only reads values made before it.
#include <memory>
#include <string>
#include <vector>

#include "engine/shape.h"
#include "layers/layer.h"

namespace ember {

using ValueId = int;

struct Node {
  std::string name;
  std::unique_ptr<Layer> layer;
  std::vector<ValueId> inputs;
  ValueId output = -1;
};

class Graph {
 public:
  // input_shape is one sample's shape, e.g. (1, 28, 28).
  explicit Graph(Shape input_shape);

  ValueId input() const { return 0; }
  // Appends a node; checks its inputs exist and its shapes agree (inferred at batch 1).
  // Throws ember::Error naming the node, the expected and the found shape.
  ValueId add(std::string name, std::unique_ptr<Layer> layer, std::vector<ValueId> inputs);
  void set_output(ValueId value);

  const Shape& input_sample_shape() const { return input_sample_shape_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  ValueId output() const { return output_; }
  int value_count() const { return static_cast<int>(nodes_.size()) + 1; }
  // The node producing a value (-1 for the input).
  int producer(ValueId value) const { return value - 1; }
  // The value's shape at batch 1 (drop or replace the batch with Shape::with_batch).
  const Shape& value_shape(ValueId value) const { return value_shapes_.at(static_cast<std::size_t>(value)); }
  const Node* find(const std::string& name) const;

 private:
  Shape input_sample_shape_;
  std::vector<Node> nodes_;
  std::vector<Shape> value_shapes_;
  ValueId output_ = 0;
};

}  // namespace ember
