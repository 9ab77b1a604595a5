#include "engine/onnx_attention_match.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <optional>
#include <set>

#include "engine/error.h"
#include "engine/onnx_attributes.h"

namespace ember {
namespace {

using Affine = BatchAffine;

// What one factor of an axis counts. A part is one third of the in-projection (role 0, 1, 2
// for the query, key, value); heads and head dims are split from a part (same role), role 3
// once they are the attention's output. PyTorch 2 splits the projection into `thirds` (3,
// outer) and a part of role -1 (inner), and a Gather of one third gives the part its role.
enum class Kind { batch, tokens, features, projection, thirds, part, heads, head_dim, output };
constexpr int output_role = 3;

struct Factor {
  Kind kind;
  Affine size;
  int role = -1;
  bool same_as(const Factor& other) const { return kind == other.kind && size == other.size; }
};
using Axis = std::vector<Factor>;

struct Layout {
  std::vector<Axis> axes;
  double scale = 1.0;  // the tensor is `scale` times what the factors describe
};

std::string kind_name(Kind k) {
  switch (k) {
    case Kind::batch: return "N";
    case Kind::tokens: return "T";
    case Kind::features: return "E";
    case Kind::projection: return "3E";
    case Kind::thirds: return "3";
    case Kind::part: return "E of Q|K|V";
    case Kind::heads: return "H";
    case Kind::head_dim: return "D";
    case Kind::output: return "E'";
  }
  return "?";
}
std::string layout_str(const Layout& l) {
  std::string s = "(";
  for (std::size_t a = 0; a < l.axes.size(); ++a) {
    if (a) s += ", ";
    if (l.axes[a].empty()) s += "1";
    for (std::size_t f = 0; f < l.axes[a].size(); ++f) s += (f ? "*" : "") + kind_name(l.axes[a][f].kind);
  }
  return s + ")";
}
bool is_axis(const Axis& axis, Kind kind, int role = -2) {
  return axis.size() == 1 && axis[0].kind == kind && (role == -2 || axis[0].role == role);
}
bool same_axes(const std::vector<Axis>& a, const std::vector<Axis>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].size() != b[i].size()) return false;
    for (std::size_t f = 0; f < a[i].size(); ++f) {
      if (!a[i][f].same_as(b[i][f])) return false;
    }
  }
  return true;
}

std::string number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", v);
  return text;
}


OnnxConstant transposed(const OnnxConstant& m) {
  OnnxConstant t = m;
  const std::int64_t rows = m.dims[0], columns = m.dims[1];
  t.dims = {columns, rows};
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < columns; ++c) {
      t.floats[static_cast<std::size_t>(c * rows + r)] = m.floats[static_cast<std::size_t>(r * columns + c)];
    }
  }
  return t;
}

// One attention being matched.
struct Candidate {
  std::string input;
  std::int64_t tokens = 0, d_model = 0, heads = 0;
  int in_projection = -1, out_projection = -1, in_bias_node = -1;
  std::optional<OnnxConstant> in_weight, in_bias, out_weight, out_bias;  // ember's layout
  std::set<int> nodes;
};

class Matcher {
 public:
  Matcher(const onnx::GraphProto& graph, const std::map<std::string, OnnxConstant>& constants, const OnnxShapeFacts& facts,
          std::string source)
      : g_(graph), constants_(constants), facts_(facts), source_(std::move(source)) {
    for (int i = 0; i < g_.node_size(); ++i) {
      for (const std::string& out : g_.node(i).output()) {
        if (!out.empty() && !producer_.emplace(out, i).second) throw Error(at(i) + ": output '" + out + "' is produced twice");
      }
      for (const std::string& in : g_.node(i).input()) consumers_[in].push_back(i);
    }
    // The walks below go from producer to producer: ONNX's topological order bounds them.
    for (int i = 0; i < g_.node_size(); ++i) {
      for (const std::string& in : g_.node(i).input()) {
        if (producer(in) >= i) throw Error(at(i) + ": reads '" + in + "', made by itself or a later node (ONNX requires topological order)");
      }
    }
  }

  std::vector<OnnxAttention> run(const std::vector<bool>& skipped) {
    std::vector<OnnxAttention> found;
    for (int i = 0; i < g_.node_size(); ++i) {
      if (static_cast<std::size_t>(i) < skipped.size() && skipped[static_cast<std::size_t>(i)]) continue;
      if (g_.node(i).op_type() == "Softmax" && g_.node(i).input_size() == 1 && scores_matmul_near(g_.node(i).input(0))) {
        found.push_back(match(i));
      }
    }
    return found;
  }

