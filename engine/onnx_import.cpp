#include "engine/onnx_import.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include <onnx/onnx_pb.h>

#include "engine/error.h"
#include "engine/memory_limit.h"
#include "engine/model_spec.h"
#include "engine/onnx_attention_match.h"
#include "engine/onnx_attributes.h"
#include "engine/onnx_constants.h"
#include "engine/onnx_layer_export.h"
#include "engine/onnx_shape_eval.h"
#include "engine/optimizer.h"
#include "engine/step_memory.h"
#include "layers/registry.h"

namespace ember {
namespace {

constexpr const char* supported_ops =
    "Conv, BatchNormalization, Relu, GELU as Div-Erf-Add-Mul-Mul, MaxPool, AveragePool, GlobalAveragePool (+ Flatten), "
    "Flatten, Reshape to (N, -1), Gemm, MatMul (+ Add) with a constant, Add, Softmax (last axis), LayerNormalization "
    "(or ReduceMean-Sub-Pow-ReduceMean-Add-Sqrt-Div-Mul-Add), "
    "ReduceMean over tokens or over H and W, Dropout, Identity, Transpose/Constant of constants, shape arithmetic "
    "(Shape, Gather, Unsqueeze, Concat, Slice, Cast, ...), nn.MultiheadAttention's self-attention (no mask but a causal attn_mask), and ember's own "
    "exported layers";


class Importer {
 public:
  Importer(const onnx::ModelProto& model, std::string source) : model_(model), g_(model.graph()), source_(std::move(source)) {}

  TrainedModel run(std::size_t memory_limit) {
    check_opset();
    for (const onnx::NodeProto& node : g_.node()) check_arity(node);
    constants_ = fold_onnx_constants(g_, source_, folded_);
    done_.assign(folded_.size(), false);
    // Before the input is read: an attention mask given as a second input is reported at its node.
    facts_ = evaluate_onnx_shapes(g_, constants_);
    attentions_ = match_onnx_attention(g_, constants_, facts_, ember_group_nodes(), source_);
    for (std::size_t a = 0; a < attentions_.size(); ++a) {
      for (const int node : attentions_[a].nodes) attention_of_[node] = a;
    }
    for (int i = 0; i < g_.node_size(); ++i) {
      for (const std::string& input : g_.node(i).input()) consumers_[input].push_back(i);
    }
    graph_ = std::make_unique<Graph>(input_shape());
    for (int i = 0; i < g_.node_size(); ++i) {
      if (done_[static_cast<std::size_t>(i)] || facts_.shape_only[static_cast<std::size_t>(i)]) continue;
      if (const auto a = attention_of_.find(i); a != attention_of_.end()) {
        import_attention(attentions_[a->second]);
        continue;
      }
      // A group may start with folded nodes (the Transpose of a weight).
      if (import_ember_group(i)) continue;
      if (!folded_[static_cast<std::size_t>(i)]) import_node(i);
    }
    if (g_.output_size() != 1) throw Error(source_ + ": the graph has " + std::to_string(g_.output_size()) + " outputs; ember takes one");
    graph_->set_output(value(g_.output(0).name(), "the graph output"));
    return finish(memory_limit);
  }

 private:
  // --- Reading the graph -----------------------------------------------------------------
  void check_opset() {
    int opset = -1;
    for (const onnx::OperatorSetIdProto& o : model_.opset_import()) {
      if (o.domain().empty() || o.domain() == "ai.onnx") opset = static_cast<int>(o.version());
    }
    opset_ = opset;
    if (opset < 13 || opset > 17) {
      throw Error(source_ + ": opset " + std::to_string(opset) + " of the default domain; ember imports 13 to 17 (export with opset_version=13..17)");
    }
  }

  // Input and output counts of the ops ember reads, checked before any node is looked at,
  // so no rule indexes past a node's inputs.
  void check_arity(const onnx::NodeProto& node) const {
    static const std::map<std::string, std::pair<int, int>, std::less<>> inputs{
        {"Identity", {1, 1}}, {"Dropout", {1, 3}}, {"Relu", {1, 1}}, {"Conv", {2, 3}}, {"MaxPool", {1, 1}},
        {"AveragePool", {1, 1}}, {"BatchNormalization", {5, 5}}, {"GlobalAveragePool", {1, 1}}, {"Flatten", {1, 1}},
        {"Reshape", {2, 2}}, {"Gemm", {2, 3}}, {"MatMul", {2, 2}}, {"Add", {2, 2}}, {"Sub", {2, 2}}, {"Mul", {2, 2}},
        {"Div", {2, 2}}, {"Pow", {2, 2}}, {"Softmax", {1, 1}}, {"LayerNormalization", {2, 3}}, {"ReduceMean", {1, 1}},
        {"ReduceSum", {1, 2}}, {"Erf", {1, 1}}, {"Sqrt", {1, 1}}, {"Tanh", {1, 1}}, {"Transpose", {1, 1}},
        {"Split", {1, 2}}, {"Constant", {0, 0}}};
    if (node.output_size() < 1 || node.output(0).empty()) throw Error(at(node) + ": the node has no output");
    const auto it = inputs.find(node.op_type());
    if (it == inputs.end()) return;  // not read by any rule; reported when reached
    const auto [low, high] = it->second;
    if (node.input_size() < low || node.input_size() > high) {
      throw Error(at(node) + ": expected " + std::to_string(low) + (low == high ? "" : " to " + std::to_string(high)) +
                  " inputs, found " + std::to_string(node.input_size()));
    }
  }

