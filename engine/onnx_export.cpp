#include "engine/onnx_export.h"

#include <cmath>
#include <limits>
#include <vector>

#include <onnx/checker.h>
#include <onnx/shape_inference/implementation.h>

#include "engine/atomic_file.h"
#include "engine/ember.h"
#include "engine/error.h"
#include "engine/onnx_builder.h"
#include "engine/onnx_layer_export.h"
#include "engine/text.h"
#include "engine/training_state.h"

namespace ember {
namespace {

using A = OnnxAttribute;

std::vector<std::int64_t> dims_of(const Shape& shape) { return {shape.dims().begin(), shape.dims().end()}; }

// A layer option that is one number for both axes, or [height, width] (layers/options.h).
std::vector<std::int64_t> pair(const Json& value) {
  if (value.is_number()) return {value.get<std::int64_t>(), value.get<std::int64_t>()};
  return value.get<std::vector<std::int64_t>>();
}

// ONNX pads: the begins of every spatial axis, then the ends.
std::vector<std::int64_t> symmetric_pads(const Json& padding) {
  const std::vector<std::int64_t> p = pair(padding);
  return {p[0], p[1], p[0], p[1]};
}

// One layer's export: its ONNX names and weights, and the builder to add nodes with.
class LayerExport {
 public:
  LayerExport(OnnxGraphBuilder& builder, const Graph& graph, const ParameterStore& parameters, int node_index, int opset)
      : b(builder), opset(opset), options(graph.nodes()[static_cast<std::size_t>(node_index)].layer->options()), graph_(graph),
        parameters_(parameters), index_(node_index), node_(graph.nodes()[static_cast<std::size_t>(node_index)]) {}

  OnnxGraphBuilder& b;
  const int opset;
  const Json options;

  const std::string& name() const { return node_.name; }
  std::string kind() const { return std::string(node_.layer->kind()); }
  std::string input(int i = 0) const { return value_name(node_.inputs.at(static_cast<std::size_t>(i))); }
  std::string output() const { return value_name(node_.output); }
  // A name for an intermediate value or a node of this layer's decomposition.
  std::string part(const std::string& what) const { return name() + "/" + what; }
  const Shape& input_shape(int i = 0) const { return graph_.value_shape(node_.inputs.at(static_cast<std::size_t>(i))); }

  // The layer's parameter `parameter` ("weight") as an initializer under ember's name.
  std::string parameter(const std::string& parameter) const {
    for (const int entry : parameters_.node_entries(index_)) {
      const ParameterEntry& e = parameters_.entries()[static_cast<std::size_t>(entry)];
      if (e.spec.name != parameter) continue;
      b.floats(e.name, dims_of(e.spec.shape), {parameters_.value_data(entry), static_cast<std::size_t>(e.spec.shape.elements())});
      return e.name;
    }
    throw Error("ONNX export: layer '" + name() + "' (" + kind() + ") has no parameter '" + parameter + "'");
  }
  std::string buffer(const std::string& buffer) const {
    for (const int entry : parameters_.node_buffer_entries(index_)) {
      const ParameterEntry& e = parameters_.buffer_entries()[static_cast<std::size_t>(entry)];
      if (e.spec.name != buffer) continue;
      const Tensor t = parameters_.buffer(entry);
      b.floats(e.name, dims_of(e.spec.shape), {t.data, static_cast<std::size_t>(e.spec.shape.elements())});
      return e.name;
    }
    throw Error("ONNX export: layer '" + name() + "' (" + kind() + ") has no buffer '" + buffer + "'");
  }
  bool has_parameter(const std::string& parameter) const {
    for (const int entry : parameters_.node_entries(index_)) {
      if (parameters_.entries()[static_cast<std::size_t>(entry)].spec.name == parameter) return true;
    }
    return false;
  }
  // A weight (out, in) as the (in, out) right operand of a MatMul: a Transpose of the
  // initializer, so the file keeps the tensor under ember's (and PyTorch's) name and layout.
  std::string transposed_parameter(const std::string& parameter) {
    return b.node("Transpose", part(parameter + "_t"), {this->parameter(parameter)}, {part(parameter + "_t")},
                  {A::of("perm", std::vector<std::int64_t>{1, 0})});
  }
  [[noreturn]] void refuse(const std::string& why) const {
    throw Error("ONNX export: layer '" + name() + "' (" + kind() + "): " + why);
  }