 private:
  // --- Graph queries ---------------------------------------------------------------------
  std::string at(int node) const {
    const onnx::NodeProto& n = g_.node(node);
    return source_ + ": node '" + n.name() + "' (" + n.op_type() + ")";
  }
  [[noreturn]] void fail(int node, const std::string& why) const {
    throw Error(at(node) + ": " + why + "; ember imports multi-head self-attention as nn.MultiheadAttention exports it "
                "(no mask, scale 1/sqrt(head dim))");
  }
  int producer(const std::string& tensor) const {
    const auto it = producer_.find(tensor);
    return it == producer_.end() ? -1 : it->second;
  }
  // Neither a constant nor a float evaluated from shapes (a scale).
  bool computed(const std::string& tensor) const {
    return !tensor.empty() && !constants_.count(tensor) && !facts_.floats_of(tensor);
  }
  // A one-element float constant, or a float evaluated from batch-independent shapes
  // (PyTorch 2's scale): its value in double.
  std::optional<double> scalar_factor(const std::string& tensor) const {
    if (const ShapeFloats* v = facts_.floats_of(tensor); v && v->values.size() == 1) return v->values[0];
    const OnnxConstant* k = float_constant(tensor);
    if (k && k->floats.size() == 1) return k->floats[0];
    return {};
  }
  const OnnxConstant* float_constant(const std::string& tensor) const {
    const auto it = constants_.find(tensor);
    return it != constants_.end() && it->second.is_float ? &it->second : nullptr;
  }
  // The consumers of `tensor` that are not shape arithmetic.
  std::vector<int> data_consumers(const std::string& tensor) const {
    std::vector<int> out;
    const auto it = consumers_.find(tensor);
    if (it == consumers_.end()) return out;
    for (const int c : it->second) {
      if (!facts_.shape_only[static_cast<std::size_t>(c)]) out.push_back(c);
    }
    return out;
  }
  bool is_matmul_of_computed(int node) const {
    if (node < 0) return false;
    const onnx::NodeProto& n = g_.node(node);
    return n.op_type() == "MatMul" && n.input_size() == 2 && computed(n.input(0)) && computed(n.input(1));
  }
  // A scalar float constant as an input of a Mul or Div whose other input is computed: the
  // computed input and the factor it is multiplied by.
  std::optional<std::pair<std::string, double>> scaling(int node) const {
    const onnx::NodeProto& n = g_.node(node);
    if ((n.op_type() != "Mul" && n.op_type() != "Div") || n.input_size() != 2) return {};
    for (int c = 0; c < 2; ++c) {
      const std::optional<double> k = scalar_factor(n.input(c));
      if (!k || !computed(n.input(1 - c))) continue;
      const double v = *k;
      if (n.op_type() == "Mul") return std::make_pair(n.input(1 - c), v);
      if (c == 1 && v != 0.0) return std::make_pair(n.input(0), 1.0 / v);
    }
    return {};
  }

  // Is a MatMul of two computed tensors a few elementwise steps before this Softmax? Then the
  // Softmax is an attention's (and an error if the match fails, not another model).
  bool scores_matmul_near(const std::string& scores) const {
    std::deque<std::pair<std::string, int>> queue{{scores, 0}};
    while (!queue.empty()) {
      const auto [tensor, depth] = queue.front();
      queue.pop_front();
      const int p = producer(tensor);
      if (p < 0 || depth > 6) continue;
      if (is_matmul_of_computed(p)) return true;
      static const std::set<std::string> elementwise{"Mul", "Div", "Add", "Sub", "Where", "Cast", "Neg", "Expand", "Reshape", "Transpose"};
      if (!elementwise.count(g_.node(p).op_type())) continue;
      for (const std::string& in : g_.node(p).input()) {
        if (computed(in)) queue.emplace_back(in, depth + 1);
      }
    }
    return false;
  }

