#pragma once
// An ONNX node's attributes by name, with the operator's default where the node has none.
// Only engine/onnx_*.cpp include it.
#include <cstdint>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

namespace ember {

inline const onnx::AttributeProto* onnx_attribute(const onnx::NodeProto& node, const std::string& name) {
  for (const onnx::AttributeProto& a : node.attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}
inline std::int64_t int_attribute(const onnx::NodeProto& node, const std::string& name, std::int64_t fallback) {
  const onnx::AttributeProto* a = onnx_attribute(node, name);
  return a != nullptr ? a->i() : fallback;
}
inline float float_attribute(const onnx::NodeProto& node, const std::string& name, float fallback) {
  const onnx::AttributeProto* a = onnx_attribute(node, name);
  return a != nullptr ? a->f() : fallback;
}
inline std::string string_attribute(const onnx::NodeProto& node, const std::string& name, std::string fallback) {
  const onnx::AttributeProto* a = onnx_attribute(node, name);
  return a != nullptr ? a->s() : fallback;
}
inline std::vector<std::int64_t> ints_attribute(const onnx::NodeProto& node, const std::string& name,
                                                std::vector<std::int64_t> fallback) {
  const onnx::AttributeProto* a = onnx_attribute(node, name);
  return a != nullptr ? std::vector<std::int64_t>(a->ints().begin(), a->ints().end()) : fallback;
}

}  // namespace ember
