// The symbolic shape evaluation (engine/onnx_shape_eval.h): PyTorch's attention shape
// arithmetic comes out affine in the batch size N; what is not affine, not exact for every
// N, or out of range stays unknown instead of throwing. torch 2's float scale computed from
// a shape is evaluated exactly when it does not depend on N.
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <fstream>

#include "engine/onnx_shape_eval.h"

namespace ember {
namespace {

using A = BatchAffine;

std::vector<A> values(const OnnxShapeFacts& facts, const std::string& tensor) {
  const ShapeIntegers* v = facts.integers_of(tensor);
  return v ? v->values : std::vector<A>{};
}

TEST(OnnxShapeEval, PyTorchsAttentionShapesAreAffineInTheBatch) {
  onnx::ModelProto model;
  std::ifstream file(std::string(EMBER_TEST_DATA_DIR) + "/onnx/mha_batch_first.onnx", std::ios::binary);
  ASSERT_TRUE(model.ParseFromIstream(&file));
  std::vector<bool> folded;
  const auto constants = fold_onnx_constants(model.graph(), "mha.onnx", folded);
  const OnnxShapeFacts facts = evaluate_onnx_shapes(model.graph(), constants);
  // x.view(T, N * heads, D) of the queries, and the merge back to (T * N, E).
  EXPECT_EQ(*facts.shape("/mha/Reshape_output_0"), (std::vector<A>{{5, 0}, {0, 4}, {4, 0}}));
  EXPECT_EQ(values(facts, "/mha/Concat_3_output_0"), (std::vector<A>{{0, 5}, {16, 0}}));
  EXPECT_EQ(*facts.shape("output"), (std::vector<A>{{0, 1}, {5, 0}, {16, 0}}));
  int shape_only = 0;
  for (int i = 0; i < model.graph().node_size(); ++i) {
    const std::string& op = model.graph().node(i).op_type();
    if (op == "Shape" || op == "Gather" || op == "Concat") {
      EXPECT_TRUE(facts.shape_only[static_cast<std::size_t>(i)]) << model.graph().node(i).name();
    }
    if (op == "MatMul" || op == "Reshape" || op == "Softmax") {
      EXPECT_FALSE(facts.shape_only[static_cast<std::size_t>(i)]);
    }
    shape_only += facts.shape_only[static_cast<std::size_t>(i)];
  }
  EXPECT_GT(shape_only, 30);
}

// input x (N, 6): n = Shape(x)[0], then arithmetic on n.
struct ArithmeticGraph {
  onnx::GraphProto graph;
  std::map<std::string, OnnxConstant> constants;