  // --- The match -------------------------------------------------------------------------
  OnnxAttention match(int softmax) {
    Candidate c;
    c.nodes.insert(softmax);
    // Softmax <- (Mul|Div by a constant | Add of the causal mask)* <- MatMul(Q, K^T). The
    // mask is -inf or 0, so a (positive) scale before or after it is the same.
    double score_scale = 1.0;
    std::int64_t mask_tokens = 0;
    int scores = producer(g_.node(softmax).input(0));
    while (scores >= 0 && !is_matmul_of_computed(scores)) {
      const auto s = scaling(scores);
      const auto mask = s ? std::nullopt : causal_mask(scores);
      if (!s && !mask) {
        fail(scores, "changes the attention scores between their MatMul and Softmax other than by a constant scale or the causal mask "
                     "(an attention mask?); other attn_mask and key_padding_mask are not supported");
      }
      if (mask && mask_tokens != 0) fail(scores, "a second causal mask");
      c.nodes.insert(scores);
      score_scale *= s ? s->second : 1.0;
      if (mask) mask_tokens = mask->second;
      scores = producer(s ? s->first : mask->first);
    }
    if (scores < 0) fail(softmax, "its scores are not a MatMul of two computed tensors");
    c.nodes.insert(scores);
    const onnx::NodeProto& qk = g_.node(scores);

    // softmax(...) @ V
    const std::vector<int> after_softmax = data_consumers(g_.node(softmax).output(0));
    if (after_softmax.size() != 1 || !is_matmul_of_computed(after_softmax[0]) || g_.node(after_softmax[0]).input(0) != g_.node(softmax).output(0)) {
      fail(softmax, "its output must be used once, as the left side of a MatMul with the values (the attention weights may not be an output)");
    }
    const int pv = after_softmax[0];
    c.nodes.insert(pv);

    const Layout q = path_layout(qk.input(0), 0, scores, c);
    const Layout k = path_layout(qk.input(1), 1, scores, c);
    const Layout v = path_layout(g_.node(pv).input(1), 2, pv, c);

    // Q (.., T, D) @ K^T (.., D, T) over the same (batch, head) axes.
    const std::size_t rank = q.axes.size();
    if (rank < 3 || k.axes.size() != rank || v.axes.size() != rank) fail(scores, "expected queries and keys of one rank >= 3, found " + layout_str(q) + " and " + layout_str(k));
    const std::vector<Axis> pairs(q.axes.begin(), q.axes.end() - 2);
    if (!same_axes(pairs, std::vector<Axis>(k.axes.begin(), k.axes.end() - 2)) || !is_axis(q.axes[rank - 2], Kind::tokens) ||
        !is_head_dim(q.axes[rank - 1], 0) || !is_head_dim(k.axes[rank - 2], 1) || !is_axis(k.axes[rank - 1], Kind::tokens)) {
      fail(scores, "expected queries (.., T, D) times keys transposed (.., D, T) with the same batch and head axes, found " + layout_str(q) +
                       " times " + layout_str(k));
    }
    check_pairs(pairs, scores, c);
    if (mask_tokens != 0 && mask_tokens != c.tokens) {
      fail(scores, "the causal mask is " + std::to_string(mask_tokens) + " x " + std::to_string(mask_tokens) + " for " +
                       std::to_string(c.tokens) + " tokens");
    }
    const std::int64_t head_dim = c.d_model / c.heads;
    const double scale = q.scale * k.scale * score_scale;
    const double expected = 1.0 / std::sqrt(static_cast<double>(head_dim));
    if (std::fabs(scale - expected) > 1e-5 * expected) {
      fail(scores, "the scores are scaled by " + number(scale) + ", expected 1/sqrt(" + std::to_string(head_dim) + ") = " + number(expected));
    }
    const auto axis = int_attribute(g_.node(softmax), "axis", -1);
    if (axis != -1 && axis != static_cast<std::int64_t>(rank) - 1) fail(softmax, "expected a Softmax over the keys (the last axis), found axis " + std::to_string(axis));

    // weights (.., T, keys) @ V (.., keys, D)
    if (!same_axes(pairs, std::vector<Axis>(v.axes.begin(), v.axes.end() - 2)) || !is_axis(v.axes[rank - 2], Kind::tokens) ||
        !is_head_dim(v.axes[rank - 1], 2)) {
      fail(pv, "expected the values laid out (.., T, D) with the queries' batch and head axes, found " + layout_str(v));
    }
    if (std::fabs(v.scale - 1.0) > 1e-6) fail(pv, "the values are scaled by " + number(v.scale));

    Layout out;
    out.axes = pairs;
    for (Axis& a : out.axes) {
      for (Factor& f : a) f.role = output_role;
    }
    out.axes.push_back({Factor{Kind::tokens, Affine{c.tokens, 0}}});
    out.axes.push_back({Factor{Kind::head_dim, Affine{head_dim, 0}, output_role}});
    const std::string result = follow_output(g_.node(pv).output(0), out, c);
    check_private(c, result);

    OnnxAttention a;
    const std::string& name = g_.node(softmax).name();
    a.name = name.rfind('/') != std::string::npos && name.rfind('/') > 0 ? name.substr(0, name.rfind('/')) : "attention";
    a.input = c.input;
    a.output = result;
    a.d_model = c.d_model;
    a.heads = c.heads;
    a.bias = c.in_bias || c.out_bias;
    a.causal = mask_tokens != 0;
    const std::int64_t e = c.d_model;
    a.weights["in_proj_weight"] = *c.in_weight;
    a.weights["out_proj_weight"] = *c.out_weight;
    if (a.bias) {
      a.weights["in_proj_bias"] = c.in_bias ? *c.in_bias : zeros(3 * e);
      a.weights["out_proj_bias"] = c.out_bias ? *c.out_bias : zeros(e);
    }
    a.nodes.assign(c.nodes.begin(), c.nodes.end());
    return a;
  }

