#include "engine/executor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "engine/error.h"
#include "engine/loss.h"
#include "engine/model_spec.h"

namespace ember {
namespace {

struct Batch {
  std::vector<float> input;
  std::vector<std::int32_t> labels;
};

Batch random_batch(const Graph& graph, std::int64_t batch, int classes, unsigned seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> value(0.0f, 1.0f);
  std::uniform_int_distribution<int> label(0, classes - 1);
  Batch b;
  b.input.resize(static_cast<std::size_t>(batch * graph.input_sample_shape().elements()));
  for (float& x : b.input) x = value(random);
  for (std::int64_t i = 0; i < batch; ++i) b.labels.push_back(label(random));
  return b;
}

std::vector<float> gradients_after_step(const Graph& graph, const Batch& batch, std::int64_t batch_size, int threads,
                                        std::int64_t micro_batch) {
  ParameterStore parameters(graph);
  parameters.initialize(7);
  ExecutorOptions options;
  options.threads = threads;
  options.micro_batch = micro_batch;
  Executor executor(graph, parameters, options);
  const CrossEntropyLoss loss;
  Targets targets{batch.labels, nullptr};
  executor.train_step(batch.input.data(), batch_size, targets, loss, 1);
  return {parameters.gradients().begin(), parameters.gradients().end()};
}

// Gradient of the mean loss, by central differences in double, for one parameter.
double numeric_gradient(const Graph& graph, ParameterStore& parameters, Executor& executor, const Batch& batch,
                        std::int64_t batch_size, std::size_t index) {
  const CrossEntropyLoss loss;
  Targets targets{batch.labels, nullptr};
  float& p = parameters.values()[index];
  const float original = p;
  const float step = 1e-2f * std::max(1.0f, std::fabs(original));
  p = original + step;
  const double plus = executor.evaluate(batch.input.data(), batch_size, targets, loss).mean_loss();
  p = original - step;
  const double minus = executor.evaluate(batch.input.data(), batch_size, targets, loss).mean_loss();
  p = original;
  return (plus - minus) / (2.0 * static_cast<double>(step));
}

void expect_gradients_match_finite_differences(const Json& spec, std::int64_t batch_size, std::int64_t micro_batch) {
  const Graph graph = graph_from_spec(spec);
  const int classes = static_cast<int>(graph.value_shape(graph.output()).sample_elements());
  const Batch batch = random_batch(graph, batch_size, classes, 3);
  ParameterStore parameters(graph);
  parameters.initialize(11);
  ExecutorOptions options;
  options.micro_batch = micro_batch;
  Executor executor(graph, parameters, options);
  const CrossEntropyLoss loss;
  Targets targets{batch.labels, nullptr};
  executor.train_step(batch.input.data(), batch_size, targets, loss, 1);
  const std::vector<float> analytic(parameters.gradients().begin(), parameters.gradients().end());

  std::mt19937 random(5);
  for (const ParameterEntry& entry : parameters.entries()) {
    std::uniform_int_distribution<std::int64_t> pick(0, entry.spec.shape.elements() - 1);
    for (int trial = 0; trial < 6; ++trial) {
      const auto index = static_cast<std::size_t>(entry.offset + pick(random));
      const double numeric = numeric_gradient(graph, parameters, executor, batch, batch_size, index);
      const double tolerance = 2e-3 + 2e-2 * std::fabs(numeric);
      EXPECT_NEAR(analytic[index], numeric, tolerance) << entry.name << " element " << index - static_cast<std::size_t>(entry.offset);
    }
  }
}

TEST(Executor, CnnGradientsMatchFiniteDifferences) {
  // conv -> relu -> pool -> flatten -> linear: exercises oneDNN's blocked layouts and the
  // reorder to plain at the flatten.
  const Json spec = Json::parse(R"({"input": [2, 9, 7], "layers": [
      {"name": "conv", "kind": "conv2d", "in_channels": 2, "out_channels": 17, "kernel": 3, "padding": 1},
      {"name": "relu", "kind": "relu"},
      {"name": "pool", "kind": "max_pool2d", "kernel": 2},
      {"name": "conv2", "kind": "conv2d", "in_channels": 17, "out_channels": 5, "kernel": 2},
      {"name": "flatten", "kind": "flatten"},
      {"name": "fc", "kind": "linear", "in_features": 30, "out_features": 4}]})");
  expect_gradients_match_finite_differences(spec, 5, 2);
}

TEST(Executor, DagWithAValueReadTwiceSumsBothGradients) {
  const Json spec = Json::parse(R"({"input": [6], "layers": [
      {"name": "a", "kind": "linear", "in_features": 6, "out_features": 6},
      {"name": "r", "kind": "relu"},
      {"name": "sum", "kind": "add", "inputs": ["a", "r"]},
      {"name": "out", "kind": "linear", "in_features": 6, "out_features": 3}]})");
  expect_gradients_match_finite_differences(spec, 4, 3);
}

