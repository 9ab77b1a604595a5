// relu_after_max_pools (engine/training_graph.h): which pairs it moves, that everything
// after them keeps its value ids, and that a training step on the rewritten graph gives
// the bits of the model's own graph, windows of ties and of non-positive maxima included.
#include "engine/training_graph.h"

#include <gtest/gtest.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/parameters.h"
#include "engine/random.h"
#include "engine/step_program.h"
#include "engine/workspace.h"

namespace ember {
namespace {

std::vector<std::string> node_names(const Graph& graph) {
  std::vector<std::string> names;
  for (const Node& node : graph.nodes()) names.push_back(node.name);
  return names;
}

// channels: 1 lets a training step fuse conv and pool (the direct kernel, up to 4 input
// channels), 5 keeps them apart.
Graph small_cnn(const std::string& activation, const std::string& pool, int channels = 1) {
  const std::string c = std::to_string(channels);
  return graph_from_spec(Json::parse(R"({"format": "ember.model", "version": 1, "name": "small", "input": [)" + c + R"(, 8, 8],
    "layers": [
      {"name": "conv", "kind": "conv2d", "in_channels": )" + c + R"(, "out_channels": 3, "kernel": 3, "padding": 1},
      {"name": "act", "kind": ")" + activation + R"("},
      {"name": "pool", "kind": ")" + pool + R"(", "kernel": 2},
      {"name": "flatten", "kind": "flatten"},
      {"name": "fc", "kind": "linear", "in_features": 48, "out_features": 4}]})"));
}

TEST(TrainingGraph, MovesEachReluAfterTheMaxPoolThatAloneReadsIt) {
  const Graph seed = graph_from_spec(builtin_model_spec("seed-cnn"));
  const std::unique_ptr<Graph> rewritten = relu_after_max_pools(seed);
  ASSERT_NE(rewritten, nullptr);
  EXPECT_EQ(node_names(*rewritten),
            (std::vector<std::string>{"conv1", "pool1", "relu1", "flatten", "fc1", "relu2", "fc2"}));
  // The pair's last value keeps the pool's id and shape; every later value is unchanged.
  ASSERT_EQ(rewritten->value_count(), seed.value_count());
  EXPECT_EQ(rewritten->value_shape(2), seed.value_shape(3));  // the pool, now on the convolution
  for (ValueId v = 3; v < seed.value_count(); ++v) EXPECT_EQ(rewritten->value_shape(v), seed.value_shape(v)) << v;
  EXPECT_EQ(rewritten->output(), seed.output());
  EXPECT_EQ(parameter_layout(*rewritten).total_floats, parameter_layout(seed).total_floats);

  const Graph attn = graph_from_spec(builtin_model_spec("attn-cnn"));
  const std::unique_ptr<Graph> attn_rewritten = relu_after_max_pools(attn);
  ASSERT_NE(attn_rewritten, nullptr);
  EXPECT_EQ(node_names(*attn_rewritten)[3], "pool1");
  EXPECT_EQ(node_names(*attn_rewritten)[4], "relu2");

  // Not monotone, or not a max: nothing to move.
  EXPECT_EQ(relu_after_max_pools(small_cnn("gelu", "max_pool2d")), nullptr);
  EXPECT_EQ(relu_after_max_pools(small_cnn("relu", "avg_pool2d")), nullptr);
  // A ReLU with a second reader stays.
  const Graph shared = graph_from_spec(Json::parse(R"({"format": "ember.model", "version": 1, "name": "shared",
    "input": [1, 8, 8], "layers": [
      {"name": "conv", "kind": "conv2d", "in_channels": 1, "out_channels": 2, "kernel": 3, "padding": 1},
      {"name": "act", "kind": "relu"},
      {"name": "pool", "kind": "max_pool2d", "kernel": 2},
      {"name": "flat", "kind": "flatten"},
      {"name": "skip", "kind": "flatten", "inputs": ["act"]}], "output": "flat"})"));
  EXPECT_EQ(relu_after_max_pools(shared), nullptr);
}

// A step of two micro-batches straight from the model's own graph, into one block.
std::vector<float> gradients_of_the_model_graph(const Graph& graph, ParameterStore& parameters,
                                                const std::vector<float>& input, const std::vector<std::int32_t>& labels,
                                                std::int64_t micro_batch) {
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  const StepProgram program(graph, parameters, micro_batch, Mode::training, engine, PlanStrategy::best_fit);
  Workspace workspace(engine, program.arena_bytes());
  std::vector<float> gradients(parameters.gradients().size(), 0.0f);
  const CrossEntropyLoss loss;
  const Targets targets{labels, nullptr};
  for (std::int64_t j = 0; j < 2; ++j) {
    StepRun run;
    run.first_sample = j * micro_batch;
    run.input = input.data() + run.first_sample * graph.input_sample_shape().elements();
    run.gradients = gradients.data();
    run.accumulate = j > 0;
    run.loss = &loss;
    run.targets = &targets;
    run.grad_scale = 1.0f / static_cast<float>(2 * micro_batch);
    program.run(run, workspace);
  }
  return gradients;
}

// 5 input channels: conv and pool are not fused (the direct kernel takes up to 4), so the
// step differs from the model graph's only by the moved ReLU.
TEST(TrainingGraph, AStepGivesTheBitsOfTheModelsGraphWithTiesAndNegativeWindows) {
  constexpr int channels = 5;
  const Graph graph = small_cnn("relu", "max_pool2d", channels);
  constexpr std::int64_t micro_batch = 4, batch = 2 * micro_batch;
  // Inputs in 2x2-constant patches, some negative: the convolution then gives ties
  // inside pooling windows, and windows whose maximum is negative or zero.
  std::vector<float> input(static_cast<std::size_t>(batch * channels * 64));
  for (std::size_t i = 0; i < input.size(); ++i) {
    const std::size_t sample = i / 64, y = i % 64 / 8, x = i % 8;
    input[i] = static_cast<float>(static_cast<int>((sample * 7 + y / 2 * 3 + x / 2 * 5) % 9) - 5) * 0.25f;
  }
  std::vector<std::int32_t> labels;
  for (std::int64_t i = 0; i < batch; ++i) labels.push_back(static_cast<std::int32_t>(i % 4));
  ParameterStore parameters(graph);
  parameters.initialize(11);
  ExecutorOptions options;
  options.micro_batch = micro_batch;
  options.gradient_lanes = 1;
  Executor executor(graph, parameters, options);
  const CrossEntropyLoss loss;
  const StepResult result = executor.train_step(input.data(), batch, Targets{labels, nullptr}, loss, 1);
  EXPECT_TRUE(std::isfinite(result.loss_sum));
  const std::vector<float> stepped(parameters.gradients().begin(), parameters.gradients().end());
  const std::vector<float> expected = gradients_of_the_model_graph(graph, parameters, input, labels, micro_batch);
  ASSERT_EQ(stepped.size(), expected.size());
  EXPECT_EQ(std::memcmp(stepped.data(), expected.data(), stepped.size() * sizeof(float)), 0);
  float largest = 0.0f;
  for (float g : expected) largest = std::max(largest, std::abs(g));
  EXPECT_GT(largest, 0.0f);  // the comparison is not of zeros
}

// 1 input channel: a training step runs conv and pool fused (simd's direct kernel, layers/
// conv2d_direct.h), the model's graph runs them on oneDNN apart. The sums are formed in
// other orders, so the two agree to float rounding, not bitwise; the tie rule is checked
// where ties are exact in both (tests/layers/conv2d_pool_training_test.cpp).
TEST(TrainingGraph, TheFusedFirstConvAndPoolGiveTheModelGraphsStepToRounding) {
  const Graph graph = small_cnn("relu", "max_pool2d", 1);
  constexpr std::int64_t micro_batch = 4, batch = 2 * micro_batch;
  std::vector<float> input(static_cast<std::size_t>(batch * 64));
  Random random(3);
  for (float& x : input) x = random.normal();
  std::vector<std::int32_t> labels;
  for (std::int64_t i = 0; i < batch; ++i) labels.push_back(static_cast<std::int32_t>(i % 4));
  ParameterStore parameters(graph);
  parameters.initialize(11);
  ExecutorOptions options;
  options.micro_batch = micro_batch;
  options.gradient_lanes = 1;
  Executor executor(graph, parameters, options);
  const std::vector<std::string> fused = executor.plan_report(micro_batch, Mode::training).fused;
  EXPECT_NE(std::find(fused.begin(), fused.end(), "conv+pool"), fused.end()) << "the training step did not fuse conv and pool";
  const CrossEntropyLoss loss;
  const StepResult result = executor.train_step(input.data(), batch, Targets{labels, nullptr}, loss, 1);
  const std::vector<float> stepped(parameters.gradients().begin(), parameters.gradients().end());
  const std::vector<float> expected = gradients_of_the_model_graph(graph, parameters, input, labels, micro_batch);
  ASSERT_EQ(stepped.size(), expected.size());
  float largest = 0.0f;
  for (float g : expected) largest = std::max(largest, std::abs(g));
  EXPECT_GT(largest, 0.0f);
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(stepped[i], expected[i], 1e-5f * largest) << "gradient " << i;
  }
  EXPECT_TRUE(std::isfinite(result.loss_sum));
}

}  // namespace
}  // namespace ember