  Shape input_shape() {
    const onnx::ValueInfoProto* input = nullptr;
    for (const onnx::ValueInfoProto& v : g_.input()) {
      if (constants_.count(v.name())) continue;
      if (input) throw Error(source_ + ": the graph has several inputs ('" + input->name() + "', '" + v.name() + "'); ember takes one");
      input = &v;
    }
    if (!input) throw Error(source_ + ": the graph has no input");
    const std::string at = source_ + ": input '" + input->name() + "'";
    if (!input->type().has_tensor_type() || input->type().tensor_type().elem_type() != onnx::TensorProto::FLOAT) {
      throw Error(at + ": expected a float tensor");
    }
    const onnx::TensorShapeProto& shape = input->type().tensor_type().shape();
    if (shape.dim_size() < 2 || shape.dim_size() > Shape::max_rank) throw Error(at + ": expected rank 2 to " + std::to_string(Shape::max_rank) + " (batch first)");
    std::vector<std::int64_t> dims{1};
    for (int d = 1; d < shape.dim_size(); ++d) {
      if (!shape.dim(d).has_dim_value() || shape.dim(d).dim_value() < 1 || shape.dim(d).dim_value() > Shape::max_dimension) {
        throw Error(at + ": dimension " + std::to_string(d) + " must be a fixed positive size (only the batch, dimension 0, may be dynamic)");
      }
      dims.push_back(shape.dim(d).dim_value());
    }
    values_[input->name()] = graph_input;
    std::vector<std::int64_t> sample_dims(dims.begin() + 1, dims.end());
    return Shape(std::span<const std::int64_t>(sample_dims));
  }

  static constexpr ValueId graph_input = 0;

  ValueId value(const std::string& name, const std::string& what) const {
    auto it = values_.find(name);
    if (it == values_.end()) {
      throw Error(source_ + ": " + what + " reads '" + name + "', which no supported node produced" +
                  (constants_.count(name) ? " (it is a constant; ember needs a computed tensor there)" : ""));
    }
    return it->second;
  }
  const OnnxConstant* constant(const std::string& name) const {
    auto it = constants_.find(name);
    return it == constants_.end() ? nullptr : &it->second;
  }
  std::string at(const onnx::NodeProto& node) const { return source_ + ": node '" + node.name() + "' (" + node.op_type() + ")"; }
  [[noreturn]] void unsupported(const onnx::NodeProto& node, const std::string& why) const {
    throw Error(at(node) + ": " + why + "; ember imports: " + supported_ops);
  }
  const OnnxConstant& require_constant(const onnx::NodeProto& node, int input) const {
    if (node.input_size() <= input || node.input(input).empty()) unsupported(node, "input " + std::to_string(input) + " is missing");
    const OnnxConstant* c = constant(node.input(input));
    if (!c) unsupported(node, "input '" + node.input(input) + "' must be an initializer (a weight), not a computed tensor");
    if (!c->is_float) unsupported(node, "input '" + node.input(input) + "' must be FLOAT");
    return *c;
  }
  // The single node reading `tensor`, or -1.
  int only_consumer(const std::string& tensor) const {
    auto it = consumers_.find(tensor);
    if (it == consumers_.end() || it->second.size() != 1) return -1;
    for (const onnx::ValueInfoProto& output : g_.output()) {
      if (output.name() == tensor) return -1;
    }
    return it->second[0];
  }
  const Shape& shape_of(ValueId v) const { return graph_->value_shape(v); }

  // --- Building the ember graph ----------------------------------------------------------
  std::string layer_name(const onnx::NodeProto& node) {
    std::string name = node.name().empty() ? node.output(0) : node.name();
    if (name == "input" || name.empty()) name = "onnx_" + node.output(0);
    const std::string base = name;
    for (int n = 2; used_names_.count(name); ++n) name = base + "_" + std::to_string(n);
    used_names_.insert(name);
    return name;
  }
  ValueId add(const onnx::NodeProto& last, const std::string& kind, Json options, std::vector<ValueId> inputs,
              std::map<std::string, OnnxConstant> weights = {}) {
    const std::string name = layer_name(last);
    ValueId v;
    try {
      v = graph_->add(name, make_layer(kind, options), std::move(inputs));
    } catch (const Error& e) {
      throw Error(at(last) + ": as ember's " + kind + ": " + e.what());
    }
    for (auto& [parameter, tensor] : weights) weights_[name + "." + parameter] = std::move(tensor);
    values_[last.output(0)] = v;
    return v;
  }
  void alias(const onnx::NodeProto& node, ValueId v) { values_[node.output(0)] = v; }
  void consume(int node) { done_[static_cast<std::size_t>(node)] = true; }

  static OnnxConstant transposed(const OnnxConstant& matrix) {
    OnnxConstant t = matrix;
    const std::int64_t rows = matrix.dims[0], columns = matrix.dims[1];
    t.dims = {columns, rows};
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t c = 0; c < columns; ++c) t.floats[static_cast<std::size_t>(c * rows + r)] = matrix.floats[static_cast<std::size_t>(r * columns + c)];
    }
    return t;
  }
  static OnnxConstant filled(std::int64_t n, float value) {
    OnnxConstant c;
    c.dims = {n};
    c.floats.assign(static_cast<std::size_t>(n), value);
    return c;
  }
  static bool is_scalar(const OnnxConstant* c, float value, float tolerance) {
    return c && c->is_float && c->floats.size() == 1 && std::fabs(c->floats[0] - value) <= tolerance;
  }