  // An Add of a constant (.., T, T), 1 on the leading dimensions, that is 0 on and below the
  // diagonal and -inf above (PyTorch's attn_mask from generate_square_subsequent_mask): the
  // computed input and T. A value below -1e30 counts as -inf: exp underflows to 0 alike.
  std::optional<std::pair<std::string, std::int64_t>> causal_mask(int node) const {
    const onnx::NodeProto& n = g_.node(node);
    if (n.op_type() != "Add" || n.input_size() != 2 || computed(n.input(0)) == computed(n.input(1))) return {};
    const OnnxConstant* mask = float_constant(computed(n.input(0)) ? n.input(1) : n.input(0));
    if (!mask || mask->dims.size() < 2) return {};
    const std::int64_t t = mask->dims.back();
    if (t < 1 || mask->dims[mask->dims.size() - 2] != t ||
        !std::all_of(mask->dims.begin(), mask->dims.end() - 2, [](std::int64_t d) { return d == 1; }) ||
        mask->floats.size() != static_cast<std::size_t>(t * t)) {
      return {};
    }
    for (std::int64_t row = 0; row < t; ++row) {
      for (std::int64_t column = 0; column < t; ++column) {
        const float v = mask->floats[static_cast<std::size_t>(row * t + column)];
        if (column <= row ? v != 0.0f : !(v < -1e30f)) return {};
      }
    }
    return std::make_pair(computed(n.input(0)) ? n.input(0) : n.input(1), t);
  }

  static OnnxConstant zeros(std::int64_t n) {
    OnnxConstant z;
    z.dims = {n};
    z.floats.assign(static_cast<std::size_t>(n), 0.0f);
    return z;
  }
  // [D] of a role, or with one head the whole third [E/3].
  bool is_head_dim(const Axis& axis, int role) const {
    return is_axis(axis, Kind::head_dim, role) || is_axis(axis, Kind::part, role);
  }
  // The batch and head axes: N once and H (of every role) at most once, nothing else.
  void check_pairs(const std::vector<Axis>& pairs, int node, Candidate& c) const {
    int batch = 0, heads = 0;
    for (const Axis& a : pairs) {
      for (const Factor& f : a) {
        batch += f.kind == Kind::batch;
        heads += f.kind == Kind::heads;
        if (f.kind != Kind::batch && f.kind != Kind::heads) fail(node, "the attention is batched over " + kind_name(f.kind) + ", expected only the batch and the heads");
      }
    }
    if (batch != 1 || heads > 1) fail(node, "expected the batch and the heads among the batch axes once each");
    if (heads == 0) {
      if (c.heads != 0 && c.heads != 1) fail(node, "the heads are split inconsistently");
      c.heads = 1;
    }
  }

