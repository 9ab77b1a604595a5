#include "engine/onnx_shape_eval.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <functional>

#include "engine/onnx_attributes.h"

namespace ember {
namespace {

using Dims = std::vector<BatchAffine>;
using Affine = BatchAffine;

// Integer vectors longer than this are not shapes; they are left unknown.
constexpr std::size_t max_integers = 64;

std::optional<Affine> add(Affine a, Affine b) {
  Affine r;
  if (__builtin_add_overflow(a.constant, b.constant, &r.constant) || __builtin_add_overflow(a.per_batch, b.per_batch, &r.per_batch)) return {};
  return r;
}
std::optional<Affine> sub(Affine a, Affine b) {
  Affine r;
  if (__builtin_sub_overflow(a.constant, b.constant, &r.constant) || __builtin_sub_overflow(a.per_batch, b.per_batch, &r.per_batch)) return {};
  return r;
}
// A product of two batch-dependent values is not affine: unknown.
std::optional<Affine> mul(Affine a, Affine b) {
  if (!a.is_constant() && !b.is_constant()) return {};
  if (!a.is_constant()) std::swap(a, b);
  Affine r;
  if (__builtin_mul_overflow(a.constant, b.constant, &r.constant) || __builtin_mul_overflow(a.constant, b.per_batch, &r.per_batch)) return {};
  return r;
}
// Integer division (ONNX truncates) by a constant; batch-dependent only when exact for every N
// (b divisible by the divisor and a >= 0, so that truncation and floor agree).
std::optional<Affine> div(Affine a, Affine b) {
  if (!b.is_constant() || b.constant == 0) return {};
  if (b.constant == -1 && (a.constant == INT64_MIN || a.per_batch == INT64_MIN)) return {};
  if (a.is_constant()) return Affine{a.constant / b.constant, 0};
  if (a.per_batch % b.constant != 0 || a.constant < 0 || b.constant < 0) return {};
  return Affine{a.constant / b.constant, a.per_batch / b.constant};
}
// ONNX Mod of integers (fmod 0): the sign of the divisor, like Python's %; constants only.
std::optional<Affine> mod(Affine a, Affine b) {
  if (!a.is_constant() || !b.is_constant() || b.constant == 0 || (b.constant == -1 && a.constant == INT64_MIN)) return {};
  std::int64_t r = a.constant % b.constant;
  if (r != 0 && (r < 0) != (b.constant < 0)) r += b.constant;
  return Affine{r, 0};
}
// Equal for every N >= 1? 1 if so, 0 if for none, unknown if for some.
std::optional<Affine> equal(Affine a, Affine b) {
  if (a == b) return Affine{1, 0};
  if (a.per_batch == b.per_batch) return Affine{0, 0};
  // Equal only at N = (b.c - a.c) / (a.b - b.b), if that is a batch size.
  const __int128 numerator = static_cast<__int128>(b.constant) - a.constant;
  const __int128 denominator = static_cast<__int128>(a.per_batch) - b.per_batch;
  if (numerator % denominator == 0 && numerator / denominator >= 1) return {};
  return Affine{0, 0};
}

// Broadcast of two ONNX shapes (numpy rules); nullopt when they do not broadcast.
std::optional<Dims> broadcast(const Dims& a, const Dims& b) {
  const std::size_t rank = std::max(a.size(), b.size());
  Dims out(rank);
  for (std::size_t i = 0; i < rank; ++i) {
    const Affine one{1, 0};
    const Affine x = i + a.size() >= rank ? a[i + a.size() - rank] : one;
    const Affine y = i + b.size() >= rank ? b[i + b.size() - rank] : one;
    if (x == y || y == one) {
      out[i] = x;
    } else if (x == one) {
      out[i] = y;
    } else {
      return {};
    }
  }
  return out;
}

// The product of dimensions as c N^k; nullopt beyond k = 1 or on overflow.
struct Monomial {
  std::int64_t coefficient = 1;
  int batch_power = 0;
};
std::optional<Monomial> product(const Dims& dims, std::size_t begin, std::size_t end) {
  Monomial m;
  for (std::size_t i = begin; i < end; ++i) {
    const Affine& d = dims[i];
    if (d.is_constant()) {
      if (d.constant < 0 || __builtin_mul_overflow(m.coefficient, d.constant, &m.coefficient)) return {};
    } else {
      if (d.constant != 0 || d.per_batch <= 0 || ++m.batch_power > 1) return {};
      if (__builtin_mul_overflow(m.coefficient, d.per_batch, &m.coefficient)) return {};
    }
  }
  return m;
}
std::optional<Affine> as_affine(Monomial m) {
  if (m.batch_power > 1) return {};
  return m.batch_power == 1 ? Affine{0, m.coefficient} : Affine{m.coefficient, 0};
}

std::optional<std::vector<std::int64_t>> ints_attribute(const onnx::NodeProto& node, const std::string& name) {
  const onnx::AttributeProto* a = onnx_attribute(node, name);
  if (a == nullptr) return {};
  return std::vector<std::int64_t>(a->ints().begin(), a->ints().end());
}
// An axis in [-rank, rank) as [0, rank), or nullopt.
std::optional<std::size_t> axis_index(std::int64_t axis, std::size_t rank) {
  const auto r = static_cast<std::int64_t>(rank);
  if (axis < -r || axis >= r) return {};
  return static_cast<std::size_t>(axis < 0 ? axis + r : axis);
}

class Evaluator {
 public:
  Evaluator(const onnx::GraphProto& graph, const std::map<std::string, OnnxConstant>& constants) : g_(graph), constants_(constants) {}