// add(x, x) writes two gradients of x in one backward call. With a third reader of x the
// gradient has three writers; backward runs `double` first, so two writers come at once
// before any gradient of x exists.
TEST(Executor, ALayerReadingOneValueTwiceGetsBothGradients) {
  const Json spec = Json::parse(R"({"input": [6], "layers": [
      {"name": "a", "kind": "linear", "in_features": 6, "out_features": 6},
      {"name": "r", "kind": "relu", "inputs": ["a"]},
      {"name": "double", "kind": "add", "inputs": ["a", "a"]},
      {"name": "sum", "kind": "add", "inputs": ["double", "r"]},
      {"name": "out", "kind": "linear", "in_features": 6, "out_features": 3}]})");
  expect_gradients_match_finite_differences(spec, 4, 3);
}

TEST(Executor, StepIsBitwiseIdenticalForOneTwoAndFourThreads) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  const Batch batch = random_batch(graph, 70, 10, 9);  // 70: a partial last micro-batch
  const std::vector<float> one = gradients_after_step(graph, batch, 70, 1, 16);
  const std::vector<float> two = gradients_after_step(graph, batch, 70, 2, 16);
  const std::vector<float> four = gradients_after_step(graph, batch, 70, 4, 16);
  ASSERT_EQ(one.size(), two.size());
  EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(one.data(), four.data(), one.size() * sizeof(float)), 0);
}

TEST(Executor, MicroBatchSizeDoesNotChangeTheGradientBeyondRounding) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  const Batch batch = random_batch(graph, 24, 10, 4);
  const std::vector<float> whole = gradients_after_step(graph, batch, 24, 1, 24);
  const std::vector<float> split = gradients_after_step(graph, batch, 24, 2, 5);
  double max_error = 0, max_value = 0;
  for (std::size_t i = 0; i < whole.size(); ++i) {
    max_error = std::max(max_error, static_cast<double>(std::fabs(whole[i] - split[i])));
    max_value = std::max(max_value, static_cast<double>(std::fabs(whole[i])));
  }
  EXPECT_LT(max_error, 1e-5 * max_value + 1e-7);
}

TEST(Executor, InferenceMatchesEvaluationAndIsDeterministic) {
  const Graph graph = graph_from_spec(builtin_model_spec("lenet"));
  const Batch batch = random_batch(graph, 33, 10, 2);
  ParameterStore parameters(graph);
  parameters.initialize(3);
  ExecutorOptions options;
  options.threads = 2;
  options.micro_batch = 8;
  Executor executor(graph, parameters, options);
  std::vector<float> first(33 * 10), second(33 * 10);
  executor.infer(batch.input.data(), 33, first.data());
  executor.infer(batch.input.data(), 33, second.data());
  EXPECT_EQ(first, second);
  // The same logits through a loss: accuracy agrees with the argmax of the outputs.
  std::int64_t hits = 0;
  for (int i = 0; i < 33; ++i) {
    const float* row = first.data() + i * 10;
    if (std::max_element(row, row + 10) - row == batch.labels[static_cast<std::size_t>(i)]) ++hits;
  }
  const CrossEntropyLoss loss;
  const StepResult result = executor.evaluate(batch.input.data(), 33, Targets{batch.labels, nullptr}, loss);
  EXPECT_EQ(result.correct, hits);
  EXPECT_EQ(result.samples, 33);
}

TEST(Executor, EveryBuiltInPlanIsValidInBothModes) {
  for (const std::string& name : builtin_model_names()) {
    const Graph graph = graph_from_spec(builtin_model_spec(name));
    ParameterStore parameters(graph);
    Executor executor(graph, parameters, ExecutorOptions{});
    for (Mode mode : {Mode::inference, Mode::training}) {
      for (std::int64_t batch : {1, 16, 64}) {
        const StepPlanReport report = executor.plan_report(batch, mode);
        EXPECT_NO_THROW(validate_memory_plan(report.tensors, report.plan)) << name;
        EXPECT_GE(report.plan.arena_bytes, report.plan.lower_bound_bytes);
        EXPECT_LT(report.plan.arena_bytes, report.plan.naive_bytes) << name << " batch " << batch;
      }
    }
  }
}

TEST(Executor, BadArgumentsAreRefused) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  ParameterStore parameters(graph);
  ExecutorOptions options;
  options.threads = 0;
  EXPECT_THROW(Executor(graph, parameters, options), Error);
  Executor executor(graph, parameters, ExecutorOptions{});
  std::vector<float> input(28 * 28);
  std::vector<std::int32_t> labels{1};
  const CrossEntropyLoss loss;
  EXPECT_THROW(executor.train_step(input.data(), 0, Targets{labels, nullptr}, loss, 0), Error);
  try {
    executor.train_step(input.data(), 2, Targets{labels, nullptr}, loss, 0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("batch of 2 samples but only 1 labels"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ember