 private:
  std::string value_name(ValueId value) const {
    return value == graph_.input() ? "input" : graph_.nodes()[static_cast<std::size_t>(graph_.producer(value))].name;
  }

  const Graph& graph_;
  const ParameterStore& parameters_;
  int index_;
  const Node& node_;
};

void export_conv2d(LayerExport& l) {
  std::vector<std::string> inputs{l.input(), l.parameter("weight")};
  if (l.options.at("bias").get<bool>()) inputs.push_back(l.parameter("bias"));
  l.b.node("Conv", l.name(), inputs, {l.output()},
           {A::of("kernel_shape", pair(l.options.at("kernel"))), A::of("strides", pair(l.options.at("stride"))),
            A::of("pads", symmetric_pads(l.options.at("padding"))), A::of("dilations", pair(l.options.at("dilation"))),
            A::of("group", std::int64_t{1})});
}

void export_pool(LayerExport& l, bool max) {
  std::vector<OnnxAttribute> attributes{A::of("kernel_shape", pair(l.options.at("kernel"))),
                                        A::of("strides", pair(l.options.at("stride"))),
                                        A::of("pads", symmetric_pads(l.options.at("padding")))};
  if (!max) attributes.push_back(A::of("count_include_pad", std::int64_t{l.options.at("count_include_pad").get<bool>() ? 1 : 0}));
  l.b.node(max ? "MaxPool" : "AveragePool", l.name(), {l.input()}, {l.output()}, attributes);
}

// y = x W^T + b: Gemm for rows (PyTorch's export of nn.Linear on a matrix), MatMul and Add
// for a sequence (N, T, in).
void export_linear(LayerExport& l) {
  const bool bias = l.options.at("bias").get<bool>();
  if (l.input_shape().rank() == 2) {
    std::vector<std::string> inputs{l.input(), l.parameter("weight")};
    if (bias) inputs.push_back(l.parameter("bias"));
    l.b.node("Gemm", l.name(), inputs, {l.output()}, {A::of("transB", std::int64_t{1})});
    return;
  }
  const std::string w = l.transposed_parameter("weight");
  if (!bias) {
    l.b.node("MatMul", l.name(), {l.input(), w}, {l.output()});
    return;
  }
  const std::string product = l.b.node("MatMul", l.part("matmul"), {l.input(), w}, {l.part("matmul")});
  l.b.node("Add", l.name(), {product, l.parameter("bias")}, {l.output()});
}

// GELU as its formula (ONNX has no Gelu before opset 20), as PyTorch exports it.
void export_gelu(LayerExport& l) {
  const std::string x = l.input();
  const std::string half = l.b.scalar(l.part("half"), 0.5f);
  const std::string one = l.b.scalar(l.part("one"), 1.0f);
  std::string inner;
  if (l.options.at("approximate").get<std::string>() == "tanh") {
    // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    const std::string square = l.b.node("Mul", l.part("square"), {x, x}, {l.part("square")});
    const std::string cube = l.b.node("Mul", l.part("cube"), {square, x}, {l.part("cube")});
    const std::string scaled_cube =
        l.b.node("Mul", l.part("scaled_cube"), {cube, l.b.scalar(l.part("cubic_coefficient"), 0.044715f)}, {l.part("scaled_cube")});
    const std::string sum = l.b.node("Add", l.part("sum"), {x, scaled_cube}, {l.part("sum")});
    const std::string scaled = l.b.node("Mul", l.part("scaled"),
                                        {sum, l.b.scalar(l.part("sqrt_2_over_pi"), static_cast<float>(std::sqrt(2.0 / M_PI)))},
                                        {l.part("scaled")});
    inner = l.b.node("Tanh", l.part("tanh"), {scaled}, {l.part("tanh")});
  } else {
    // x Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))
    const std::string divided =
        l.b.node("Div", l.part("div"), {x, l.b.scalar(l.part("sqrt_2"), static_cast<float>(std::sqrt(2.0)))}, {l.part("div")});
    inner = l.b.node("Erf", l.part("erf"), {divided}, {l.part("erf")});
  }
  const std::string plus_one = l.b.node("Add", l.part("plus_one"), {inner, one}, {l.part("plus_one")});
  const std::string times_x = l.b.node("Mul", l.part("times_x"), {x, plus_one}, {l.part("times_x")});
  l.b.node("Mul", l.name(), {times_x, half}, {l.output()});
}

void export_layer_norm(LayerExport& l) {
  const float eps = static_cast<float>(l.options.at("eps").get<double>());
  const std::string weight = l.parameter("weight"), bias = l.parameter("bias");
  if (l.opset >= 17) {
    l.b.node("LayerNormalization", l.name(), {l.input(), weight, bias}, {l.output()},
             {A::of("axis", std::int64_t{-1}), A::of("epsilon", eps)});
    return;
  }
  // Below opset 17: (x - mean) / sqrt(var + eps) * weight + bias, var the biased variance.
  const std::vector<OnnxAttribute> last_axis{A::of("axes", std::vector<std::int64_t>{-1}), A::of("keepdims", std::int64_t{1})};
  const std::string mean = l.b.node("ReduceMean", l.part("mean"), {l.input()}, {l.part("mean")}, last_axis);
  const std::string centered = l.b.node("Sub", l.part("centered"), {l.input(), mean}, {l.part("centered")});
  const std::string square = l.b.node("Mul", l.part("square"), {centered, centered}, {l.part("square")});
  const std::string variance = l.b.node("ReduceMean", l.part("variance"), {square}, {l.part("variance")}, last_axis);
  const std::string shifted = l.b.node("Add", l.part("plus_eps"), {variance, l.b.scalar(l.part("eps"), eps)}, {l.part("plus_eps")});
  const std::string deviation = l.b.node("Sqrt", l.part("deviation"), {shifted}, {l.part("deviation")});
  const std::string normalized = l.b.node("Div", l.part("normalized"), {centered, deviation}, {l.part("normalized")});
  const std::string scaled = l.b.node("Mul", l.part("scaled"), {normalized, weight}, {l.part("scaled")});
  l.b.node("Add", l.name(), {scaled, bias}, {l.output()});
}

// Inference form: the running statistics, as PyTorch exports a BatchNorm in eval().
void export_batch_norm(LayerExport& l) {
  if (!l.options.at("track_running_stats").get<bool>()) {
    l.refuse("without running statistics it normalizes with each batch's own statistics, which ONNX's "
             "BatchNormalization (inference) does not; train with track_running_stats true to export");
  }
  const std::int64_t channels = l.options.at("num_features").get<std::int64_t>();
  std::string scale, shift;
  if (l.options.at("affine").get<bool>()) {
    scale = l.parameter("weight");
    shift = l.parameter("bias");
  } else {
    scale = l.b.floats(l.part("ones"), {channels}, std::vector<float>(static_cast<std::size_t>(channels), 1.0f));
    shift = l.b.floats(l.part("zeros"), {channels}, std::vector<float>(static_cast<std::size_t>(channels), 0.0f));
  }
  l.b.node("BatchNormalization", l.name(), {l.input(), scale, shift, l.buffer("running_mean"), l.buffer("running_var")},
           {l.output()}, {A::of("epsilon", static_cast<float>(l.options.at("eps").get<double>()))});
}

void export_global_avg_pool(LayerExport& l) {
  const std::string pooled = l.b.node("GlobalAveragePool", l.part("pool"), {l.input()}, {l.part("pool")});
  l.b.node("Flatten", l.name(), {pooled}, {l.output()}, {A::of("axis", std::int64_t{1})});
}

// (N, C, H, W) -> (N, H*W, C)
void export_tokens_from_feature_map(LayerExport& l) {
  const std::int64_t channels = l.input_shape()[1];
  const std::string shape = l.b.int64s(l.part("shape"), {0, channels, -1});
  const std::string rows = l.b.node("Reshape", l.part("reshape"), {l.input(), shape}, {l.part("reshape")});
  l.b.node("Transpose", l.name(), {rows}, {l.output()}, {A::of("perm", std::vector<std::int64_t>{0, 2, 1})});
}

void export_mean_pool_tokens(LayerExport& l) {
  l.b.node("ReduceMean", l.name(), {l.input()}, {l.output()},
           {A::of("axes", std::vector<std::int64_t>{1}), A::of("keepdims", std::int64_t{0})});
}

// score = x w^T + b (N, T, 1); a = softmax over T; y = sum_t a x.
void export_attention_pool(LayerExport& l) {
  const std::string w = l.transposed_parameter("weight");
  const std::string product = l.b.node("MatMul", l.part("matmul"), {l.input(), w}, {l.part("matmul")});
  const std::string score = l.b.node("Add", l.part("score"), {product, l.parameter("bias")}, {l.part("score")});
  const std::string weights = l.b.node("Softmax", l.part("softmax"), {score}, {l.part("softmax")}, {A::of("axis", std::int64_t{1})});
  const std::string weighted = l.b.node("Mul", l.part("weighted"), {l.input(), weights}, {l.part("weighted")});
  l.b.node("ReduceSum", l.name(), {weighted, l.b.int64s(l.part("axes"), {1})}, {l.output()}, {A::of("keepdims", std::int64_t{0})});
}

// layers/multi_head_attention.h, as MatMuls: QKV = X W_in^T + b_in, split into Q | K | V
// (columns h*D..(h+1)*D of each are head h), scores Q_h K_h^T scaled by 1/sqrt(D) (plus
// -inf above the diagonal when causal), softmax over the keys, times V_h, heads
// concatenated, then the output projection.
void export_multi_head_attention(LayerExport& l) {
  if (l.options.at("key_padding_mask").get<bool>()) {
    l.refuse("key_padding_mask (a second input of valid key counts) is not exported; export the model without it");
  }
  const std::int64_t d = l.options.at("d_model").get<std::int64_t>();
  const std::int64_t heads = l.options.at("heads").get<std::int64_t>();
  const std::int64_t head_dim = d / heads;
  const std::int64_t tokens = l.input_shape()[1];
  const bool bias = l.options.at("bias").get<bool>();
  auto b = [&](const std::string& op, const std::string& what, std::vector<std::string> inputs, std::vector<OnnxAttribute> a = {}) {
    return l.b.node(op, l.part(what), std::move(inputs), {l.part(what)}, std::move(a));
  };
  auto perm = [](std::vector<std::int64_t> p) { return std::vector<OnnxAttribute>{A::of("perm", std::move(p))}; };

  std::string qkv = b("MatMul", "qkv_matmul", {l.input(), l.transposed_parameter("in_proj_weight")});
  if (bias) qkv = b("Add", "qkv", {qkv, l.parameter("in_proj_bias")});
  l.b.node("Split", l.part("split"), {qkv, l.b.int64s(l.part("split_sizes"), {d, d, d})}, {l.part("q"), l.part("k"), l.part("v")},
           {A::of("axis", std::int64_t{2})});
  const std::string head_shape = l.b.int64s(l.part("head_shape"), {0, 0, heads, head_dim});
  const std::string q = b("Transpose", "q_heads", {b("Reshape", "q_split", {l.part("q"), head_shape})}, perm({0, 2, 1, 3}));
  const std::string k = b("Transpose", "k_heads", {b("Reshape", "k_split", {l.part("k"), head_shape})}, perm({0, 2, 3, 1}));
  const std::string v = b("Transpose", "v_heads", {b("Reshape", "v_split", {l.part("v"), head_shape})}, perm({0, 2, 1, 3}));
  std::string scores = b("MatMul", "scores_matmul", {q, k});
  scores = b("Mul", "scores", {scores, l.b.scalar(l.part("scale"), 1.0f / std::sqrt(static_cast<float>(head_dim)))});
  if (l.options.at("causal").get<bool>()) {
    std::vector<float> mask(static_cast<std::size_t>(tokens * tokens), 0.0f);
    for (std::int64_t t = 0; t < tokens; ++t) {
      for (std::int64_t s = t + 1; s < tokens; ++s) mask[static_cast<std::size_t>(t * tokens + s)] = -std::numeric_limits<float>::infinity();
    }
    scores = b("Add", "masked_scores", {scores, l.b.floats(l.part("causal_mask"), {tokens, tokens}, mask)});
  }
  const std::string probabilities = b("Softmax", "softmax", {scores}, {A::of("axis", std::int64_t{-1})});
  const std::string attended = b("MatMul", "attended", {probabilities, v});
  const std::string merged = b("Transpose", "merged", {attended}, perm({0, 2, 1, 3}));
  const std::string concatenated = b("Reshape", "concat", {merged, l.b.int64s(l.part("model_shape"), {0, 0, d})});
  const std::string w_out = l.transposed_parameter("out_proj_weight");
  if (!bias) {
    l.b.node("MatMul", l.name(), {concatenated, w_out}, {l.output()});
    return;
  }
  const std::string projected = b("MatMul", "out_matmul", {concatenated, w_out});
  l.b.node("Add", l.name(), {projected, l.parameter("out_proj_bias")}, {l.output()});
}

void export_layer(LayerExport& l) {
  const std::string kind = l.kind();
  if (kind == "conv2d") return export_conv2d(l);
  if (kind == "max_pool2d") return export_pool(l, true);
  if (kind == "avg_pool2d") return export_pool(l, false);
  if (kind == "linear") return export_linear(l);
  if (kind == "relu") return void(l.b.node("Relu", l.name(), {l.input()}, {l.output()}));
  if (kind == "gelu") return export_gelu(l);
  if (kind == "dropout") return void(l.b.node("Identity", l.name(), {l.input()}, {l.output()}));
  if (kind == "softmax") return void(l.b.node("Softmax", l.name(), {l.input()}, {l.output()}, {A::of("axis", std::int64_t{-1})}));
  if (kind == "flatten") return void(l.b.node("Flatten", l.name(), {l.input()}, {l.output()}, {A::of("axis", std::int64_t{1})}));
  if (kind == "add") return void(l.b.node("Add", l.name(), {l.input(0), l.input(1)}, {l.output()}));
  if (kind == "layer_norm") return export_layer_norm(l);
  if (kind == "batch_norm1d" || kind == "batch_norm2d") return export_batch_norm(l);
  if (kind == "global_avg_pool") return export_global_avg_pool(l);
  if (kind == "positional_embedding") return void(l.b.node("Add", l.name(), {l.input(), l.parameter("weight")}, {l.output()}));
  if (kind == "tokens_from_feature_map") return export_tokens_from_feature_map(l);
  if (kind == "mean_pool_tokens") return export_mean_pool_tokens(l);
  if (kind == "attention_pool") return export_attention_pool(l);
  if (kind == "multi_head_attention") return export_multi_head_attention(l);
  l.refuse("no ONNX export for this layer kind");
}

void set_tensor_type(onnx::ValueInfoProto& info, const std::string& name, const Shape& batch_one) {
  info.set_name(name);
  onnx::TypeProto_Tensor* tensor = info.mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto::FLOAT);
  onnx::TensorShapeProto* shape = tensor->mutable_shape();
  shape->add_dim()->set_dim_param("batch");
  for (int axis = 1; axis < batch_one.rank(); ++axis) shape->add_dim()->set_dim_value(batch_one[axis]);
}

// ONNX's checker and strict shape inference over the model, as a consumer would run them.
void check_exported(onnx::ModelProto model) {
  try {
    onnx::checker::check_model(model);
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(/*check_type=*/true, /*strict_mode=*/1));
  } catch (const std::exception& e) {
    throw Error(std::string("ONNX export: the exported model fails ONNX's checks: ") + e.what());
  }
}

}  // namespace