  OnnxShapeFacts run() {
    for (const auto& [name, c] : constants_) {
      if (c.is_float) {
        Dims dims;
        for (const std::int64_t d : c.dims) dims.push_back(Affine{d, 0});
        facts_.shapes[name] = dims;
      } else if (c.dims.size() <= 1 && c.integers.size() <= max_integers) {
        ShapeIntegers v;
        v.scalar = c.dims.empty();
        for (const std::int64_t x : c.integers) v.values.push_back(Affine{x, 0});
        facts_.integers[name] = v;
      }
    }
    for (const onnx::ValueInfoProto& input : g_.input()) {
      if (constants_.count(input.name()) || !input.type().has_tensor_type()) continue;
      const onnx::TensorShapeProto& shape = input.type().tensor_type().shape();
      if (input.type().tensor_type().elem_type() != onnx::TensorProto::FLOAT || shape.dim_size() < 1) continue;
      Dims dims{Affine{0, 1}};
      bool fixed = true;
      for (int d = 1; d < shape.dim_size(); ++d) {
        fixed = fixed && shape.dim(d).has_dim_value() && shape.dim(d).dim_value() >= 1;
        dims.push_back(Affine{shape.dim(d).dim_value(), 0});
      }
      if (fixed) facts_.shapes[input.name()] = dims;
    }
    facts_.shape_only.assign(static_cast<std::size_t>(g_.node_size()), false);
    for (int i = 0; i < g_.node_size(); ++i) {
      const onnx::NodeProto& node = g_.node(i);
      if (node.output_size() < 1 || (!node.domain().empty() && node.domain() != "ai.onnx")) continue;
      if (constants_.count(node.output(0))) continue;  // folded already
      evaluate(node);
      const bool computed = facts_.integers.count(node.output(0)) > 0 || facts_.floats.count(node.output(0)) > 0;
      facts_.shape_only[static_cast<std::size_t>(i)] = computed && node.output_size() == 1;
    }
    return std::move(facts_);
  }