  // --- ember's own multi-node layers -----------------------------------------------------
  // Nodes named "<layer>/<part>" beside a node named "<layer>": ember's export of a layer,
  // imported by import_ember_group (or node by node), not taken for PyTorch's attention.
  std::vector<bool> ember_group_nodes() const {
    std::set<std::string> names;
    for (const onnx::NodeProto& node : g_.node()) names.insert(node.name());
    std::vector<bool> grouped(static_cast<std::size_t>(g_.node_size()), false);
    for (int i = 0; i < g_.node_size(); ++i) {
      const std::string& name = g_.node(i).name();
      const auto slash = name.rfind('/');
      grouped[static_cast<std::size_t>(i)] = slash != std::string::npos && slash > 0 && names.count(name.substr(0, slash)) > 0;
    }
    return grouped;
  }

  // ember names a layer's nodes "<layer>/<part>" and its last node "<layer>": a run of such
  // nodes is imported as the layer whose export (onnx_layer_export.h) is exactly those
  // nodes with those constants.
  bool import_ember_group(int first) {
    const std::string& name = g_.node(first).name();
    const auto slash = name.rfind('/');
    if (slash == std::string::npos || slash == 0) return false;
    const std::string layer = name.substr(0, slash);
    if (layer == "input" || used_names_.count(layer)) return false;  // "input" names the model's input in a spec
    int last = first;
    while (last < g_.node_size() && g_.node(last).name().rfind(layer + "/", 0) == 0) ++last;
    if (last >= g_.node_size() || g_.node(last).name() != layer) return false;
    // The layer's input: the one tensor its nodes read that neither they nor constants make.
    std::set<std::string> made;
    std::string input;
    for (int i = first; i <= last; ++i) {
      for (const std::string& in : g_.node(i).input()) {
        if (made.count(in) || constants_.count(in)) continue;
        if (!input.empty() && in != input) return false;
        input = in;
      }
      for (const std::string& out : g_.node(i).output()) made.insert(out);
    }
    if (input.empty() || !values_.count(input)) return false;
    const ValueId x = values_.at(input);
    for (const auto& [kind, options] : group_candidates(layer)) {
      if (matches_export(first, last, layer, input, x, kind, options)) {
        std::unique_ptr<Layer> made = make_layer(kind, options);
        // matches_export found every parameter among the constants.
        for (const ParameterSpec& p : made->parameters(std::vector<Shape>{shape_of(x)})) {
          weights_[layer + "." + p.name] = constants_.at(layer + "." + p.name);
        }
        const ValueId v = graph_->add(layer, std::move(made), {x});
        used_names_.insert(layer);
        values_[g_.node(last).output(0)] = v;
        for (int i = first; i <= last; ++i) consume(i);
        return true;
      }
    }
    return false;
  }

  std::vector<std::pair<std::string, Json>> group_candidates(const std::string& layer) const {
    std::vector<std::pair<std::string, Json>> candidates{{"gelu", Json{{"approximate", "none"}}},
                                                         {"gelu", Json{{"approximate", "tanh"}}},
                                                         {"global_avg_pool", Json::object()},
                                                         {"tokens_from_feature_map", Json::object()}};
    const OnnxConstant* weight = constant(layer + ".weight");
    if (weight && weight->dims.size() == 2) {
      candidates.push_back({"linear", Json{{"in_features", weight->dims[1]}, {"out_features", weight->dims[0]},
                                           {"bias", constant(layer + ".bias") != nullptr}}});
      candidates.push_back({"attention_pool", Json{{"features", weight->dims[1]}}});
    }
    if (const OnnxConstant* eps = constant(layer + "/eps"); weight && weight->dims.size() == 1 && eps && eps->floats.size() == 1) {
      candidates.push_back({"layer_norm", Json{{"features", weight->dims[0]}, {"eps", static_cast<double>(eps->floats[0])}}});
    }
    const OnnxConstant* in_proj = constant(layer + ".in_proj_weight");
    const OnnxConstant* head_shape = constant(layer + "/head_shape");
    if (in_proj && in_proj->dims.size() == 2 && head_shape && !head_shape->is_float && head_shape->integers.size() == 4) {
      candidates.push_back({"multi_head_attention", Json{{"d_model", in_proj->dims[1]},
                                                         {"heads", head_shape->integers[2]},
                                                         {"causal", constant(layer + "/causal_mask") != nullptr},
                                                         {"bias", constant(layer + ".in_proj_bias") != nullptr}}});
    }
    return candidates;
  }

  // Is nodes first..last exactly ember's export of (kind, options) named `layer` reading `input`?
  bool matches_export(int first, int last, const std::string& layer, const std::string& input, ValueId x,
                      const std::string& kind, const Json& options) const {
    onnx::GraphProto expected;
    try {
      const Shape& shape = shape_of(x);
      Graph probe(Shape(shape.dims().subspan(1)));
      probe.add(layer, make_layer(kind, options), {probe.input()});
      ParameterStore parameters(probe);
      add_layer_nodes(expected, probe, parameters, 0, opset_);
    } catch (const Error&) {
      return false;  // options that do not fit this input: not this layer
    }
    if (expected.node_size() != last - first + 1) return false;
    for (int i = 0; i < expected.node_size(); ++i) {
      onnx::NodeProto node = expected.node(i);
      for (std::string& in : *node.mutable_input()) {
        if (in == "input") in = input;
      }
      if (node.SerializeAsString() != g_.node(first + i).SerializeAsString()) return false;
    }
    for (const onnx::TensorProto& t : expected.initializer()) {
      const OnnxConstant* found = constant(t.name());
      if (!found) return false;
      const OnnxConstant wanted = read_onnx_tensor(t, t.name());
      if (found->dims != wanted.dims || found->is_float != wanted.is_float) return false;
      const bool parameter = t.name().rfind(layer + ".", 0) == 0;
      if (!parameter && (found->floats != wanted.floats || found->integers != wanted.integers)) return false;
    }
    return true;
  }

