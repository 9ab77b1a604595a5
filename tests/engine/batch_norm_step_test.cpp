// Whole training steps of networks with BatchNorm, whose statistics are reduced over the
// batch at sync points between phases: the result is bitwise the same for any thread
// count, the gradient through the batch statistics matches finite differences across
// micro-batches, and the running statistics are buffers the step updates once.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "support/random_batch.h"

namespace ember {
namespace {

// A small resnet: stem, one basic block per stage (the second and third with a 1x1
// projection), global average pool, linear. 8x8 images keep the step fast.
Graph small_resnet() {
  const std::int64_t input[] = {2, 8, 8};
  return graph_from_spec(resnet_spec(input, 1, 5), "small resnet");
}

struct StepState {
  StepResult result;
  std::vector<float> gradients;
  std::vector<float> buffers;
};

// One training step of 22 samples in micro-batches of 4 (five of 4 and a last of 2: the
// reduction sees unequal counts).
StepState train_once(const Graph& graph, int threads, const std::vector<float>* values = nullptr) {
  ParameterStore parameters(graph);
  parameters.initialize(7);
  if (values != nullptr) std::memcpy(parameters.values().data(), values->data(), values->size() * sizeof(float));
  const testing::Batch batch = testing::random_batch(graph, 22, 3);
  ExecutorOptions options;
  options.threads = threads;
  options.micro_batch = 4;
  options.gradient_lanes = 4;
  Executor executor(graph, parameters, options);
  const CrossEntropyLoss loss;
  StepState state;
  state.result = executor.train_step(batch.input.data(), 22, Targets{batch.labels, nullptr}, loss, 11);
  state.gradients.assign(parameters.gradients().begin(), parameters.gradients().end());
  state.buffers.assign(parameters.buffers().begin(), parameters.buffers().end());
  return state;
}

TEST(BatchNormStep, IsBitwiseTheSameForOneTwoAndFourThreads) {
  const Graph graph = small_resnet();
  const StepState one = train_once(graph, 1);
  ASSERT_GT(one.buffers.size(), 0u);
  for (int threads : {2, 4}) {
    const StepState other = train_once(graph, threads);
    EXPECT_EQ(std::memcmp(&one.result.loss_sum, &other.result.loss_sum, sizeof(double)), 0) << threads << " threads";
    EXPECT_EQ(one.result.correct, other.result.correct);
    ASSERT_EQ(one.gradients.size(), other.gradients.size());
    EXPECT_EQ(std::memcmp(one.gradients.data(), other.gradients.data(), one.gradients.size() * sizeof(float)), 0)
        << "gradients differ at " << threads << " threads";
    EXPECT_EQ(std::memcmp(one.buffers.data(), other.buffers.data(), one.buffers.size() * sizeof(float)), 0)
        << "running statistics differ at " << threads << " threads";
  }
}

// A training step updates each BatchNorm's running statistics once: num_batches_tracked
// becomes 1, running_var moves from 1 towards the batch variance with momentum 0.1.
TEST(BatchNormStep, UpdatesTheRunningStatisticsOncePerStep) {
  const Graph graph = small_resnet();
  ParameterStore parameters(graph);
  parameters.initialize(7);
  const StepState state = train_once(graph, 2);
  int tracked = 0;
  for (const ParameterEntry& entry : parameters.buffer_entries()) {
    const float* value = state.buffers.data() + entry.offset;
    if (entry.name.ends_with(".num_batches_tracked")) {
      EXPECT_EQ(value[0], 1.0f) << entry.name;
      ++tracked;
    }
    if (entry.name.ends_with(".running_var")) {
      for (std::int64_t c = 0; c < entry.spec.shape.elements(); ++c) {
        EXPECT_NE(value[c], 1.0f) << entry.name << "[" << c << "] was not updated";
        EXPECT_GT(value[c], 0.9f * 1.0f - 1e-6f) << entry.name << "[" << c << "]";  // 0.9 * 1 + 0.1 * var, var >= 0
      }
    }
  }
  EXPECT_EQ(tracked, 9);  // stem, 2 per block, 2 projections
}

// The gradient through the batch statistics, across six micro-batches: central
// differences of the step's loss (the loss of a training-mode forward) against the
// gradient the step returns, for weights before and after BatchNorms.
TEST(BatchNormStep, GradientMatchesFiniteDifferencesAcrossMicroBatches) {
  const Graph graph = small_resnet();
  ParameterStore parameters(graph);
  parameters.initialize(7);
  const std::vector<float> values(parameters.values().begin(), parameters.values().end());
  const StepState base = train_once(graph, 2, &values);
  int checked = 0;
  for (const char* name : {"stem.conv.weight", "stem.bn.weight", "stem.bn.bias", "stage2.block1.conv1.weight",
                           "stage3.block1.bn2.weight", "head.weight"}) {
    const int entry = parameters.find(name);
    ASSERT_GE(entry, 0) << name;
    const ParameterEntry& e = parameters.entries()[static_cast<std::size_t>(entry)];
    for (std::int64_t k : {std::int64_t{0}, e.spec.shape.elements() / 2, e.spec.shape.elements() - 1}) {
      const std::size_t at = static_cast<std::size_t>(e.offset + k);
      const float h = 1e-3f * std::max(1.0f, std::fabs(values[at]));  // small: ReLU kinks bend larger steps
      std::vector<float> plus = values, minus = values;
      plus[at] += h;
      minus[at] -= h;
      const double loss_plus = train_once(graph, 2, &plus).result.mean_loss();
      const double loss_minus = train_once(graph, 2, &minus).result.mean_loss();
      const double numeric = (loss_plus - loss_minus) / (2.0 * static_cast<double>(h));
      const double analytic = base.gradients[at];
      EXPECT_NEAR(analytic, numeric, 2e-3 + 2e-2 * std::fabs(numeric)) << name << "[" << k << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 18);
}

}  // namespace
}  // namespace ember