 private:
  const ShapeIntegers* ints(const onnx::NodeProto& node, int input) const {
    return input < node.input_size() ? facts_.integers_of(node.input(input)) : nullptr;
  }
  const Dims* dims(const onnx::NodeProto& node, int input) const {
    return input < node.input_size() ? facts_.shape(node.input(input)) : nullptr;
  }
  void set_integers(const onnx::NodeProto& node, ShapeIntegers v) {
    if (v.values.size() > max_integers || (v.scalar && v.values.size() != 1)) return;
    facts_.integers[node.output(0)] = std::move(v);
  }
  void set_shape(const onnx::NodeProto& node, Dims d) { facts_.shapes[node.output(0)] = std::move(d); }
  // An evaluated float tensor or a small float constant of rank <= 1.
  std::optional<ShapeFloats> float_values(const onnx::NodeProto& node, int input) const {
    if (input >= node.input_size()) return {};
    if (const ShapeFloats* v = facts_.floats_of(node.input(input))) return *v;
    const auto c = constants_.find(node.input(input));
    if (c == constants_.end() || !c->second.is_float || c->second.dims.size() > 1 || c->second.floats.size() > max_integers) return {};
    return ShapeFloats{c->second.dims.empty(), std::vector<double>(c->second.floats.begin(), c->second.floats.end())};
  }
  void set_floats(const onnx::NodeProto& node, ShapeFloats v) {
    if (v.values.size() > max_integers || (v.scalar && v.values.size() != 1)) return;
    for (const double x : v.values) {
      if (!std::isfinite(x)) return;
    }
    set_shape(node, v.scalar ? Dims{} : Dims{Affine{static_cast<std::int64_t>(v.values.size()), 0}});
    facts_.floats[node.output(0)] = std::move(v);
  }

  void evaluate(const onnx::NodeProto& node) {
    const std::string& op = node.op_type();
    if (op == "Shape") return shape_of(node);
    if (op == "Gather") return gather(node);
    if (op == "Unsqueeze" || op == "Squeeze") return squeeze(node, op == "Unsqueeze");
    if (op == "Concat") return concat(node);
    if (op == "Slice") return slice(node);
    if (op == "Cast") return cast(node);
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Mod" || op == "Equal") return arithmetic(node);
    if (op == "Sqrt") {
      if (const auto x = float_values(node, 0)) return square_root(node, *x);
    }
    if (op == "Where") return where(node);
    if (op == "ConstantOfShape") return constant_of_shape(node);
    if (op == "Reshape") return reshape(node);
    if (op == "Transpose") return transpose(node);
    if (op == "MatMul") return matmul(node);
    if (op == "Gemm") return gemm(node);
    if (op == "Expand") return expand(node);
    if (op == "Flatten") return flatten(node);
    if (op == "ReduceMean") return reduce_mean(node);
    if (op == "Pow") return elementwise_binary(node);
    if (op == "Relu" || op == "Erf" || op == "Sqrt" || op == "Tanh" || op == "Softmax" || op == "Identity" || op == "Dropout" ||
        op == "Sigmoid" || op == "Neg" || op == "Exp" || op == "LayerNormalization") {
      if (const Dims* x = dims(node, 0)) set_shape(node, *x);
    }
  }

  void shape_of(const onnx::NodeProto& node) {
    const Dims* x = dims(node, 0);
    if (!x) return;
    const auto rank = static_cast<std::int64_t>(x->size());
    std::int64_t start = int_attribute(node, "start", 0), end = int_attribute(node, "end", rank);
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    start = std::clamp<std::int64_t>(start, 0, rank);
    end = std::clamp<std::int64_t>(end, start, rank);
    ShapeIntegers v;
    v.values.assign(x->begin() + start, x->begin() + end);
    set_integers(node, v);
  }

  void gather(const onnx::NodeProto& node) {
    const ShapeIntegers* data = ints(node, 0);
    const ShapeIntegers* indices = ints(node, 1);
    if (!data && indices) return gather_floats(node, *indices);
    if (!data || !indices || data->scalar || int_attribute(node, "axis", 0) != 0) return;
    ShapeIntegers v;
    v.scalar = indices->scalar;
    for (const Affine& index : indices->values) {
      if (!index.is_constant()) return;
      const auto at = axis_index(index.constant, data->values.size());
      if (!at) return;
      v.values.push_back(data->values[*at]);
    }
    set_integers(node, v);
  }