  // --- PyTorch's attention (onnx_attention_match.h) ----------------------------------------
  void import_attention(const OnnxAttention& a) {
    const ValueId x = value(a.input, source_ + ": the attention at '" + a.name + "'");
    std::string name = a.name;
    for (int n = 2; used_names_.count(name); ++n) name = a.name + "_" + std::to_string(n);
    used_names_.insert(name);
    const Json options{{"d_model", a.d_model}, {"heads", a.heads}, {"bias", a.bias}, {"causal", a.causal}};
    ValueId v;
    try {
      v = graph_->add(name, make_layer("multi_head_attention", options), {x});
    } catch (const Error& e) {
      throw Error(source_ + ": the attention at '" + a.name + "': as ember's multi_head_attention: " + e.what());
    }
    for (const auto& [parameter, tensor] : a.weights) weights_[name + "." + parameter] = tensor;
    values_[a.output] = v;
    for (const int node : a.nodes) consume(node);
  }

  // --- One node at a time ----------------------------------------------------------------
  void import_node(int index) {
    const onnx::NodeProto& node = g_.node(index);
    const std::string& op = node.op_type();
    if (!node.domain().empty() && node.domain() != "ai.onnx") unsupported(node, "domain '" + node.domain() + "' is not ONNX's default");
    for (int o = 1; o < node.output_size(); ++o) {
      if (!node.output(o).empty() && consumers_.count(node.output(o))) unsupported(node, "its output " + std::to_string(o) + " is used");
    }
    consume(index);
    if (op == "Identity" || op == "Dropout") return alias(node, value(node.input(0), at(node)));
    if (op == "Relu") return void(add(node, "relu", Json::object(), {value(node.input(0), at(node))}));
    if (op == "Conv") return import_conv(node);
    if (op == "MaxPool" || op == "AveragePool") return import_pool(node);
    if (op == "BatchNormalization") return import_batch_norm(node);
    if (op == "GlobalAveragePool") return import_global_average_pool(index);
    if (op == "Flatten") return import_flatten(node);
    if (op == "Reshape") return import_reshape(node);
    if (op == "Gemm") return import_gemm(node);
    if (op == "MatMul") return import_matmul(index);
    if (op == "Add") return import_add(node);
    if (op == "Softmax") return import_softmax(node);
    if (op == "LayerNormalization") return import_layer_norm(node);
    if (op == "ReduceMean") return import_reduce_mean(index);
    if (op == "Div" && import_erf_gelu(index)) return;
    unsupported(node, "op type " + op + " is not supported here");
  }

  void import_conv(const onnx::NodeProto& node) {
    const ValueId x = value(node.input(0), at(node));
    const OnnxConstant& w = require_constant(node, 1);
    if (w.dims.size() != 4) unsupported(node, "only 2-D convolutions (a 4-D weight) are supported");
    if (int_attribute(node, "group", 1) != 1) unsupported(node, "group != 1 (grouped or depthwise convolution) is not supported");
    if (string_attribute(node, "auto_pad", "NOTSET") != "NOTSET") unsupported(node, "auto_pad is not supported; export explicit pads");
    const std::vector<std::int64_t> pads = ints_attribute(node, "pads", {0, 0, 0, 0});
    if (pads.size() != 4 || pads[0] != pads[2] || pads[1] != pads[3]) unsupported(node, "asymmetric pads are not supported");
    const std::vector<std::int64_t> kernel = ints_attribute(node, "kernel_shape", {w.dims[2], w.dims[3]});
    if (kernel != std::vector<std::int64_t>{w.dims[2], w.dims[3]}) unsupported(node, "kernel_shape does not match the weight");
    std::map<std::string, OnnxConstant> weights{{"weight", w}};
    const bool bias = node.input_size() > 2 && !node.input(2).empty();
    if (bias) weights["bias"] = require_constant(node, 2);
    add(node, "conv2d",
        Json{{"in_channels", w.dims[1]}, {"out_channels", w.dims[0]}, {"kernel", kernel},
             {"stride", ints_attribute(node, "strides", {1, 1})}, {"padding", {pads[0], pads[1]}},
             {"dilation", ints_attribute(node, "dilations", {1, 1})}, {"bias", bias}},
        {x}, weights);
  }

