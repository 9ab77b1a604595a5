#pragma once
// Building an ONNX GraphProto one node at a time, for the exporter: initializers from
// float or int64 values, nodes with their attributes, names made unique per layer.
// Only engine/onnx_*.cpp include it (it needs ONNX's protobuf headers).
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

namespace ember {

// One attribute of a node: an int, a float, or a list of ints.
struct OnnxAttribute {
  std::string name;
  enum class Kind { integer, real, integers } kind = Kind::integer;
  std::int64_t integer = 0;
  float real = 0.0f;
  std::vector<std::int64_t> integers;

  static OnnxAttribute of(std::string name, std::int64_t value) { return {std::move(name), Kind::integer, value, 0.0f, {}}; }
  static OnnxAttribute of(std::string name, float value) { return {std::move(name), Kind::real, 0, value, {}}; }
  static OnnxAttribute of(std::string name, std::vector<std::int64_t> values) {
    return {std::move(name), Kind::integers, 0, 0.0f, std::move(values)};
  }
};

class OnnxGraphBuilder {
 public:
  explicit OnnxGraphBuilder(onnx::GraphProto& graph) : graph_(graph) {}

  // Adds a FLOAT initializer named `name` and returns the name.
  std::string floats(const std::string& name, std::span<const std::int64_t> dims, std::span<const float> values);
  std::string floats(const std::string& name, std::initializer_list<std::int64_t> dims, std::span<const float> values) {
    return floats(name, std::span<const std::int64_t>(dims.begin(), dims.size()), values);
  }
  // A float scalar (rank 0).
  std::string scalar(const std::string& name, float value);
  // An INT64 initializer (shapes, axes, split sizes): a vector of the values.
  std::string int64s(const std::string& name, std::vector<std::int64_t> values);
  // Appends a node; its name is `name`, its outputs `outputs`. Returns outputs[0].
  std::string node(const std::string& op, const std::string& name, std::vector<std::string> inputs,
                   std::vector<std::string> outputs, std::vector<OnnxAttribute> attributes = {});

 private:
  onnx::GraphProto& graph_;
};

}  // namespace ember