  // Gather of a float tensor (PyTorch 2 picks the query, key and value this way) by constant
  // indices along an axis of constant size.
  void gather_floats(const onnx::NodeProto& node, const ShapeIntegers& indices) {
    const Dims* x = dims(node, 0);
    if (!x) return;
    const auto axis = axis_index(int_attribute(node, "axis", 0), x->size());
    if (!axis || !(*x)[*axis].is_constant()) return;
    for (const Affine& index : indices.values) {
      if (!index.is_constant() || !axis_index(index.constant, static_cast<std::size_t>((*x)[*axis].constant))) return;
    }
    Dims out(x->begin(), x->begin() + static_cast<std::ptrdiff_t>(*axis));
    if (!indices.scalar) out.push_back(Affine{static_cast<std::int64_t>(indices.values.size()), 0});
    out.insert(out.end(), x->begin() + static_cast<std::ptrdiff_t>(*axis) + 1, x->end());
    set_shape(node, out);
  }

  // Squeeze and Unsqueeze: of integers only between a scalar and a one-element vector (how
  // shapes are assembled); of float tensors with the axes given.
  void squeeze(const onnx::NodeProto& node, bool unsqueeze) {
    std::optional<std::vector<std::int64_t>> axes = ints_attribute(node, "axes");
    if (const ShapeIntegers* a = ints(node, 1)) {
      axes.emplace();
      for (const Affine& v : a->values) {
        if (!v.is_constant()) return;
        axes->push_back(v.constant);
      }
    }
    const ShapeIntegers* x = ints(node, 0);
    if (!x) {
      if (const Dims* d = dims(node, 0); d && axes) squeeze_dims(node, *d, *axes, unsqueeze);
      return;
    }
    const bool at_zero = axes && axes->size() == 1 && ((*axes)[0] == 0 || (*axes)[0] == -1);
    if (unsqueeze && x->scalar && at_zero) return set_integers(node, ShapeIntegers{false, x->values});
    if (!unsqueeze && !x->scalar && x->values.size() == 1 && (at_zero || !axes)) return set_integers(node, ShapeIntegers{true, x->values});
  }

  void squeeze_dims(const onnx::NodeProto& node, const Dims& x, const std::vector<std::int64_t>& axes, bool unsqueeze) {
    const std::size_t rank = unsqueeze ? x.size() + axes.size() : x.size();
    std::vector<bool> picked(rank, false);
    for (const std::int64_t a : axes) {
      const auto axis = axis_index(a, rank);
      if (!axis || picked[*axis]) return;
      picked[*axis] = true;
    }
    Dims out;
    std::size_t next = 0;
    for (std::size_t i = 0; i < rank; ++i) {
      if (unsqueeze) {
        out.push_back(picked[i] ? Affine{1, 0} : x[next++]);
      } else if (!picked[i]) {
        out.push_back(x[i]);
      } else if (!(x[i] == Affine{1, 0})) {
        return;  // only dimensions of 1 are squeezed
      }
    }
    set_shape(node, out);
  }

  void concat(const onnx::NodeProto& node) {
    ShapeIntegers v;
    for (int i = 0; i < node.input_size(); ++i) {
      const ShapeIntegers* x = ints(node, i);
      if (!x || x->scalar) return;
      v.values.insert(v.values.end(), x->values.begin(), x->values.end());
    }
    if (node.input_size() == 0) return;
    const auto axis = int_attribute(node, "axis", 0);
    if (axis != 0 && axis != -1) return;
    set_integers(node, v);
  }

