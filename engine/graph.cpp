#include "engine/graph.h"

#include "engine/error.h"

namespace ember {

Graph::Graph(Shape input_shape) : input_sample_shape_(input_shape) {
  value_shapes_.push_back(input_shape.prepend(1));
}

ValueId Graph::add(std::string name, std::unique_ptr<Layer> layer, std::vector<ValueId> inputs) {
  if (!layer) throw Error("layer '" + name + "': no layer given");
  if (name.empty()) throw Error("a layer of kind '" + std::string(layer->kind()) + "' has no name");
  if (name == "input" || find(name) != nullptr) throw Error("layer name '" + name + "' is used twice");
  if (static_cast<int>(inputs.size()) != layer->input_count()) {
    throw Error("layer '" + name + "' (" + std::string(layer->kind()) + ") takes " +
                std::to_string(layer->input_count()) + " input(s), found " + std::to_string(inputs.size()));
  }
  std::vector<Shape> shapes;
  for (ValueId v : inputs) {
    if (v < 0 || v >= value_count()) {
      throw Error("layer '" + name + "' reads value " + std::to_string(v) + ", which does not exist yet");
    }
    shapes.push_back(value_shapes_[static_cast<std::size_t>(v)]);
  }
  Shape out;
  try {
    out = layer->output_shape(shapes);
    (void)layer->parameters(shapes);
  } catch (const Error& e) {
    throw Error("layer '" + name + "' (" + std::string(layer->kind()) + "): " + e.what());
  }
  Node node;
  node.name = std::move(name);
  node.layer = std::move(layer);
  node.inputs = std::move(inputs);
  node.output = value_count();
  nodes_.push_back(std::move(node));
  value_shapes_.push_back(out);
  output_ = nodes_.back().output;
  return output_;
}

void Graph::set_output(ValueId value) {
  if (value < 0 || value >= value_count()) throw Error("model output value " + std::to_string(value) + " does not exist");
  output_ = value;
}

const Node* Graph::find(const std::string& name) const {
  for (const Node& n : nodes_) {
    if (n.name == name) return &n;
  }
  return nullptr;
}

}  // namespace ember
