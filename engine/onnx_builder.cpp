#include "engine/onnx_builder.h"

namespace ember {

std::string OnnxGraphBuilder::floats(const std::string& name, std::span<const std::int64_t> dims,
                                     std::span<const float> values) {
  onnx::TensorProto* tensor = graph_.add_initializer();
  tensor->set_name(name);
  tensor->set_data_type(onnx::TensorProto::FLOAT);
  for (const std::int64_t d : dims) tensor->add_dims(d);
  // raw_data is little-endian by the format's definition, as x86 stores floats.
  tensor->set_raw_data(values.data(), values.size_bytes());
  return name;
}

std::string OnnxGraphBuilder::scalar(const std::string& name, float value) {
  return floats(name, std::span<const std::int64_t>{}, std::span<const float>(&value, 1));
}

std::string OnnxGraphBuilder::int64s(const std::string& name, std::vector<std::int64_t> values) {
  onnx::TensorProto* tensor = graph_.add_initializer();
  tensor->set_name(name);
  tensor->set_data_type(onnx::TensorProto::INT64);
  tensor->add_dims(static_cast<std::int64_t>(values.size()));
  for (const std::int64_t v : values) tensor->add_int64_data(v);
  return name;
}

std::string OnnxGraphBuilder::node(const std::string& op, const std::string& name, std::vector<std::string> inputs,
                                   std::vector<std::string> outputs, std::vector<OnnxAttribute> attributes) {
  onnx::NodeProto* node = graph_.add_node();
  node->set_op_type(op);
  node->set_name(name);
  for (const std::string& input : inputs) node->add_input(input);
  for (const std::string& output : outputs) node->add_output(output);
  for (const OnnxAttribute& a : attributes) {
    onnx::AttributeProto* attribute = node->add_attribute();
    attribute->set_name(a.name);
    switch (a.kind) {
      case OnnxAttribute::Kind::integer:
        attribute->set_type(onnx::AttributeProto::INT);
        attribute->set_i(a.integer);
        break;
      case OnnxAttribute::Kind::real:
        attribute->set_type(onnx::AttributeProto::FLOAT);
        attribute->set_f(a.real);
        break;
      case OnnxAttribute::Kind::integers:
        attribute->set_type(onnx::AttributeProto::INTS);
        for (const std::int64_t v : a.integers) attribute->add_ints(v);
        break;
    }
  }
  return outputs.at(0);
}

}  // namespace ember