  // Slice (opset 10+: starts, ends, axes, steps as inputs) of an integer vector or of a
  // float tensor; the bounds must be batch-independent, and so must a sliced dimension
  // unless it is taken whole.
  void slice(const onnx::NodeProto& node) {
    if (node.input_size() < 3) return;
    std::vector<std::vector<std::int64_t>> args;
    for (int i = 1; i < 5; ++i) {
      if (i >= node.input_size() || node.input(i).empty()) {
        args.emplace_back();
        continue;
      }
      const auto values = facts_.constant_integers(node.input(i));
      if (!values) return;
      args.push_back(*values);
    }
    const std::vector<std::int64_t>& starts = args[0];
    const std::vector<std::int64_t>& ends = args[1];
    std::vector<std::int64_t> axes = args[2], steps = args[3];
    if (starts.size() != ends.size()) return;
    if (axes.empty()) {
      for (std::size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<std::int64_t>(i));
    }
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (axes.size() != starts.size() || steps.size() != starts.size()) return;
    const ShapeIntegers* x = ints(node, 0);
    const Dims* d = dims(node, 0);
    if (x && !x->scalar) {
      if (starts.size() != 1 || steps[0] != 1 || (axes[0] != 0 && axes[0] != -1)) return;
      const auto size = static_cast<std::int64_t>(x->values.size());
      const auto [begin, end] = bounds(starts[0], ends[0], size);
      ShapeIntegers v;
      v.values.assign(x->values.begin() + begin, x->values.begin() + std::max(begin, end));
      return set_integers(node, v);
    }
    if (!d) return;
    Dims out = *d;
    for (std::size_t i = 0; i < axes.size(); ++i) {
      const auto axis = axis_index(axes[i], d->size());
      if (!axis || steps[i] != 1) return;
      const Affine dim = (*d)[*axis];
      if (!dim.is_constant()) {
        if (starts[i] != 0 || ends[i] < INT32_MAX) return;  // only taken whole
        continue;
      }
      const auto [begin, end] = bounds(starts[i], ends[i], dim.constant);
      out[*axis] = Affine{std::max<std::int64_t>(end - begin, 0), 0};
    }
    set_shape(node, out);
  }
  // ONNX Slice's clamping of [start, end) into [0, size] (step 1).
  static std::pair<std::int64_t, std::int64_t> bounds(std::int64_t start, std::int64_t end, std::int64_t size) {
    if (start < 0) start = start < -size ? 0 : start + size;
    if (end < 0) end = end < -size ? 0 : end + size;
    return {std::min(start, size), std::min(end, size)};
  }

  void cast(const onnx::NodeProto& node) {
    const auto to = int_attribute(node, "to", 0);
    if (const ShapeIntegers* x = ints(node, 0); x && (to == onnx::TensorProto::INT64 || to == onnx::TensorProto::INT32)) {
      return set_integers(node, *x);
    }
    const bool to_float = to == onnx::TensorProto::FLOAT || to == onnx::TensorProto::DOUBLE;
    if (const ShapeIntegers* x = ints(node, 0); x && to_float) {
      // A float of a shape: only when it is the same for every batch size.
      ShapeFloats v;
      v.scalar = x->scalar;
      for (const Affine& i : x->values) {
        if (!i.is_constant()) return;
        v.values.push_back(static_cast<double>(i.constant));
      }
      return set_floats(node, v);
    }
    if (const auto x = float_values(node, 0); x && to_float && facts_.floats_of(node.input(0))) return set_floats(node, *x);
    if (const Dims* x = dims(node, 0); x && to == onnx::TensorProto::FLOAT) set_shape(node, *x);
  }

