// Initialization matches PyTorch's defaults in distribution: the bounds and spreads of
// every initializer, checked on the built-in models' parameters. Buffers: their own
// padded block, their inits, and no optimizer reaching them.
#include "engine/parameters.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "engine/clip.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "support/buffered_layer.h"
#include "support/file_helpers.h"

namespace ember {
namespace {

struct Stats {
  double min = 1e30, max = -1e30, mean = 0.0, std = 0.0;
};

Stats stats_of(const ParameterStore& store, const std::string& name) {
  for (const ParameterEntry& e : store.entries()) {
    if (e.name != name) continue;
    Stats s;
    const auto n = static_cast<std::size_t>(e.spec.shape.elements());
    double sum = 0.0, sum_squares = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const double x = store.values()[static_cast<std::size_t>(e.offset) + i];
      s.min = std::min(s.min, x);
      s.max = std::max(s.max, x);
      sum += x;
      sum_squares += x * x;
    }
    s.mean = sum / static_cast<double>(n);
    s.std = std::sqrt(sum_squares / static_cast<double>(n) - s.mean * s.mean);
    return s;
  }
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

// U(-b, b) has standard deviation b / sqrt(3); with thousands of draws the extremes come
// within a percent of the bound.
void expect_uniform(const Stats& s, double bound, const std::string& name) {
  EXPECT_GE(s.min, -bound) << name;
  EXPECT_LE(s.max, bound) << name;
  EXPECT_GT(s.max, 0.97 * bound) << name;
  EXPECT_LT(s.min, -0.97 * bound) << name;
  EXPECT_NEAR(s.std, bound / std::sqrt(3.0), 0.05 * bound) << name;
}

TEST(ParameterInit, MatchesPyTorchDefaults) {
  const Graph graph = graph_from_spec(builtin_model_spec("attn-cnn"));
  ParameterStore store(graph);
  store.initialize(3);
  // Conv2d and Linear: kaiming_uniform_(a = sqrt(5)) -> U(+-1/sqrt(fan_in)); biases alike.
  expect_uniform(stats_of(store, "conv2.weight"), 1.0 / std::sqrt(32.0 * 9.0), "conv2.weight");
  expect_uniform(stats_of(store, "block1.mlp_in.weight"), 1.0 / std::sqrt(64.0), "block1.mlp_in.weight");
  // MultiheadAttention: xavier_uniform_ on the (3d, d) projection, zero biases.
  expect_uniform(stats_of(store, "block1.attention.in_proj_weight"), std::sqrt(6.0 / (64.0 + 192.0)),
                 "block1.attention.in_proj_weight");
  EXPECT_EQ(stats_of(store, "block1.attention.in_proj_bias").max, 0.0);
  EXPECT_EQ(stats_of(store, "block1.attention.out_proj_bias").min, 0.0);
  // LayerNorm: ones and zeros. Positional embedding: N(0, 0.02^2).
  EXPECT_EQ(stats_of(store, "block1.norm1.weight").min, 1.0);
  EXPECT_EQ(stats_of(store, "block1.norm1.bias").max, 0.0);
  const Stats position = stats_of(store, "position.weight");
  EXPECT_NEAR(position.std, 0.02, 0.002);
  EXPECT_NEAR(position.mean, 0.0, 0.002);
}

TEST(ParameterInit, TheSameSeedGivesTheSameWeights) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  ParameterStore a(graph), b(graph), c(graph);
  a.initialize(5);
  b.initialize(5);
  c.initialize(6);
  EXPECT_TRUE(std::equal(a.values().begin(), a.values().end(), b.values().begin()));
  EXPECT_FALSE(std::equal(a.values().begin(), a.values().end(), c.values().begin()));
}

using testing::BufferedLayer;
using testing::buffered_graph;

std::vector<std::string> names_of(const std::vector<ParameterEntry>& entries) {
  std::vector<std::string> names;
  for (const ParameterEntry& e : entries) names.push_back(e.name);
  return names;
}

TEST(ParameterBuffers, HaveTheirOwnPaddedBlock) {
  const Graph graph = buffered_graph();
  const ParameterLayout layout = parameter_layout(graph);
  EXPECT_EQ(names_of(layout.entries), (std::vector<std::string>{"fc1.weight", "fc1.bias", "bn1.weight", "fc2.weight", "fc2.bias"}));
  EXPECT_EQ(names_of(layout.buffer_entries),
            (std::vector<std::string>{"bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"}));
  // Each buffer starts on a 64-byte boundary: 3 floats, 3 floats and 1 float take 16 each.
  std::vector<std::int64_t> offsets;
  for (const ParameterEntry& e : layout.buffer_entries) offsets.push_back(e.offset);
  EXPECT_EQ(offsets, (std::vector<std::int64_t>{0, 16, 32}));
  EXPECT_EQ(layout.buffer_floats, 48);
  EXPECT_EQ(layout.buffer_block_bytes(), 192u);
  EXPECT_EQ(layout.buffer_entries[2].spec.shape, (Shape{1}));
  EXPECT_EQ(layout.buffer_entries[0].node, 1);
  // The parameter block is what it would be without the buffers: 16 + 16 + 16 + 16 + 16.
  EXPECT_EQ(layout.total_floats, 80);
  ASSERT_EQ(layout.node_buffer_entries.size(), 3u);
  EXPECT_TRUE(layout.node_buffer_entries[0].empty());
  EXPECT_EQ(layout.node_buffer_entries[1], (std::vector<int>{0, 1, 2}));
  EXPECT_TRUE(layout.node_buffer_entries[2].empty());

  ParameterStore store(graph);
  EXPECT_EQ(store.buffer_floats(), 48);
  EXPECT_EQ(store.buffer_count(), 7);
  EXPECT_EQ(store.parameter_count(), 12 + 3 + 3 + 6 + 2);
  EXPECT_EQ(store.buffers().size(), 48u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(store.buffers().data()) % 64, 0u);
  EXPECT_NE(store.buffers().data(), store.values().data());
  EXPECT_EQ(std::vector<int>(store.node_buffer_entries(1).begin(), store.node_buffer_entries(1).end()),
            (std::vector<int>{0, 1, 2}));
  EXPECT_TRUE(store.node_buffer_entries(0).empty());
  EXPECT_EQ(store.find_buffer("bn1.running_var"), 1);
  EXPECT_EQ(store.find_buffer("bn1.weight"), -1);     // a parameter, not a buffer
  EXPECT_EQ(store.find("bn1.running_var"), -1);       // a buffer, not a parameter
  const Tensor var = store.buffer(1);
  EXPECT_EQ(var.data, store.buffers().data() + 16);
  EXPECT_EQ(var.shape, (Shape{3}));
  EXPECT_EQ(std::as_const(store).buffer(2).data, store.buffers().data() + 32);
  EXPECT_THROW(store.buffer(3), std::out_of_range);

  // A graph without buffered layers has an empty buffer block.
  const ParameterStore plain(graph_from_spec(builtin_model_spec("seed-cnn")));
  EXPECT_TRUE(plain.buffer_entries().empty());
  EXPECT_EQ(plain.buffer_floats(), 0);
  EXPECT_TRUE(plain.buffers().empty());
}

TEST(ParameterBuffers, InitializeSetsZerosAndOnesWithoutChangingTheWeights) {
  const Graph graph = buffered_graph();
  ParameterStore store(graph);
  std::iota(store.buffers().begin(), store.buffers().end(), 5.0f);
  store.initialize(3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(store.buffer(0).data[i], 0.0f) << "running_mean " << i;
    EXPECT_EQ(store.buffer(1).data[i], 1.0f) << "running_var " << i;
  }
  EXPECT_EQ(store.buffer(2).data[0], 0.0f) << "num_batches_tracked";

  // Buffers draw nothing: fc2's weights are those of the same graph with bn1 a ReLU.
  Graph relu(Shape{4});
  const ValueId fc1 = relu.add("fc1", make_layer("linear", Json{{"in_features", 4}, {"out_features", 3}}), {relu.input()});
  const ValueId bn1 = relu.add("bn1", make_layer("relu", Json::object()), {fc1});
  relu.set_output(relu.add("fc2", make_layer("linear", Json{{"in_features", 3}, {"out_features", 2}}), {bn1}));
  ParameterStore without(relu);
  without.initialize(3);
  const int fc2 = store.find("fc2.weight");
  EXPECT_EQ(std::memcmp(store.value_data(fc2), without.value_data(without.find("fc2.weight")), 6 * sizeof(float)), 0);
}

TEST(ParameterBuffers, OnlyZerosOrOnesAndUniqueNamesAreAccepted) {
  EXPECT_EQ(testing::error_of([] { parameter_layout(buffered_graph(2, std::make_unique<BufferedLayer>("running_mean", Init::normal))); }),
            "buffer bn1.running_mean: expected init zeros or ones, found normal");
  EXPECT_EQ(testing::error_of([] { parameter_layout(buffered_graph(2, std::make_unique<BufferedLayer>("weight"))); }),
            "buffer bn1.weight: a parameter or buffer has that name already");
  EXPECT_EQ(testing::error_of([] { parameter_layout(buffered_graph(2, std::make_unique<BufferedLayer>("running_var"))); }),
            "buffer bn1.running_var: a parameter or buffer has that name already");
}

// Optimizers take the value and gradient blocks: weight decay and updates never reach a
// buffer, whatever its value.
TEST(ParameterBuffers, OptimizerStepsLeaveBuffersUntouched) {
  OptimizerOptions sgd;
  sgd.momentum = 0.9f;
  sgd.weight_decay = 0.1f;
  OptimizerOptions adam;
  adam.weight_decay = 0.1f;
  for (const auto& [name, options] : {std::pair<std::string, OptimizerOptions>{"sgd", sgd},
                                      std::pair<std::string, OptimizerOptions>{"adam", adam},
                                      std::pair<std::string, OptimizerOptions>{"adamw", adam}}) {
    SCOPED_TRACE(name);
    const Graph graph = buffered_graph();
    ParameterStore store(graph);
    store.initialize(1);
    std::iota(store.buffers().begin(), store.buffers().end(), 0.5f);  // non-zero, padding too
    const std::vector<float> buffers(store.buffers().begin(), store.buffers().end());
    const std::vector<float> values(store.values().begin(), store.values().end());
    const auto optimizer = make_optimizer(name, options, store);
    for (int step = 0; step < 3; ++step) {
      std::fill(store.gradients().begin(), store.gradients().end(), 0.25f);
      clip_grad_norm(store.gradients(), 0.5f);
      optimizer->step();
    }
    EXPECT_NE(std::vector<float>(store.values().begin(), store.values().end()), values) << "the step did nothing";
    EXPECT_EQ(std::memcmp(store.buffers().data(), buffers.data(), buffers.size() * sizeof(float)), 0);
  }
}

}  // namespace
}  // namespace ember