void add_layer_nodes(onnx::GraphProto& onnx_graph, const Graph& graph, const ParameterStore& parameters, int node, int opset) {
  OnnxGraphBuilder builder(onnx_graph);
  LayerExport layer(builder, graph, parameters, node, opset);
  export_layer(layer);
}

bool onnx_available() { return true; }

std::string onnx_model_bytes(const Graph& graph, const ParameterStore& parameters, const OnnxExportOptions& options) {
  if (options.opset < onnx_min_opset || options.opset > onnx_max_opset) {
    throw Error("ONNX export: opset must be " + std::to_string(onnx_min_opset) + " to " + std::to_string(onnx_max_opset) +
                ", found " + std::to_string(options.opset));
  }
  onnx::ModelProto model;
  model.set_ir_version(8);  // ONNX 1.10..1.12 (opset 15..17); ONNX Runtime reads it
  model.set_producer_name("ember");
  model.set_producer_version(ember_version());
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(options.opset);
  for (const auto& [key, value] : options.metadata) {
    onnx::StringStringEntryProto* entry = model.add_metadata_props();
    entry->set_key(key);
    entry->set_value(value);
  }
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name(options.model_name);
  set_tensor_type(*g->add_input(), "input", graph.value_shape(graph.input()));
  for (int i = 0; i < static_cast<int>(graph.nodes().size()); ++i) add_layer_nodes(*g, graph, parameters, i, options.opset);
  if (graph.output() == graph.input()) throw Error("ONNX export: the model's output is its input; nothing to export");
  set_tensor_type(*g->add_output(), graph.nodes()[static_cast<std::size_t>(graph.producer(graph.output()))].name,
                  graph.value_shape(graph.output()));
  check_exported(model);
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw Error("ONNX export: the model does not serialize (over 2 GiB?)");
  return bytes;
}

void export_onnx(const Graph& graph, const ParameterStore& parameters, const std::string& path, const OnnxExportOptions& options) {
  const std::string bytes = onnx_model_bytes(graph, parameters, options);
  const std::span<const std::byte> parts[] = {std::as_bytes(std::span(bytes))};
  write_file_atomically(path, parts);
}

void export_checkpoint_onnx(const std::string& checkpoint, const std::string& onnx_path, int opset) {
  const TrainedModel model = load_trained_model(checkpoint);
  OnnxExportOptions options;
  options.opset = opset;
  for (const char* key : {"mean", "std"}) {
    if (model.run.contains(key)) options.metadata[std::string("ember.input_") + key] = model.run[key].dump();
  }
  for (const char* key : {"class_names", "classes"}) {
    const auto it = model.run.find(key);
    if (it == model.run.end() || !it->is_array()) continue;
    bool strings = true;
    for (const Json& name : *it) strings = strings && name.is_string();
    if (strings) options.metadata["ember.class_names"] = it->dump();
  }
  try {
    export_onnx(*model.graph, *model.parameters, onnx_path, options);
  } catch (const Error& e) {
    throw Error(checkpoint + " -> " + onnx_path + ": " + e.what());
  }
}

}  // namespace ember