  // The path from the layer's input to the queries (role 0), keys or values: followed back
  // through layout nodes and scales to an in-projection, and through layout nodes from there
  // to the first (N, T, E) tensor; then interpreted forward.
  Layout path_layout(const std::string& tensor, int role, int user, Candidate& c) {
    std::vector<int> path;
    std::string t = tensor;
    bool projected = false;
    for (;;) {
      if (projected && starts_attention(t, c)) break;
      const int p = producer(t);
      if (p < 0) {
        if (!projected) fail(user, "found no in-projection (MatMul or Gemm with a constant weight) on the path of input '" + tensor + "'");
        fail(user, "the path of input '" + tensor + "' does not start at a tensor laid out (N, T, E)");
      }
      const onnx::NodeProto& n = g_.node(p);
      const std::string& op = n.op_type();
      std::string next;
      if ((op == "Transpose" || op == "Reshape" || op == "Squeeze" || op == "Unsqueeze") && n.input_size() >= 1) {
        next = n.input(0);
      } else if (!projected && ((op == "Slice" && n.input_size() >= 3) || (op == "Gather" && n.input_size() == 2))) {
        next = n.input(0);
      } else if (!projected && scaling(p)) {
        next = scaling(p)->first;
      } else if (!projected && op == "Add" && n.input_size() == 2 && computed(n.input(0)) != computed(n.input(1))) {
        next = computed(n.input(0)) ? n.input(0) : n.input(1);
      } else if (!projected && (op == "MatMul" || op == "Gemm") && n.input_size() >= 2 && computed(n.input(0)) && !computed(n.input(1))) {
        next = n.input(0);
        projected = true;
      } else {
        const bool factor_unknown = (op == "Mul" || op == "Div") && !projected;
        fail(p, std::string("is on the ") + (role == 0 ? "query" : role == 1 ? "key" : "value") +
                    " path of the attention, where ember expects layout nodes, a scale, a Slice or Gather and the in-projection" +
                    (factor_unknown ? " (a scale must be a constant or computed from batch-independent shapes)" : ""));
      }
      path.push_back(p);
      t = next;
    }
    if (c.input.empty()) c.input = t;
    if (c.input != t) fail(path.back(), "the queries, keys and values are projected from different tensors ('" + c.input + "', '" + t + "')");
    std::reverse(path.begin(), path.end());
    Layout l;
    l.axes = {{Factor{Kind::batch, Affine{0, 1}}}, {Factor{Kind::tokens, Affine{c.tokens, 0}}}, {Factor{Kind::features, Affine{c.d_model, 0}}}};
    for (const int p : path) {
      apply(p, l, c);
      c.nodes.insert(p);
    }
    return l;
  }
  // A float tensor of evaluated shape (N, T, E): where the attention may begin.
  bool starts_attention(const std::string& tensor, Candidate& c) const {
    const std::vector<Affine>* s = facts_.shape(tensor);
    if (!s || s->size() != 3 || !((*s)[0] == Affine{0, 1}) || !(*s)[1].is_constant() || !(*s)[2].is_constant()) return false;
    if ((*s)[1].constant < 1 || (*s)[2].constant < 1) return false;
    if (!c.input.empty()) return tensor == c.input;
    c.tokens = (*s)[1].constant;
    c.d_model = (*s)[2].constant;
    return true;
  }

  // From the heads' outputs to the layer's result: layout nodes and the out-projection, until
  // the tensor is (N, T, E) again.
  std::string follow_output(std::string tensor, Layout l, Candidate& c) {
    for (;;) {
      const bool done = c.out_projection >= 0 && l.axes.size() == 3 && is_axis(l.axes[0], Kind::batch) && is_axis(l.axes[1], Kind::tokens) &&
                        is_axis(l.axes[2], Kind::output);
      const std::vector<int> next = data_consumers(tensor);
      const bool bias_follows = done && !c.out_bias && next.size() == 1 && g_.node(next[0]).op_type() == "Add" &&
                                g_.node(next[0]).input_size() == 2 && computed(g_.node(next[0]).input(0)) != computed(g_.node(next[0]).input(1));
      if (done && !bias_follows) return tensor;
      if (next.size() != 1) {
        fail(producer(tensor) >= 0 ? producer(tensor) : 0,
             "the attention's output " + layout_str(l) + " is used by " + std::to_string(next.size()) + " nodes before it is laid out (N, T, E)");
      }
      const onnx::NodeProto& n = g_.node(next[0]);
      if (n.input_size() < 1 || (n.op_type() != "Add" && n.input(0) != tensor)) fail(next[0], "reads the attention's output in an unexpected place");
      const std::string& op = n.op_type();
      if (op != "Transpose" && op != "Reshape" && op != "MatMul" && op != "Gemm" && op != "Add") {
        fail(next[0], "is on the attention's output path, where ember expects layout nodes and the out-projection");
      }
      apply(next[0], l, c);
      c.nodes.insert(next[0]);
      tensor = n.output(0);
    }
  }

  // Every intermediate tensor is read only by the attention's nodes or by shape arithmetic.
  void check_private(const Candidate& c, const std::string& result) const {
    for (const int node : c.nodes) {
      for (const std::string& out : g_.node(node).output()) {
        if (out == result || out.empty()) continue;
        for (const onnx::ValueInfoProto& o : g_.output()) {
          if (o.name() == out) fail(node, "its output is a graph output, inside the attention");
        }
        const auto it = consumers_.find(out);
        if (it == consumers_.end()) continue;
        for (const int user : it->second) {
          if (!c.nodes.count(user) && !facts_.shape_only[static_cast<std::size_t>(user)]) {
            fail(user, "reads '" + out + "', an intermediate of the attention that ember's fused layer does not expose");
          }
        }
      }
    }
  }

