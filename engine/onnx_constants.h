#pragma once
// An ONNX model's constant tensors: initializers, Constant nodes, and what nodes of
// constants only compute (a Transpose of a weight, an Identity), folded at import. Only
// engine/onnx_*.cpp include it.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

namespace ember {

struct OnnxConstant {
  std::vector<std::int64_t> dims;
  bool is_float = true;
  std::vector<float> floats;           // FLOAT
  std::vector<std::int64_t> integers;  // INT64
  std::int64_t elements() const { return is_float ? static_cast<std::int64_t>(floats.size()) : static_cast<std::int64_t>(integers.size()); }
};

// A TensorProto's values, checked: FLOAT or INT64 only, stored in the file (no external
// data), dimensions non-negative and the value count matching them. `where` names the
// tensor in errors.
OnnxConstant read_onnx_tensor(const onnx::TensorProto& tensor, const std::string& where);

// The model's constants by name: its initializers, its Constant nodes and the nodes it can
// compute from them alone (Transpose, Identity); `folded[i]` is set for every
// node so consumed. `where` names the file in errors.
std::map<std::string, OnnxConstant> fold_onnx_constants(const onnx::GraphProto& graph, const std::string& where,
                                                        std::vector<bool>& folded);

}  // namespace ember