  void arithmetic(const onnx::NodeProto& node) {
    if (node.input_size() != 2) return;
    const ShapeIntegers* a = ints(node, 0);
    const ShapeIntegers* b = ints(node, 1);
    if (!a || !b) {
      const auto x = float_values(node, 0), y = float_values(node, 1);
      if (x && y && node.op_type() != "Mod" && node.op_type() != "Equal") return float_arithmetic(node, *x, *y);
      return elementwise_binary(node);
    }
    const std::size_t n = std::max(a->values.size(), b->values.size());
    if ((a->values.size() != n && a->values.size() != 1) || (b->values.size() != n && b->values.size() != 1)) return;
    const std::string& op = node.op_type();
    const std::function<std::optional<Affine>(Affine, Affine)> f = op == "Add" ? add : op == "Sub" ? sub : op == "Mul" ? mul : op == "Div" ? div
                                                                 : op == "Mod" ? mod : equal;
    ShapeIntegers v;
    v.scalar = a->scalar && b->scalar;
    for (std::size_t i = 0; i < n; ++i) {
      const auto r = f(a->values[a->values.size() == 1 ? 0 : i], b->values[b->values.size() == 1 ? 0 : i]);
      if (!r) return;
      v.values.push_back(*r);
    }
    set_integers(node, v);
  }

  // Float Add, Sub, Mul, Div of evaluated floats and float constants (one-element ones broadcast).
  void float_arithmetic(const onnx::NodeProto& node, const ShapeFloats& a, const ShapeFloats& b) {
    const std::size_t n = std::max(a.values.size(), b.values.size());
    if ((a.values.size() != n && a.values.size() != 1) || (b.values.size() != n && b.values.size() != 1)) return;
    const std::string& op = node.op_type();
    ShapeFloats v;
    v.scalar = a.scalar && b.scalar;
    for (std::size_t i = 0; i < n; ++i) {
      const double x = a.values[a.values.size() == 1 ? 0 : i], y = b.values[b.values.size() == 1 ? 0 : i];
      if (op == "Div" && y == 0.0) return;
      v.values.push_back(op == "Add" ? x + y : op == "Sub" ? x - y : op == "Mul" ? x * y : x / y);
    }
    set_floats(node, v);
  }
  void square_root(const onnx::NodeProto& node, ShapeFloats v) {
    for (double& x : v.values) {
      if (x < 0.0) return;
      x = std::sqrt(x);
    }
    set_floats(node, v);
  }

  void elementwise_binary(const onnx::NodeProto& node) {
    if (node.input_size() != 2 || node.op_type() == "Equal") return;
    const Dims* a = dims(node, 0);
    const Dims* b = dims(node, 1);
    if (!a || !b) return;
    if (auto out = broadcast(*a, *b)) set_shape(node, *out);
  }

  void where(const onnx::NodeProto& node) {
    const ShapeIntegers* c = ints(node, 0);
    const ShapeIntegers* x = ints(node, 1);
    const ShapeIntegers* y = ints(node, 2);
    if (!c || !x || !y) return;
    const std::size_t n = std::max({c->values.size(), x->values.size(), y->values.size()});
    ShapeIntegers v;
    v.scalar = c->scalar && x->scalar && y->scalar;
    for (const ShapeIntegers* t : {c, x, y}) {
      if (t->values.size() != n && t->values.size() != 1) return;
    }
    auto at = [&](const ShapeIntegers* t, std::size_t i) { return t->values[t->values.size() == 1 ? 0 : i]; };
    for (std::size_t i = 0; i < n; ++i) {
      const Affine condition = at(c, i);
      if (!condition.is_constant()) return;
      v.values.push_back(condition.constant != 0 ? at(x, i) : at(y, i));
    }
    set_integers(node, v);
  }

  void constant_of_shape(const onnx::NodeProto& node) {
    const auto shape = node.input_size() == 1 ? facts_.constant_integers(node.input(0)) : std::nullopt;
    if (!shape || shape->size() != 1 || (*shape)[0] < 0 || static_cast<std::size_t>((*shape)[0]) > max_integers) return;
    std::int64_t fill = 0;
    bool is_float = true;  // ONNX's default value is a float zero
    for (const onnx::AttributeProto& a : node.attribute()) {
      if (a.name() != "value" || !a.has_t()) continue;
      try {
        const OnnxConstant c = read_onnx_tensor(a.t(), "value");
        if (c.elements() != 1) return;
        is_float = c.is_float;
        if (!is_float) fill = c.integers[0];
      } catch (...) {
        return;  // reported by whoever needs the value
      }
    }
    if (is_float) return set_shape(node, Dims{Affine{(*shape)[0], 0}});
    set_integers(node, ShapeIntegers{false, std::vector<Affine>(static_cast<std::size_t>((*shape)[0]), Affine{fill, 0})});
  }