  void import_pool(const onnx::NodeProto& node) {
    const ValueId x = value(node.input(0), at(node));
    const bool max = node.op_type() == "MaxPool";
    if (string_attribute(node, "auto_pad", "NOTSET") != "NOTSET") unsupported(node, "auto_pad is not supported; export explicit pads");
    if (int_attribute(node, "ceil_mode", 0) != 0) unsupported(node, "ceil_mode=1 is not supported");
    if (ints_attribute(node, "dilations", {1, 1}) != std::vector<std::int64_t>{1, 1}) unsupported(node, "dilated pooling is not supported");
    if (int_attribute(node, "storage_order", 0) != 0) unsupported(node, "storage_order=1 is not supported");
    const std::vector<std::int64_t> kernel = ints_attribute(node, "kernel_shape", {});
    const std::vector<std::int64_t> pads = ints_attribute(node, "pads", {0, 0, 0, 0});
    if (kernel.size() != 2) unsupported(node, "only 2-D pooling is supported");
    if (pads.size() != 4 || pads[0] != pads[2] || pads[1] != pads[3]) unsupported(node, "asymmetric pads are not supported");
    Json options{{"kernel", kernel}, {"stride", ints_attribute(node, "strides", {1, 1})}, {"padding", {pads[0], pads[1]}}};
    if (!max) options["count_include_pad"] = int_attribute(node, "count_include_pad", 0) != 0;
    add(node, max ? "max_pool2d" : "avg_pool2d", options, {x});
  }

  void import_batch_norm(const onnx::NodeProto& node) {
    const ValueId x = value(node.input(0), at(node));
    if (int_attribute(node, "training_mode", 0) != 0) unsupported(node, "training_mode=1 is not supported (export in eval mode)");
    const OnnxConstant& scale = require_constant(node, 1);
    const std::int64_t channels = scale.elements();
    std::map<std::string, OnnxConstant> weights{{"weight", scale}, {"bias", require_constant(node, 2)}};
    const std::string kind = shape_of(x).rank() == 4 ? "batch_norm2d" : "batch_norm1d";
    const OnnxConstant& mean = require_constant(node, 3);
    const OnnxConstant& var = require_constant(node, 4);
    for (OnnxConstant* t : {&weights["weight"], &weights["bias"]}) t->dims = {t->elements()};
    add(node, kind, Json{{"num_features", channels}, {"eps", static_cast<double>(float_attribute(node, "epsilon", 1e-5f))}}, {x},
        weights);
    // Shapes are checked against the layer's when the store is filled (finish).
    const std::string name = graph_->nodes().back().name;
    weights_[name + ".running_mean"] = mean;
    weights_[name + ".running_var"] = var;
    weights_[name + ".num_batches_tracked"] = filled(1, 0.0f);
  }

  // GlobalAveragePool (N, C, 1, 1) is only supported when flattened at once, as ember's
  // global_avg_pool outputs (N, C) (PyTorch: AdaptiveAvgPool2d(1) then flatten).
  void import_global_average_pool(int index) {
    const onnx::NodeProto& node = g_.node(index);
    const ValueId x = value(node.input(0), at(node));
    const int next = only_consumer(node.output(0));
    if (next >= 0) {
      const onnx::NodeProto& flatten = g_.node(next);
      const bool is_flatten = flatten.op_type() == "Flatten" && int_attribute(flatten, "axis", 1) == 1;
      const bool is_reshape = flatten.op_type() == "Reshape" && flattens(flatten, shape_of(x)[1]);
      if (is_flatten || is_reshape) {
        consume(next);
        add(flatten, "global_avg_pool", Json::object(), {x});
        return;
      }
    }
    unsupported(node, "a GlobalAveragePool must be followed by a Flatten (axis 1) or a Reshape to (N, C) as its only use");
  }

  // Does a Reshape's shape, constant or evaluated (x.view(x.size(0), -1)), make (N, elements)?
  bool flattens(const onnx::NodeProto& node, std::int64_t elements) const {
    const ShapeIntegers* shape = node.input_size() > 1 ? facts_.integers_of(node.input(1)) : nullptr;
    if (!shape || shape->scalar || shape->values.size() != 2 || !shape->values[1].is_constant()) return false;
    const BatchAffine n = shape->values[0];
    const std::int64_t c = shape->values[1].constant;
    const bool batch = n == BatchAffine{0, 0} || n == BatchAffine{0, 1};
    return ((batch || n == BatchAffine{-1, 0}) && c == elements) || (batch && c == -1);
  }

  void import_flatten(const onnx::NodeProto& node) {
    const ValueId x = value(node.input(0), at(node));
    if (int_attribute(node, "axis", 1) != 1) unsupported(node, "only Flatten with axis 1 (keep the batch) is supported");
    add(node, "flatten", Json::object(), {x});
  }

  void import_reshape(const onnx::NodeProto& node) {
    const ValueId x = value(node.input(0), at(node));
    if (!flattens(node, shape_of(x).sample_elements())) {
      unsupported(node, "only a Reshape to (N, -1) (a flatten, with a constant shape) is supported");
    }
    add(node, "flatten", Json::object(), {x});
  }

  void import_gemm(const onnx::NodeProto& node) {
    const ValueId x = value(node.input(0), at(node));
    if (float_attribute(node, "alpha", 1.0f) != 1.0f || float_attribute(node, "beta", 1.0f) != 1.0f || int_attribute(node, "transA", 0) != 0) {
      unsupported(node, "only Gemm with alpha 1, beta 1 and transA 0 is supported");
    }
    const OnnxConstant& b = require_constant(node, 1);
    if (b.dims.size() != 2) unsupported(node, "B must be a matrix");
    const OnnxConstant weight = int_attribute(node, "transB", 0) != 0 ? b : transposed(b);
    std::map<std::string, OnnxConstant> weights{{"weight", weight}};
    const bool bias = node.input_size() > 2 && !node.input(2).empty();
    if (bias) {
      OnnxConstant c = require_constant(node, 2);
      if (c.elements() != weight.dims[0]) unsupported(node, "only a bias C of out_features values is supported");
      c.dims = {weight.dims[0]};
      weights["bias"] = c;
    }
    add(node, "linear", Json{{"in_features", weight.dims[1]}, {"out_features", weight.dims[0]}, {"bias", bias}}, {x}, weights);
  }

