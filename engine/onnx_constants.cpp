#include "engine/onnx_constants.h"

#include <cstring>
#include <algorithm>

#include "engine/error.h"

namespace ember {
namespace {

std::int64_t checked_elements(const std::vector<std::int64_t>& dims, const std::string& where) {
  std::int64_t count = 1;
  for (const std::int64_t d : dims) {
    if (d < 0 || __builtin_mul_overflow(count, d, &count) || count > (std::int64_t{1} << 40)) {
      throw Error(where + ": bad dimensions (negative or too large)");
    }
  }
  return count;
}

// Row-major transpose of any rank: out[i_perm] = in[i].
OnnxConstant transpose(const OnnxConstant& in, std::vector<std::int64_t> perm, const std::string& where) {
  const std::size_t rank = in.dims.size();
  if (perm.empty()) {
    for (std::size_t i = 0; i < rank; ++i) perm.push_back(static_cast<std::int64_t>(rank - 1 - i));
  }
  std::vector<bool> seen(rank, false);
  if (perm.size() != rank) throw Error(where + ": Transpose perm has " + std::to_string(perm.size()) + " axes for a rank-" + std::to_string(rank) + " tensor");
  for (const std::int64_t p : perm) {
    if (p < 0 || p >= static_cast<std::int64_t>(rank) || seen[static_cast<std::size_t>(p)]) throw Error(where + ": Transpose perm is not a permutation");
    seen[static_cast<std::size_t>(p)] = true;
  }
  OnnxConstant out = in;
  for (std::size_t i = 0; i < rank; ++i) out.dims[i] = in.dims[static_cast<std::size_t>(perm[i])];
  std::vector<std::int64_t> in_strides(rank, 1);
  for (std::size_t i = rank; i-- > 1;) in_strides[i - 1] = in_strides[i] * in.dims[i];
  const std::int64_t count = in.elements();
  std::vector<std::int64_t> index(rank, 0);  // over out's dimensions
  for (std::int64_t o = 0; o < count; ++o) {
    std::int64_t source = 0;
    for (std::size_t i = 0; i < rank; ++i) source += index[i] * in_strides[static_cast<std::size_t>(perm[i])];
    if (in.is_float) {
      out.floats[static_cast<std::size_t>(o)] = in.floats[static_cast<std::size_t>(source)];
    } else {
      out.integers[static_cast<std::size_t>(o)] = in.integers[static_cast<std::size_t>(source)];
    }
    for (std::size_t i = rank; i-- > 0;) {
      if (++index[i] < out.dims[i]) break;
      index[i] = 0;
    }
  }
  return out;
}

}  // namespace

OnnxConstant read_onnx_tensor(const onnx::TensorProto& tensor, const std::string& where) {
  OnnxConstant c;
  c.dims.assign(tensor.dims().begin(), tensor.dims().end());
  const std::int64_t count = checked_elements(c.dims, where);
  if (tensor.data_location() == onnx::TensorProto::EXTERNAL || tensor.external_data_size() > 0) {
    throw Error(where + ": external data is not supported (save the model with its weights inside the file)");
  }
  const std::string& raw = tensor.raw_data();
  if (tensor.data_type() == onnx::TensorProto::FLOAT) {
    c.is_float = true;
    if (!raw.empty()) {
      if (raw.size() != static_cast<std::size_t>(count) * sizeof(float)) {
        throw Error(where + ": " + std::to_string(raw.size()) + " bytes of data for " + std::to_string(count) + " floats");
      }
      c.floats.resize(static_cast<std::size_t>(count));
      std::memcpy(c.floats.data(), raw.data(), raw.size());  // little-endian, as x86
    } else {
      if (tensor.float_data_size() != count) {
        throw Error(where + ": " + std::to_string(tensor.float_data_size()) + " floats for " + std::to_string(count) + " elements");
      }
      c.floats.assign(tensor.float_data().begin(), tensor.float_data().end());
    }
  } else if (tensor.data_type() == onnx::TensorProto::INT64) {
    c.is_float = false;
    if (!raw.empty()) {
      if (raw.size() != static_cast<std::size_t>(count) * sizeof(std::int64_t)) {
        throw Error(where + ": " + std::to_string(raw.size()) + " bytes of data for " + std::to_string(count) + " int64s");
      }
      c.integers.resize(static_cast<std::size_t>(count));
      std::memcpy(c.integers.data(), raw.data(), raw.size());
    } else {
      if (tensor.int64_data_size() != count) {
        throw Error(where + ": " + std::to_string(tensor.int64_data_size()) + " int64s for " + std::to_string(count) + " elements");
      }
      c.integers.assign(tensor.int64_data().begin(), tensor.int64_data().end());
    }
  } else {
    throw Error(where + ": data type " + std::to_string(tensor.data_type()) + " is not supported (FLOAT weights, INT64 shapes)");
  }
  return c;
}

std::map<std::string, OnnxConstant> fold_onnx_constants(const onnx::GraphProto& graph, const std::string& where,
                                                        std::vector<bool>& folded) {
  std::map<std::string, OnnxConstant> constants;
  for (const onnx::TensorProto& t : graph.initializer()) {
    constants[t.name()] = read_onnx_tensor(t, where + ": initializer '" + t.name() + "'");
  }
  folded.assign(static_cast<std::size_t>(graph.node_size()), false);
  for (int i = 0; i < graph.node_size(); ++i) {
    const onnx::NodeProto& node = graph.node(i);
    const std::string at = where + ": node '" + node.name() + "' (" + node.op_type() + ")";
    const bool all_constant = std::all_of(node.input().begin(), node.input().end(),
                                          [&](const std::string& input) { return constants.count(input) > 0; });
    if (node.domain() != "" && node.domain() != "ai.onnx") continue;
    if (node.output_size() != 1) continue;
    if (node.op_type() == "Constant") {
      if (node.attribute_size() != 1 || node.attribute(0).name() != "value" || !node.attribute(0).has_t()) {
        throw Error(at + ": only a Constant with a 'value' tensor is supported");
      }
      constants[node.output(0)] = read_onnx_tensor(node.attribute(0).t(), at);
    } else if (!all_constant || node.input_size() == 0) {
      continue;
    } else if (node.op_type() == "Identity") {
      constants[node.output(0)] = constants.at(node.input(0));
    } else if (node.op_type() == "Transpose") {
      std::vector<std::int64_t> perm;
      for (const onnx::AttributeProto& a : node.attribute()) {
        if (a.name() == "perm") perm.assign(a.ints().begin(), a.ints().end());
      }
      constants[node.output(0)] = transpose(constants.at(node.input(0)), perm, at);
    } else {
      continue;  // not folded: the importer reports it if it cannot map it
    }
    folded[static_cast<std::size_t>(i)] = true;
  }
  return constants;
}

}  // namespace ember