  // Reshape with a target evaluated: 0 copies the input's dimension (allowzero 0), -1 is
  // what is left of the element count.
  void reshape(const onnx::NodeProto& node) {
    const Dims* x = dims(node, 0);
    const ShapeIntegers* target = ints(node, 1);
    if (const ShapeIntegers* values = ints(node, 0); values && target) return reshape_integers(node, *values);
    if (!x || !target || target->scalar || int_attribute(node, "allowzero", 0) != 0) return;
    Dims out;
    int inferred = -1;
    for (std::size_t i = 0; i < target->values.size(); ++i) {
      const Affine t = target->values[i];
      if (t == Affine{0, 0}) {
        if (i >= x->size()) return;
        out.push_back((*x)[i]);
      } else if (t == Affine{-1, 0}) {
        if (inferred >= 0) return;
        inferred = static_cast<int>(i);
        out.push_back(Affine{1, 0});
      } else if (t.is_constant() ? t.constant >= 1 : (t.constant == 0 && t.per_batch >= 1)) {
        out.push_back(t);
      } else {
        return;
      }
    }
    const auto total = product(*x, 0, x->size());
    const auto known = product(out, 0, out.size());
    if (!total || !known || known->coefficient == 0) return;
    if (inferred >= 0) {
      if (total->coefficient % known->coefficient != 0 || total->batch_power < known->batch_power) return;
      const auto rest = as_affine(Monomial{total->coefficient / known->coefficient, total->batch_power - known->batch_power});
      if (!rest) return;
      out[static_cast<std::size_t>(inferred)] = *rest;
    } else if (total->coefficient != known->coefficient || total->batch_power != known->batch_power) {
      return;
    }
    set_shape(node, out);
  }

  // An integer vector or scalar reshaped to a scalar or a vector of its length.
  void reshape_integers(const onnx::NodeProto& node, const ShapeIntegers& values) {
    const auto target = facts_.constant_integers(node.input(1));
    if (!target || target->size() > 1) return;
    const auto n = static_cast<std::int64_t>(values.values.size());
    if (target->empty() ? n != 1 : ((*target)[0] != n && (*target)[0] != -1)) return;
    set_integers(node, ShapeIntegers{target->empty(), values.values});
  }

  void transpose(const onnx::NodeProto& node) {
    const Dims* x = dims(node, 0);
    if (!x) return;
    std::vector<std::int64_t> perm = ints_attribute(node, "perm").value_or(std::vector<std::int64_t>{});
    if (perm.empty()) {
      for (std::size_t i = x->size(); i-- > 0;) perm.push_back(static_cast<std::int64_t>(i));
    }
    if (perm.size() != x->size()) return;
    std::vector<bool> seen(x->size(), false);
    Dims out;
    for (const std::int64_t p : perm) {
      if (p < 0 || p >= static_cast<std::int64_t>(x->size()) || seen[static_cast<std::size_t>(p)]) return;
      seen[static_cast<std::size_t>(p)] = true;
      out.push_back((*x)[static_cast<std::size_t>(p)]);
    }
    set_shape(node, out);
  }

  void matmul(const onnx::NodeProto& node) {
    const Dims* a = dims(node, 0);
    const Dims* b = dims(node, 1);
    if (!a || !b || a->size() < 2 || b->size() < 2 || !((*a)[a->size() - 1] == (*b)[b->size() - 2])) return;
    const auto batch = broadcast(Dims(a->begin(), a->end() - 2), Dims(b->begin(), b->end() - 2));
    if (!batch) return;
    Dims out = *batch;
    out.push_back((*a)[a->size() - 2]);
    out.push_back((*b)[b->size() - 1]);
    set_shape(node, out);
  }

