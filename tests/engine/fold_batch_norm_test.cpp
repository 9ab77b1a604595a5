#include "engine/fold_batch_norm.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "layers/registry.h"
#include "support/layer_harness.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

Json conv(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride, std::int64_t padding, bool bias) {
  return Json{{"in_channels", in}, {"out_channels", out}, {"kernel", kernel}, {"stride", stride}, {"padding", padding}, {"bias", bias}};
}

// conv1 -> bn1 -> relu -> conv2 -> bn2 (no affine) fold. conv3's output is also read by
// the add, and bn4 has no running statistics: neither folds.
Graph make_graph() {
  Graph g(Shape{3, 7, 7});
  ValueId v = g.add("conv1", make_layer("conv2d", conv(3, 6, 3, 1, 1, false)), {g.input()});
  v = g.add("bn1", make_layer("batch_norm2d", Json{{"num_features", 6}}), {v});
  v = g.add("relu1", make_layer("relu", Json::object()), {v});
  v = g.add("conv2", make_layer("conv2d", conv(6, 5, 3, 2, 1, true)), {v});
  v = g.add("bn2", make_layer("batch_norm2d", Json{{"num_features", 5}, {"affine", false}, {"eps", 1e-3}}), {v});
  const ValueId c3 = g.add("conv3", make_layer("conv2d", conv(5, 4, 1, 1, 0, true)), {v});
  const ValueId b3 = g.add("bn3", make_layer("batch_norm2d", Json{{"num_features", 4}}), {c3});
  v = g.add("sum", make_layer("add", Json::object()), {b3, c3});
  v = g.add("conv4", make_layer("conv2d", conv(4, 4, 1, 1, 0, true)), {v});
  v = g.add("bn4", make_layer("batch_norm2d", Json{{"num_features", 4}, {"track_running_stats", false}}), {v});
  v = g.add("pool", make_layer("global_avg_pool", Json::object()), {v});
  g.set_output(v);
  return g;
}

// Random weights and running statistics far from their initial values.
void randomize(ParameterStore& store) {
  store.initialize(7);
  std::mt19937 random(11);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (const ParameterEntry& e : store.entries()) {
    if (e.name.find("bn") != 0) continue;
    Tensor t = store.value(store.find(e.name));
    for (std::int64_t i = 0; i < t.elements(); ++i) t.data[i] = 1.0f + 0.5f * value(random);
  }
  for (std::size_t b = 0; b < store.buffer_entries().size(); ++b) {
    const ParameterEntry& e = store.buffer_entries()[b];
    Tensor t = store.buffer(static_cast<int>(b));
    const bool variance = e.name.find("running_var") != std::string::npos;
    for (std::int64_t i = 0; i < t.elements(); ++i) t.data[i] = variance ? 0.5f + value(random) * 0.4f : 0.3f * value(random);
  }
}

// The graph's inference output, one layer at a time through the layer harness (plain
// values between layers), with the store's parameters and buffers.
std::vector<float> run_by_hand(const Graph& graph, ParameterStore& store, const std::vector<float>& input, std::int64_t batch) {
  std::vector<std::vector<float>> values(static_cast<std::size_t>(graph.value_count()));
  values[0] = input;
  for (std::size_t n = 0; n < graph.nodes().size(); ++n) {
    const Node& node = graph.nodes()[n];
    std::vector<HarnessInput> specs;
    for (ValueId v : node.inputs) specs.emplace_back(graph.value_shape(v).with_batch(batch));
    LayerHarness harness(*node.layer, specs, Mode::inference);
    for (std::size_t i = 0; i < node.inputs.size(); ++i) harness.inputs[i] = values[static_cast<std::size_t>(node.inputs[i])];
    const std::span<const int> entries = store.node_entries(static_cast<int>(n));
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const Tensor t = store.value(entries[i]);
      harness.params[i].assign(t.data, t.data + t.elements());
    }
    const std::span<const int> buffers = store.node_buffer_entries(static_cast<int>(n));
    for (std::size_t i = 0; i < buffers.size(); ++i) {
      const Tensor t = store.buffer(buffers[i]);
      harness.buffers[i].assign(t.data, t.data + t.elements());
    }
    values[static_cast<std::size_t>(node.output)] = harness.forward();
  }
  return values[static_cast<std::size_t>(graph.output())];
}

TEST(FoldBatchNorm, FoldsConvBatchNormPairsAndLeavesTheRest) {
  const Graph graph = make_graph();
  ParameterStore store(graph);
  randomize(store);
  const FoldedModel folded = fold_batch_norm(graph, store);
  const std::vector<std::pair<std::string, std::string>> expected{{"conv1", "bn1"}, {"conv2", "bn2"}};
  EXPECT_EQ(folded.folded, expected);
  std::vector<std::string> names;
  for (const Node& node : folded.graph.nodes()) names.push_back(node.name);
  EXPECT_EQ(names, (std::vector<std::string>{"conv1", "relu1", "conv2", "conv3", "bn3", "sum", "conv4", "bn4", "pool"}));
  EXPECT_EQ(folded.graph.nodes()[0].layer->options().at("bias"), true);
  EXPECT_NE(folded.parameters.find("conv1.bias"), -1);
  EXPECT_EQ(folded.parameters.find("bn1.weight"), -1);
  EXPECT_NE(folded.parameters.find_buffer("bn3.running_mean"), -1);
  // Unfolded tensors are copied as they were.
  const Tensor before = store.buffer(store.find_buffer("bn3.running_var"));
  const Tensor after = folded.parameters.buffer(folded.parameters.find_buffer("bn3.running_var"));
  EXPECT_EQ(std::vector<float>(before.data, before.data + 4), std::vector<float>(after.data, after.data + 4));
}

TEST(FoldBatchNorm, TheFoldedGraphComputesTheSameInference) {
  const Graph graph = make_graph();
  ParameterStore store(graph);
  randomize(store);
  FoldedModel folded = fold_batch_norm(graph, store);
  const std::int64_t batch = 3;
  const std::vector<float> input = testing::random_weights(static_cast<std::size_t>(batch * 3 * 7 * 7), 3);
  const std::vector<float> reference = run_by_hand(graph, store, input, batch);
  const std::vector<float> got = run_by_hand(folded.graph, folded.parameters, input, batch);
  testing::expect_close(got, std::vector<double>(reference.begin(), reference.end()), 1e-5, "folded graph output");
}

TEST(FoldBatchNorm, AGraphWithoutBatchNormIsCopied) {
  Graph graph(Shape{2, 5, 5});
  graph.set_output(graph.add("conv", make_layer("conv2d", conv(2, 3, 3, 1, 0, false)), {graph.input()}));
  ParameterStore store(graph);
  store.initialize(1);
  const FoldedModel folded = fold_batch_norm(graph, store);
  EXPECT_TRUE(folded.folded.empty());
  ASSERT_EQ(folded.graph.nodes().size(), 1u);
  EXPECT_EQ(folded.graph.nodes()[0].layer->options().at("bias"), false);
  const std::vector<float> a(store.values().begin(), store.values().end());
  const std::vector<float> b(folded.parameters.values().begin(), folded.parameters.values().end());
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace ember