  // MatMul(x, W) with W constant (in, out), and an Add of a constant bias (out) after it
  // when that is its only use: ember's linear.
  void import_matmul(int index) {
    const onnx::NodeProto& node = g_.node(index);
    const ValueId x = value(node.input(0), at(node));
    const OnnxConstant& w = require_constant(node, 1);
    if (w.dims.size() != 2) unsupported(node, "only MatMul by a constant matrix (a Linear's weight) is supported");
    std::map<std::string, OnnxConstant> weights{{"weight", transposed(w)}};
    const onnx::NodeProto* last = &node;
    const int next = only_consumer(node.output(0));
    if (next >= 0 && g_.node(next).op_type() == "Add") {
      const onnx::NodeProto& add_node = g_.node(next);
      const std::string& other = add_node.input(0) == node.output(0) ? add_node.input(1) : add_node.input(0);
      const OnnxConstant* bias = constant(other);
      if (bias && bias->is_float && bias->elements() == w.dims[1] && (bias->dims.size() == 1)) {
        OnnxConstant b = *bias;
        weights["bias"] = b;
        consume(next);
        last = &add_node;
      }
    }
    add(*last, "linear", Json{{"in_features", w.dims[0]}, {"out_features", w.dims[1]}, {"bias", weights.count("bias") > 0}}, {x}, weights);
  }

  void import_add(const onnx::NodeProto& node) {
    const bool a_constant = constant(node.input(0)) != nullptr, b_constant = constant(node.input(1)) != nullptr;
    if (!a_constant && !b_constant) {
      const ValueId a = value(node.input(0), at(node)), b = value(node.input(1), at(node));
      if (!(shape_of(a) == shape_of(b))) unsupported(node, "an Add of two tensors must have equal shapes (no broadcasting), found " + shape_of(a).str() + " and " + shape_of(b).str());
      add(node, "add", Json::object(), {a, b});
      return;
    }
    if (a_constant && b_constant) unsupported(node, "an Add of two constants");
    const std::string& tensor = a_constant ? node.input(1) : node.input(0);
    const ValueId x = value(tensor, at(node));
    const OnnxConstant& c = *constant(a_constant ? node.input(0) : node.input(1));
    const Shape& s = shape_of(x);
    std::vector<std::int64_t> table = c.dims;
    if (table.size() == 3 && table[0] == 1) table.erase(table.begin());
    if (s.rank() == 3 && c.is_float && table == std::vector<std::int64_t>{s[1], s[2]}) {
      OnnxConstant weight = c;
      weight.dims = table;
      add(node, "positional_embedding", Json{{"tokens", s[1]}, {"features", s[2]}}, {x}, {{"weight", weight}});
      return;
    }
    unsupported(node, "an Add of a constant is supported as a bias after MatMul or a (T, D) positional embedding of a (N, T, D) tensor");
  }

  void import_softmax(const onnx::NodeProto& node) {
    const ValueId x = value(node.input(0), at(node));
    const std::int64_t rank = shape_of(x).rank();
    const std::int64_t axis = int_attribute(node, "axis", -1);
    if (axis != -1 && axis != rank - 1) unsupported(node, "only Softmax over the last axis is supported, found axis " + std::to_string(axis));
    add(node, "softmax", Json::object(), {x});
  }

  void import_layer_norm(const onnx::NodeProto& node) {
    const ValueId x = value(node.input(0), at(node));
    const std::int64_t rank = shape_of(x).rank();
    const std::int64_t axis = int_attribute(node, "axis", -1);
    if (axis != -1 && axis != rank - 1) unsupported(node, "only LayerNormalization over the last axis is supported");
    if (int_attribute(node, "stash_type", 1) != 1) unsupported(node, "stash_type other than float is not supported");
    const OnnxConstant& scale = require_constant(node, 1);
    const std::int64_t features = shape_of(x)[static_cast<int>(rank - 1)];
    if (scale.elements() != features) unsupported(node, "scale must have " + std::to_string(features) + " values");
    OnnxConstant weight = scale;
    weight.dims = {features};
    OnnxConstant bias = node.input_size() > 2 && !node.input(2).empty() ? require_constant(node, 2) : filled(features, 0.0f);
    bias.dims = {bias.elements()};
    add(node, "layer_norm", Json{{"features", features}, {"eps", static_cast<double>(float_attribute(node, "epsilon", 1e-5f))}}, {x},
        {{"weight", weight}, {"bias", bias}});
  }

  void import_reduce_mean(int index) {
    const onnx::NodeProto& node = g_.node(index);
    const ValueId x = value(node.input(0), at(node));
    if (import_decomposed_layer_norm(index)) return;
    const std::vector<std::int64_t> axes = ints_attribute(node, "axes", {});
    // x.mean(dim=(2, 3)) of a feature map (PyTorch's ResNet head): global average pooling.
    if (shape_of(x).rank() == 4 && (axes == std::vector<std::int64_t>{2, 3} || axes == std::vector<std::int64_t>{-2, -1}) &&
        int_attribute(node, "keepdims", 1) == 0) {
      add(node, "global_avg_pool", Json::object(), {x});
      return;
    }
    if (shape_of(x).rank() != 3 || axes != std::vector<std::int64_t>{1} || int_attribute(node, "keepdims", 1) != 0) {
      unsupported(node, "only ReduceMean over the tokens (axes [1], keepdims 0, of (N, T, C)) is supported");
    }
    add(node, "mean_pool_tokens", Json::object(), {x});
  }