  // --- Interpreting one node on a layout -------------------------------------------------
  void apply(int node, Layout& l, Candidate& c) {
    const onnx::NodeProto& n = g_.node(node);
    const std::string& op = n.op_type();
    if (op == "Transpose") return transpose(node, l);
    if (op == "Reshape") return reshape(node, l, c);
    if (op == "Slice") return slice(node, l, c);
    if (op == "Gather") return gather(node, l);
    if (op == "Squeeze" || op == "Unsqueeze") return squeeze(node, l, op == "Unsqueeze");
    if (op == "MatMul" || op == "Gemm") return project(node, l, c);
    if (op == "Add") return add_bias(node, l, c);
    if (const auto s = scaling(node)) {
      l.scale *= s->second;
      return;
    }
    fail(node, "is not a node ember maps inside an attention");
  }

  void transpose(int node, Layout& l) const {
    std::vector<std::int64_t> perm;
    for (const onnx::AttributeProto& a : g_.node(node).attribute()) {
      if (a.name() == "perm") perm.assign(a.ints().begin(), a.ints().end());
    }
    if (perm.empty()) {
      for (std::size_t i = l.axes.size(); i-- > 0;) perm.push_back(static_cast<std::int64_t>(i));
    }
    if (perm.size() != l.axes.size()) fail(node, "perm has " + std::to_string(perm.size()) + " axes for " + layout_str(l));
    std::vector<bool> seen(perm.size(), false);
    std::vector<Axis> axes;
    for (const std::int64_t p : perm) {
      if (p < 0 || p >= static_cast<std::int64_t>(perm.size()) || seen[static_cast<std::size_t>(p)]) fail(node, "perm is not a permutation");
      seen[static_cast<std::size_t>(p)] = true;
      axes.push_back(l.axes[static_cast<std::size_t>(p)]);
    }
    l.axes = std::move(axes);
  }

  // The evaluated target shape regroups the factors in order; a third of the projection may
  // be split into heads (outer) and head dims (inner), nothing else may be split.
  void reshape(int node, Layout& l, Candidate& c) const {
    const std::vector<Affine>* target = facts_.shape(g_.node(node).output(0));
    if (!target) fail(node, "its target shape could not be evaluated (with the batch size symbolic) from shapes and constants");
    std::deque<Factor> factors;
    for (const Axis& a : l.axes) factors.insert(factors.end(), a.begin(), a.end());
    std::vector<Axis> axes;
    auto wrong = [&] {
      std::string dims;
      for (const Affine& d : *target) dims += (dims.empty() ? "" : ", ") + d.str();
      fail(node, "reshapes " + layout_str(l) + " to (" + dims + "), which is not a split or merge of heads");
    };
    for (const Affine& dim : *target) {
      Affine need = dim;
      Axis axis;
      while (!(need == Affine{1, 0})) {
        if (factors.empty()) wrong();
        Factor f = factors.front();
        factors.pop_front();
        if (f.size == need) {
          need = Affine{1, 0};
        } else if (f.kind == Kind::batch) {
          if (need.constant != 0 || need.per_batch < 1 || !(f.size == Affine{0, 1})) wrong();
          need = Affine{need.per_batch, 0};
        } else if (!need.is_constant()) {
          if (need.constant != 0 || f.size.constant < 1 || need.per_batch % f.size.constant != 0) wrong();
          need.per_batch /= f.size.constant;
        } else if (f.size.constant >= 1 && need.constant % f.size.constant == 0) {
          need.constant /= f.size.constant;
        } else if (f.kind == Kind::projection && need == Affine{3, 0} && f.size == Affine{3 * c.d_model, 0}) {
          // (.., 3E) -> (.., 3, E): the thirds outer, a part of role yet unknown inner.
          factors.push_front(Factor{Kind::part, Affine{c.d_model, 0}, -1});
          f = Factor{Kind::thirds, need};
          need = Affine{1, 0};
        } else if (f.kind == Kind::part && need.constant >= 1 && f.size.constant % need.constant == 0) {
          const std::int64_t heads = need.constant;
          if (c.heads != 0 && c.heads != heads) fail(node, "splits " + std::to_string(heads) + " heads where another path split " + std::to_string(c.heads));
          c.heads = heads;
          factors.push_front(Factor{Kind::head_dim, Affine{f.size.constant / heads, 0}, f.role});
          f = Factor{Kind::heads, Affine{heads, 0}, f.role};
          need = Affine{1, 0};
        } else {
          wrong();
        }
        axis.push_back(f);
      }
      while (!factors.empty() && factors.front().size == Affine{1, 0}) {
        axis.push_back(factors.front());
        factors.pop_front();
      }
      axes.push_back(std::move(axis));
    }
    if (!factors.empty()) wrong();
    l.axes = std::move(axes);
  }