  void gemm(const onnx::NodeProto& node) {
    const Dims* a = dims(node, 0);
    const Dims* b = dims(node, 1);
    if (!a || !b || a->size() != 2 || b->size() != 2) return;
    const bool ta = int_attribute(node, "transA", 0) != 0, tb = int_attribute(node, "transB", 0) != 0;
    if (!((*a)[ta ? 0 : 1] == (*b)[tb ? 1 : 0])) return;
    set_shape(node, Dims{(*a)[ta ? 1 : 0], (*b)[tb ? 0 : 1]});
  }

  void expand(const onnx::NodeProto& node) {
    const Dims* x = dims(node, 0);
    const ShapeIntegers* target = ints(node, 1);
    if (!x || !target || target->scalar) return;
    if (auto out = broadcast(*x, target->values)) set_shape(node, *out);
  }

  void flatten(const onnx::NodeProto& node) {
    const Dims* x = dims(node, 0);
    if (!x) return;
    const auto axis = axis_index(int_attribute(node, "axis", 1), x->size() + 1);
    if (!axis) return;
    const auto outer = product(*x, 0, *axis);
    const auto inner = product(*x, *axis, x->size());
    if (!outer || !inner) return;
    const auto o = as_affine(*outer), i = as_affine(*inner);
    if (o && i) set_shape(node, Dims{*o, *i});
  }

  void reduce_mean(const onnx::NodeProto& node) {
    const Dims* x = dims(node, 0);
    if (!x) return;
    const std::vector<std::int64_t> axes = ints_attribute(node, "axes").value_or(std::vector<std::int64_t>{});
    const bool keep = int_attribute(node, "keepdims", 1) != 0;
    std::vector<bool> reduced(x->size(), axes.empty());
    for (const std::int64_t a : axes) {
      const auto axis = axis_index(a, x->size());
      if (!axis) return;
      reduced[*axis] = true;
    }
    Dims out;
    for (std::size_t i = 0; i < x->size(); ++i) {
      if (!reduced[i]) {
        out.push_back((*x)[i]);
      } else if (keep) {
        out.push_back(Affine{1, 0});
      }
    }
    set_shape(node, out);
  }

  const onnx::GraphProto& g_;
  const std::map<std::string, OnnxConstant>& constants_;
  OnnxShapeFacts facts_;
};

}  // namespace

std::string BatchAffine::str() const {
  if (per_batch == 0) return std::to_string(constant);
  std::string s = (per_batch == 1 ? "" : std::to_string(per_batch)) + "N";
  if (constant != 0) s += (constant > 0 ? "+" : "") + std::to_string(constant);
  return s;
}

const std::vector<BatchAffine>* OnnxShapeFacts::shape(const std::string& tensor) const {
  const auto it = shapes.find(tensor);
  return it == shapes.end() ? nullptr : &it->second;
}

const ShapeIntegers* OnnxShapeFacts::integers_of(const std::string& tensor) const {
  const auto it = integers.find(tensor);
  return it == integers.end() ? nullptr : &it->second;
}

std::optional<std::vector<std::int64_t>> OnnxShapeFacts::constant_integers(const std::string& tensor) const {
  const ShapeIntegers* v = integers_of(tensor);
  if (!v) return {};
  std::vector<std::int64_t> out;
  for (const BatchAffine& x : v->values) {
    if (!x.is_constant()) return {};
    out.push_back(x.constant);
  }
  return out;
}

const ShapeFloats* OnnxShapeFacts::floats_of(const std::string& tensor) const {
  const auto it = floats.find(tensor);
  return it == floats.end() ? nullptr : &it->second;
}

OnnxShapeFacts evaluate_onnx_shapes(const onnx::GraphProto& graph, const std::map<std::string, OnnxConstant>& constants) {
  return Evaluator(graph, constants).run();
}

}  // namespace ember