  // Is `node` a ReduceMean over the last axis of a rank-`rank` tensor, keeping it?
  static bool mean_over_last_axis(const onnx::NodeProto& node, int rank) {
    const std::vector<std::int64_t> axes = ints_attribute(node, "axes", {});
    return node.op_type() == "ReduceMean" && axes.size() == 1 && (axes[0] == -1 || axes[0] == rank - 1) &&
           int_attribute(node, "keepdims", 1) == 1;
  }
  // The other input of a two-input node, given one.
  static const std::string& other_input(const onnx::NodeProto& node, const std::string& one) {
    return node.input(0) == one ? node.input(1) : node.input(0);
  }

  // LayerNorm as PyTorch exports it below opset 17: mean = ReduceMean(x), d = x - mean,
  // var = ReduceMean(Pow(d, 2)) (or d * d), y = d / Sqrt(var + eps) * weight + bias.
  bool import_decomposed_layer_norm(int index) {
    const onnx::NodeProto& mean = g_.node(index);
    const std::string& x = mean.input(0);
    const auto known = values_.find(x);
    if (known == values_.end()) return false;
    const int rank = shape_of(known->second).rank();
    const std::int64_t features = shape_of(known->second)[rank - 1];
    if (!mean_over_last_axis(mean, rank)) return false;
    auto next = [&](const std::string& tensor, const char* op) {
      const int n = only_consumer(tensor);
      return n >= 0 && g_.node(n).op_type() == op ? n : -1;
    };
    const int sub = next(mean.output(0), "Sub");
    if (sub < 0 || g_.node(sub).input(0) != x || g_.node(sub).input(1) != mean.output(0)) return false;
    const std::string& d = g_.node(sub).output(0);
    const auto d_users = consumers_.find(d);
    if (d_users == consumers_.end() || d_users->second.size() != 2) return false;
    int square = -1, divide = -1;
    for (const int user : d_users->second) {
      const onnx::NodeProto& u = g_.node(user);
      if (u.op_type() == "Pow" && u.input(0) == d && is_scalar(constant(u.input(1)), 2.0f, 0.0f)) square = user;
      if (u.op_type() == "Mul" && u.input(0) == d && u.input(1) == d) square = user;
      if (u.op_type() == "Div" && u.input(0) == d) divide = user;
    }
    if (square < 0 || divide < 0) return false;
    const int variance = only_consumer(g_.node(square).output(0));
    if (variance < 0 || !mean_over_last_axis(g_.node(variance), rank)) return false;
    const int shift = next(g_.node(variance).output(0), "Add");
    if (shift < 0) return false;
    const OnnxConstant* eps = constant(other_input(g_.node(shift), g_.node(variance).output(0)));
    if (!eps || !eps->is_float || eps->floats.size() != 1) return false;
    const int root = next(g_.node(shift).output(0), "Sqrt");
    if (root < 0 || only_consumer(g_.node(root).output(0)) != divide || g_.node(divide).input(1) != g_.node(root).output(0)) return false;
    const int scale = next(g_.node(divide).output(0), "Mul");
    if (scale < 0) return false;
    const int offset = next(g_.node(scale).output(0), "Add");
    if (offset < 0) return false;
    const OnnxConstant* weight = constant(other_input(g_.node(scale), g_.node(divide).output(0)));
    const OnnxConstant* bias = constant(other_input(g_.node(offset), g_.node(scale).output(0)));
    for (const OnnxConstant* c : {weight, bias}) {
      if (!c || !c->is_float || c->dims != std::vector<std::int64_t>{features}) return false;
    }
    for (const int i : {sub, square, variance, shift, root, divide, scale, offset}) consume(i);
    add(g_.node(offset), "layer_norm", Json{{"features", features}, {"eps", static_cast<double>(eps->floats[0])}},
        {known->second}, {{"weight", *weight}, {"bias", *bias}});
    return true;
  }

  // x / sqrt(2) -> Erf -> + 1 -> x * . -> * 0.5: exact GELU (PyTorch's export of nn.GELU()).
  bool import_erf_gelu(int index) {
    const onnx::NodeProto& div = g_.node(index);
    if (div.input_size() != 2 || !is_scalar(constant(div.input(1)), static_cast<float>(std::sqrt(2.0)), 1e-6f)) return false;
    const std::string& x = div.input(0);
    const int erf = only_consumer(div.output(0));
    if (erf < 0 || g_.node(erf).op_type() != "Erf") return false;
    const int plus = only_consumer(g_.node(erf).output(0));
    if (plus < 0 || g_.node(plus).op_type() != "Add") return false;
    const onnx::NodeProto& p = g_.node(plus);
    const std::string& one = p.input(0) == g_.node(erf).output(0) ? p.input(1) : p.input(0);
    if (!is_scalar(constant(one), 1.0f, 0.0f)) return false;
    const int times_x = only_consumer(p.output(0));
    if (times_x < 0 || g_.node(times_x).op_type() != "Mul") return false;
    const onnx::NodeProto& m = g_.node(times_x);
    if (!((m.input(0) == x && m.input(1) == p.output(0)) || (m.input(1) == x && m.input(0) == p.output(0)))) return false;
    const int half = only_consumer(m.output(0));
    if (half < 0 || g_.node(half).op_type() != "Mul") return false;
    const onnx::NodeProto& h = g_.node(half);
    const std::string& half_constant = h.input(0) == m.output(0) ? h.input(1) : h.input(0);
    if (!is_scalar(constant(half_constant), 0.5f, 0.0f)) return false;
    for (const int i : {erf, plus, times_x, half}) consume(i);
    add(h, "gelu", Json{{"approximate", "none"}}, {value(x, at(div))});
    return true;
  }