  // PyTorch 2's pick of one third: a Gather of a constant scalar index on the axis of the
  // thirds (all of it); the index is the role of the part split from them.
  void gather(int node, Layout& l) const {
    const onnx::NodeProto& n = g_.node(node);
    const auto rank = static_cast<std::int64_t>(l.axes.size());
    std::int64_t axis = int_attribute(n, "axis", 0);
    if (axis < 0) axis += rank;
    const ShapeIntegers* index = facts_.integers_of(n.input(1));
    if (axis < 0 || axis >= rank || !is_axis(l.axes[static_cast<std::size_t>(axis)], Kind::thirds) || !index || !index->scalar ||
        !index->values[0].is_constant() || index->values[0].constant < -3 || index->values[0].constant >= 3) {
      fail(node, "expected a Gather of one third (a constant scalar index) on the axis of the in-projection's thirds, in " + layout_str(l));
    }
    const int role = static_cast<int>((index->values[0].constant + 3) % 3);
    l.axes.erase(l.axes.begin() + axis);
    for (Axis& a : l.axes) {
      for (Factor& f : a) {
        if (f.kind == Kind::thirds) fail(node, "the thirds of the in-projection are split up in " + layout_str(l));
        if ((f.kind == Kind::part || f.kind == Kind::heads || f.kind == Kind::head_dim) && f.role == -1) f.role = role;
      }
    }
  }

  // Squeeze or Unsqueeze of axes of size 1, the axes given.
  void squeeze(int node, Layout& l, bool unsqueeze) const {
    const onnx::NodeProto& n = g_.node(node);
    std::optional<std::vector<std::int64_t>> axes;
    for (const onnx::AttributeProto& a : n.attribute()) {
      if (a.name() == "axes") axes.emplace(a.ints().begin(), a.ints().end());
    }
    if (n.input_size() > 1) axes = facts_.constant_integers(n.input(1));
    if (!axes) fail(node, "its axes could not be evaluated to constants");
    const std::size_t rank = unsqueeze ? l.axes.size() + axes->size() : l.axes.size();
    std::vector<bool> picked(rank, false);
    for (std::int64_t a : *axes) {
      if (a < 0) a += static_cast<std::int64_t>(rank);
      if (a < 0 || a >= static_cast<std::int64_t>(rank) || picked[static_cast<std::size_t>(a)]) fail(node, "axes out of range or repeated for " + layout_str(l));
      picked[static_cast<std::size_t>(a)] = true;
    }
    std::vector<Axis> out;
    std::size_t next = 0;
    for (std::size_t i = 0; i < rank; ++i) {
      if (unsqueeze) {
        out.push_back(picked[i] ? Axis{} : l.axes[next++]);
      } else if (!picked[i]) {
        out.push_back(l.axes[i]);
      } else if (!std::all_of(l.axes[i].begin(), l.axes[i].end(), [](const Factor& f) { return f.size == Affine{1, 0}; })) {
        fail(node, "squeezes axis " + std::to_string(i) + " of " + layout_str(l) + ", which is not of size 1");
      }
    }
    l.axes = std::move(out);
  }

  // A third of the in-projection along the last axis.
  void slice(int node, Layout& l, Candidate& c) const {
    const onnx::NodeProto& n = g_.node(node);
    std::vector<std::vector<std::int64_t>> args;
    for (int i = 1; i < 5; ++i) {
      if (i >= n.input_size() || n.input(i).empty()) {
        args.emplace_back();
        continue;
      }
      const auto v = facts_.constant_integers(n.input(i));
      if (!v) fail(node, "its input " + std::to_string(i) + " could not be evaluated to constants");
      args.push_back(*v);
    }
    const std::int64_t rank = static_cast<std::int64_t>(l.axes.size());
    const bool one_axis = args[0].size() == 1 && args[1].size() == 1 && args[2].size() <= 1 && args[3].size() <= 1;
    if (!one_axis || (!args[2].empty() && args[2][0] != -1 && args[2][0] != rank - 1) || (args[2].empty() && rank != 1) ||
        (!args[3].empty() && args[3][0] != 1) || !is_axis(l.axes.back(), Kind::projection)) {
      fail(node, "expected a Slice of the in-projection " + layout_str(l) + " along its last axis");
    }
    const std::int64_t e = c.d_model, start = args[0][0], end = std::min(args[1][0], 3 * e);
    if (start % e != 0 || end != start + e || start < 0 || start >= 3 * e) {
      fail(node, "slices [" + std::to_string(start) + ", " + std::to_string(end) + ") of the in-projection's " + std::to_string(3 * e) +
                     " features; expected one third");
    }
    const int role = static_cast<int>(start / e);
    l.axes.back() = {Factor{Kind::part, Affine{e, 0}, role}};
  }