  ArithmeticGraph() {
    onnx::ValueInfoProto* x = graph.add_input();
    x->set_name("x");
    x->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    x->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_param("N");
    x->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(6);
    node("Shape", {"x"}, "shape");
    constant("zero", 0, true);
    node("Gather", {"shape", "zero"}, "n");
  }
  void constant(const std::string& name, std::int64_t v, bool scalar = false) {
    OnnxConstant c;
    c.is_float = false;
    if (!scalar) c.dims = {1};
    c.integers = {v};
    constants[name] = c;
  }
  void float_constant(const std::string& name, float v) {
    OnnxConstant c;
    c.dims = {1};
    c.floats = {v};
    constants[name] = c;
  }
  onnx::NodeProto* node(const std::string& op, std::vector<std::string> inputs, const std::string& output) {
    onnx::NodeProto* n = graph.add_node();
    n->set_op_type(op);
    n->set_name(output);
    for (const std::string& in : inputs) n->add_input(in);
    n->add_output(output);
    return n;
  }
  void cast(const std::string& input, const std::string& output, onnx::TensorProto::DataType to) {
    onnx::AttributeProto* a = node("Cast", {input}, output)->add_attribute();
    a->set_name("to");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(to);
  }
};

TEST(OnnxShapeEval, OnlyAffineExactValuesAreKnown) {
  ArithmeticGraph g;
  g.constant("two", 2, true);
  g.constant("four", 4, true);
  g.constant("seven", 7, true);
  g.constant("big", 5, true);
  g.node("Mul", {"n", "four"}, "4n");
  g.node("Div", {"4n", "two"}, "2n");
  g.node("Div", {"n", "two"}, "n/2");          // not exact for odd N
  g.node("Mul", {"n", "n"}, "n^2");            // not affine
  g.node("Add", {"2n", "seven"}, "2n+7");
  g.node("Div", {"2n+7", "seven"}, "(2n+7)/7");  // not exact
  g.node("Equal", {"n", "seven"}, "n==7");      // true for one N
  g.node("Equal", {"2n", "n"}, "2n==n");        // false for every N >= 1
  g.node("Gather", {"shape", "big"}, "out_of_range");
  g.node("Gather", {"shape", "n"}, "batch_index");  // an index that depends on N
  const OnnxShapeFacts facts = evaluate_onnx_shapes(g.graph, g.constants);
  EXPECT_EQ(values(facts, "2n"), (std::vector<A>{{0, 2}}));
  EXPECT_EQ(values(facts, "2n+7"), (std::vector<A>{{7, 2}}));
  EXPECT_EQ(values(facts, "2n==n"), (std::vector<A>{{0, 0}}));
  for (const char* unknown : {"n/2", "n^2", "(2n+7)/7", "n==7", "out_of_range", "batch_index"}) {
    EXPECT_EQ(facts.integers_of(unknown), nullptr) << unknown;
  }
}

TEST(OnnxShapeEval, ReshapeInfersMinusOneAndCopiesZero) {
  ArithmeticGraph g;
  g.constant("minus_one", -1);
  g.constant("three", 3);
  g.constant("zero_1d", 0);
  g.node("Concat", {"zero_1d", "three", "minus_one"}, "target");
  g.node("Reshape", {"x", "target"}, "y");          // (N, 3, 2)
  g.node("Concat", {"minus_one", "minus_one"}, "two_unknowns");
  g.node("Reshape", {"x", "two_unknowns"}, "bad");  // two -1: unknown
  const OnnxShapeFacts facts = evaluate_onnx_shapes(g.graph, g.constants);
  ASSERT_NE(facts.shape("y"), nullptr);
  EXPECT_EQ(*facts.shape("y"), (std::vector<A>{{0, 1}, {3, 0}, {2, 0}}));
  EXPECT_EQ(facts.shape("bad"), nullptr);
}

// torch 2's scale: Slice the last dimension (6) of the shape, Cast to float, Sqrt, Div 1 by it.
TEST(OnnxShapeEval, FloatsFromBatchIndependentShapesAreEvaluated) {
  ArithmeticGraph g;
  g.constant("minus_one", -1);
  g.constant("end", INT64_MAX);
  g.float_constant("one", 1.0f);
  g.float_constant("zero_f", 0.0f);
  g.node("Slice", {"shape", "minus_one", "end"}, "features");
  g.cast("features", "features_f", onnx::TensorProto::FLOAT);
  g.node("Sqrt", {"features_f"}, "root");
  g.node("Div", {"one", "root"}, "scale");
  g.cast("scale", "scale_f", onnx::TensorProto::FLOAT);
  g.node("Mul", {"x", "scale_f"}, "scaled_x");  // data: a shape, not a value
  g.cast("n", "n_f", onnx::TensorProto::FLOAT);  // the batch size: not a constant
  g.node("Div", {"one", "zero_f"}, "infinite");
  g.node("Sub", {"zero_f", "one"}, "minus");
  g.node("Sqrt", {"minus"}, "nan");
  // Mod like Python's %, and an integer Reshape to (1).
  g.constant("minus_seven", -7);
  g.constant("three", 3);
  g.node("Mod", {"minus_seven", "three"}, "mod");
  g.constant("one_i", 1);
  g.node("Reshape", {"mod", "one_i"}, "mod_1");
  g.node("Mod", {"n", "three"}, "n_mod");
  const OnnxShapeFacts facts = evaluate_onnx_shapes(g.graph, g.constants);
  ASSERT_NE(facts.floats_of("scale_f"), nullptr);
  EXPECT_EQ(facts.floats_of("scale_f")->values, std::vector<double>{1.0 / std::sqrt(6.0)});
  EXPECT_FALSE(facts.floats_of("scale_f")->scalar);
  EXPECT_EQ(*facts.shape("scaled_x"), (std::vector<A>{{0, 1}, {6, 0}}));
  EXPECT_EQ(facts.floats_of("scaled_x"), nullptr);
  for (const char* unknown : {"n_f", "infinite", "nan"}) EXPECT_EQ(facts.floats_of(unknown), nullptr) << unknown;
  EXPECT_EQ(values(facts, "mod_1"), (std::vector<A>{{2, 0}}));
  EXPECT_EQ(facts.integers_of("n_mod"), nullptr);
  // The nodes of the scale are shape arithmetic; the Mul of the data is not.
  for (int i = 0; i < g.graph.node_size(); ++i) {
    const std::string& out = g.graph.node(i).output(0);
    const bool evaluated = out == "features_f" || out == "root" || out == "scale" || out == "scale_f";
    if (evaluated || out == "scaled_x") {
      EXPECT_EQ(facts.shape_only[static_cast<std::size_t>(i)], evaluated) << out;
    }
  }
}

}  // namespace
}  // namespace ember