  // --- The result ------------------------------------------------------------------------
  TrainedModel finish(std::size_t memory_limit) {
    ParameterLayout layout = parameter_layout(*graph_);
    check_model_memory(*graph_, layout, 1, resolve_memory_limit(memory_limit), source_);
    auto parameters = std::make_unique<ParameterStore>(std::move(layout));
    auto copy = [&](const ParameterEntry& e, std::span<float> block) {
      auto it = weights_.find(e.name);
      if (it == weights_.end()) throw Error(source_ + ": no tensor for ember's " + e.name);
      std::vector<std::int64_t> dims(e.spec.shape.dims().begin(), e.spec.shape.dims().end());
      if (it->second.dims != dims || !it->second.is_float || it->second.elements() != e.spec.shape.elements()) {
        throw Error(source_ + ": the tensor for " + e.name + " has the wrong shape, expected " + e.spec.shape.str());
      }
      std::copy(it->second.floats.begin(), it->second.floats.end(), block.begin() + e.offset);
    };
    for (const ParameterEntry& e : parameters->entries()) copy(e, parameters->values());
    for (const ParameterEntry& e : parameters->buffer_entries()) copy(e, parameters->buffers());
    TrainedModel model;
    model.graph = std::move(graph_);
    model.parameters = std::move(parameters);
    model.run = Json::object();
    for (const onnx::StringStringEntryProto& entry : model_.metadata_props()) {
      for (const char* key : {"mean", "std"}) {
        if (entry.key() != std::string("ember.input_") + key) continue;
        // One number, or one per channel (as the run settings hold them).
        const Json value = Json::parse(entry.value(), nullptr, /*allow_exceptions=*/false);
        const bool numbers = value.is_array() && !value.empty() &&
                             std::all_of(value.begin(), value.end(), [](const Json& v) { return v.is_number(); });
        if (!value.is_number() && !numbers) {
          throw Error(source_ + ": metadata " + entry.key() + ": expected a number or a list of numbers, found \"" + entry.value() + "\"");
        }
        model.run[key] = value;
      }
      if (entry.key() == "ember.class_names") {
        const Json names = Json::parse(entry.value(), nullptr, false);
        if (names.is_array()) model.run["class_names"] = names;
      }
    }
    return model;
  }

  const onnx::ModelProto& model_;
  const onnx::GraphProto& g_;
  std::string source_;
  int opset_ = 0;
  std::map<std::string, OnnxConstant> constants_;
  OnnxShapeFacts facts_;
  std::vector<OnnxAttention> attentions_;
  std::map<int, std::size_t> attention_of_;  // node -> its attention
  std::vector<bool> folded_;  // computed from constants alone (onnx_constants.h)
  std::vector<bool> done_;    // imported (as a layer, or as part of one)
  std::map<std::string, std::vector<int>> consumers_;
  std::map<std::string, ValueId> values_;
  std::set<std::string> used_names_;
  std::map<std::string, OnnxConstant> weights_;
  std::unique_ptr<Graph> graph_;
};

}  // namespace

TrainedModel import_onnx_bytes(std::string_view bytes, const std::string& source, std::size_t memory_limit) {
  onnx::ModelProto model;
  if (bytes.size() > static_cast<std::size_t>(INT_MAX) || !model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    throw Error(source + ": not an ONNX model (the protobuf does not parse: truncated or another format?)");
  }
  if (!model.has_graph()) throw Error(source + ": the ONNX model has no graph");
  return Importer(model, source).run(memory_limit);
}

TrainedModel import_onnx(const std::string& path, std::size_t memory_limit) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error(path + ": cannot open");
  file.seekg(0, std::ios::end);
  const std::streamoff size = file.tellg();
  if (size < 0) throw Error(path + ": cannot read");
  const std::size_t limit = resolve_memory_limit(memory_limit);
  if (static_cast<std::size_t>(size) > limit) {
    throw Error(path + ": " + std::to_string(size) + " bytes, more than the memory limit of " + std::to_string(limit));
  }
  std::string bytes(static_cast<std::size_t>(size), '\0');
  file.seekg(0);
  if (!file.read(bytes.data(), size)) throw Error(path + ": read failed");
  return import_onnx_bytes(bytes, path, memory_limit);
}

void import_onnx_to_checkpoint(const std::string& onnx_path, const std::string& checkpoint) {
  TrainedModel model = import_onnx(onnx_path);
  TrainingState state;
  std::string name = onnx_path.substr(onnx_path.rfind('/') == std::string::npos ? 0 : onnx_path.rfind('/') + 1);
  state.model_spec = spec_from_graph(*model.graph, name);
  state.run = model.run;
  state.run["imported_from"] = onnx_path;
  state.optimizer = Json{{"name", "sgd"}};
  const std::unique_ptr<Optimizer> optimizer = make_optimizer("sgd", OptimizerOptions{}, *model.parameters);
  save_training_state(checkpoint, state, *model.parameters, *optimizer);
}

}  // namespace ember