  // MatMul or Gemm by a constant over the last axis: the in-projection (E -> 3E) of the
  // input, or the out-projection (E -> E) of the merged heads.
  void project(int node, Layout& l, Candidate& c) const {
    const onnx::NodeProto& n = g_.node(node);
    const OnnxConstant* w = n.input_size() >= 2 ? float_constant(n.input(1)) : nullptr;
    if (!w || w->dims.size() != 2) fail(node, "expected a projection by a constant matrix");
    const bool gemm = n.op_type() == "Gemm";
    if (gemm && (float_attribute(n, "alpha", 1.0f) != 1.0f || float_attribute(n, "beta", 1.0f) != 1.0f ||
                 int_attribute(n, "transA", 0) != 0 || l.axes.size() != 2)) {
      fail(node, "expected a Gemm of a matrix with alpha 1, beta 1 and transA 0");
    }
    // ember's weight: (out, in).
    OnnxConstant weight = gemm && int_attribute(n, "transB", 0) != 0 ? *w : transposed(*w);
    if (l.scale != 1.0) fail(node, "the projection's input is scaled");
    const std::int64_t e = c.d_model;
    const Axis& last = l.axes.back();
    const bool input_side = is_axis(last, Kind::features);
    const bool heads_merged = (last.size() == 2 && last[0].kind == Kind::heads && last[1].kind == Kind::head_dim &&
                               last[0].role == output_role && last[1].role == output_role) ||
                              (c.heads == 1 && is_axis(last, Kind::head_dim, output_role));
    if (input_side && weight.dims == std::vector<std::int64_t>{3 * e, e} && c.in_projection < 0) {
      c.in_projection = node;
      c.in_weight = weight;
      l.axes.back() = {Factor{Kind::projection, Affine{3 * e, 0}}};
    } else if (input_side && c.in_projection == node) {
      l.axes.back() = {Factor{Kind::projection, Affine{3 * e, 0}}};
    } else if (heads_merged && weight.dims == std::vector<std::int64_t>{e, e} && c.out_projection < 0) {
      c.out_projection = node;
      c.out_weight = weight;
      l.axes.back() = {Factor{Kind::output, Affine{e, 0}}};
    } else {
      fail(node, "expected the in-projection (" + std::to_string(e) + " -> " + std::to_string(3 * e) +
                     ") of the input or the out-projection of the merged heads, found a " + std::to_string(weight.dims[1]) + " -> " +
                     std::to_string(weight.dims[0]) + " projection of " + layout_str(l));
    }
    if (gemm && n.input_size() > 2 && !n.input(2).empty()) bias(node, n.input(2), l, c);
  }

  void add_bias(int node, Layout& l, Candidate& c) const {
    const onnx::NodeProto& n = g_.node(node);
    if (n.input_size() != 2) fail(node, "expected two inputs");
    bias(node, computed(n.input(0)) ? n.input(1) : n.input(0), l, c);
  }
  void bias(int node, const std::string& tensor, Layout& l, Candidate& c) const {
    const OnnxConstant* b = float_constant(tensor);
    const std::int64_t e = c.d_model;
    // The paths to Q, K and V interpret the shared in-projection each.
    const bool in = is_axis(l.axes.back(), Kind::projection) && c.in_projection >= 0 && (c.in_bias_node < 0 || c.in_bias_node == node);
    const bool out = is_axis(l.axes.back(), Kind::output) && c.out_projection >= 0 && !c.out_bias;
    const std::int64_t size = in ? 3 * e : e;
    const bool vector = b && !b->dims.empty() && b->dims.back() == size &&
                        std::all_of(b->dims.begin(), b->dims.end() - 1, [](std::int64_t d) { return d == 1; }) &&
                        b->dims.size() <= l.axes.size();
    if (!vector || (!in && !out) || l.scale != 1.0) {
      fail(node, "expected the bias (" + std::to_string(size) + " values) of the projection just before, on " + layout_str(l));
    }
    OnnxConstant v = *b;
    v.dims = {size};
    if (in) {
      c.in_bias = v;
      c.in_bias_node = node;
    }
    if (out) c.out_bias = v;
  }

  const onnx::GraphProto& g_;
  const std::map<std::string, OnnxConstant>& constants_;
  const OnnxShapeFacts& facts_;
  std::string source_;
  std::map<std::string, int> producer_;
  std::map<std::string, std::vector<int>> consumers_;
};

}  // namespace

std::vector<OnnxAttention> match_onnx_attention(const onnx::GraphProto& graph, const std::map<std::string, OnnxConstant>& constants,
                                                const OnnxShapeFacts& facts, const std::vector<bool>& skipped,
                                                const std::string& source) {
  return Matcher(graph, constants, facts, source).run(skipped);
}

}  // namespace ember
