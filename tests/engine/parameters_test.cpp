// Initialization matches PyTorch's defaults in distribution: the bounds and spreads of
// every initializer, checked on the built-in models' parameters.
#include "engine/parameters.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/model_spec.h"

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

}  // namespace
}  // namespace ember
