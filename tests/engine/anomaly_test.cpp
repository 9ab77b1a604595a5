// Anomaly detection (ExecutorOptions::detect_anomaly, TrainOptions::detect_anomaly): a
// non-finite value is reported at the op that made it, with its phase, layer, tensor and
// element, whatever the thread count; with the option off nothing changes.
#include "engine/anomaly.h"
#include "engine/blocked_layout.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "engine/trainer.h"
#include "support/buffered_layer.h"
#include "support/random_batch.h"

namespace ember {
namespace {

constexpr float infinity = std::numeric_limits<float>::infinity();

using testing::Batch;
using testing::random_batch;

ExecutorOptions detecting(int threads, std::int64_t micro_batch) {
  ExecutorOptions options;
  options.threads = threads;
  options.micro_batch = micro_batch;
  options.detect_anomaly = true;
  return options;
}

// The anomaly a training step throws; fails the test if it throws none.
Anomaly anomaly_of_step(Executor& executor, const Batch& batch) {
  const CrossEntropyLoss loss;
  const Targets targets{batch.labels, nullptr};
  const auto samples = static_cast<std::int64_t>(batch.labels.size());
  try {
    executor.train_step(batch.input.data(), samples, targets, loss, 1);
  } catch (const AnomalyError& e) {
    return e.anomaly();
  }
  ADD_FAILURE() << "no anomaly reported";
  return {};
}

float* parameter(ParameterStore& parameters, const std::string& name) {
  const int entry = parameters.find(name);
  EXPECT_GE(entry, 0) << name;
  return parameters.value(entry).data;
}

// Buffers are checked apart from the parameters (the trainer does after each step): the
// first non-finite one is named, with its layer.
TEST(Anomaly, ANonFiniteBufferIsNamed) {
  const Graph graph = testing::buffered_graph();
  ParameterStore parameters(graph);
  parameters.initialize(1);
  EXPECT_FALSE(find_buffer_anomaly(graph, parameters, "forward").has_value());
  parameters.values()[0] = infinity;  // a parameter: not a buffer
  EXPECT_FALSE(find_buffer_anomaly(graph, parameters, "forward").has_value());
  parameters.buffers()[parameters.buffer_entries()[1].offset + 2] = infinity;
  parameters.buffers()[parameters.buffer_entries()[2].offset] = std::nanf("");
  const auto bad = find_buffer_anomaly(graph, parameters, "forward");
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(describe(*bad), "non-finite value in the forward pass at layer bn1 (test_buffered): bn1.running_var, element 2, is inf");
}

TEST(Anomaly, IsOffByDefaultAndThenNothingIsChecked) {
  EXPECT_FALSE(ExecutorOptions{}.detect_anomaly);
  EXPECT_FALSE(TrainOptions{}.detect_anomaly);
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  ParameterStore parameters(graph);
  parameters.initialize(1);
  Batch batch = random_batch(graph, 8, 1);
  batch.input[100] = infinity;
  Executor executor(graph, parameters, ExecutorOptions{});
  const CrossEntropyLoss loss;
  EXPECT_NO_THROW(executor.train_step(batch.input.data(), 8, Targets{batch.labels, nullptr}, loss, 1));
}

TEST(Anomaly, AnInfiniteInputIsNamedAsTheInput) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  ParameterStore parameters(graph);
  parameters.initialize(1);
  Batch batch = random_batch(graph, 20, 2);
  batch.input[3 * 784 + 100] = -infinity;
  Executor executor(graph, parameters, detecting(2, 8));
  const Anomaly a = anomaly_of_step(executor, batch);
  EXPECT_EQ(a.phase, "forward");
  EXPECT_EQ(a.layer, "input");
  EXPECT_EQ(a.index, 3 * 784 + 100);
  EXPECT_EQ(a.sample, 3);
  EXPECT_EQ(a.value, -infinity);
}

TEST(Anomaly, ANanWeightIsNamedBeforeTheStepRuns) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  ParameterStore parameters(graph);
  parameters.initialize(1);
  parameter(parameters, "fc1.weight")[5] = std::numeric_limits<float>::quiet_NaN();
  Executor executor(graph, parameters, detecting(1, 16));
  const Anomaly a = anomaly_of_step(executor, random_batch(graph, 16, 3));
  EXPECT_EQ(a.phase, "forward");
  EXPECT_EQ(a.layer, "fc1");
  EXPECT_EQ(a.kind, "linear");
  EXPECT_EQ(a.tensor, "fc1.weight");
  EXPECT_EQ(a.index, 5);
  EXPECT_TRUE(std::isnan(a.value));
}

// fc1's weights are finite but large: samples 13 and 50, with one large input, overflow
// its output. Micro-batches of 8 put them in micro-batches 1 (lane 1) and 6 (lane 2):
// with two threads, thread 0 finds micro-batch 6 and thread 1 micro-batch 1; the lowest
// is reported for every thread count.
TEST(Anomaly, AnOverflowingLayerIsNamedAtTheLowestMicroBatchForAnyThreadCount) {
  const Graph graph = graph_from_spec(Json::parse(R"({"input": [8], "layers": [
      {"name": "fc1", "kind": "linear", "in_features": 8, "out_features": 16},
      {"name": "relu", "kind": "relu"},
      {"name": "fc2", "kind": "linear", "in_features": 16, "out_features": 4}]})"));
  Batch batch = random_batch(graph, 64, 4);
  batch.input[50 * 8 + 2] = 1e30f;
  batch.input[13 * 8 + 2] = 1e30f;
  for (int threads : {1, 2, 4}) {
    ParameterStore parameters(graph);
    parameters.initialize(1);
    std::fill_n(parameter(parameters, "fc1.weight"), 8 * 16, 1e10f);
    Executor executor(graph, parameters, detecting(threads, 8));
    const Anomaly a = anomaly_of_step(executor, batch);
    EXPECT_EQ(a.phase, "forward") << threads << " threads";
    EXPECT_EQ(a.layer, "fc1") << threads << " threads";
    EXPECT_EQ(a.kind, "linear") << threads << " threads";
    EXPECT_EQ(a.tensor, "output") << threads << " threads";
    EXPECT_EQ(a.sample, 13) << threads << " threads";
    EXPECT_EQ(a.index, 13 * 16) << threads << " threads";
    EXPECT_EQ(a.value, infinity) << threads << " threads";
    // Inference runs the same checks.
    std::vector<float> output(64 * 4);
    try {
      executor.infer(batch.input.data(), 64, output.data());
      ADD_FAILURE() << "inference: no anomaly reported, " << threads << " threads";
    } catch (const AnomalyError& e) {
      EXPECT_EQ(e.anomaly().layer, "fc1");
      EXPECT_EQ(e.anomaly().sample, 13) << threads << " threads";
    }
  }
}

// fc1 outputs zeros, so fc2's output (its bias, zero) is finite whatever its weights; its
// input gradient sum_i W[i][j] * dy_i, with W = +3e38 on the label's row and -3e38 on
// the others and dy = softmax - onehot = (-0.9, 0.1, ..., 0.1), is -5.4e38: -infinity.
TEST(Anomaly, AGradientOverflowIsNamedInTheBackwardPass) {
  const Graph graph = graph_from_spec(Json::parse(R"({"input": [4], "layers": [
      {"name": "fc1", "kind": "linear", "in_features": 4, "out_features": 4},
      {"name": "fc2", "kind": "linear", "in_features": 4, "out_features": 10}]})"));
  ParameterStore parameters(graph);
  std::fill_n(parameter(parameters, "fc1.weight"), 16, 0.0f);
  std::fill_n(parameter(parameters, "fc1.bias"), 4, 0.0f);
  std::fill_n(parameter(parameters, "fc2.weight"), 40, -3e38f);
  std::fill_n(parameter(parameters, "fc2.weight"), 4, 3e38f);  // row 0: the label's
  std::fill_n(parameter(parameters, "fc2.bias"), 10, 0.0f);
  Executor executor(graph, parameters, detecting(1, 16));
  const Anomaly a = anomaly_of_step(executor, Batch{{0.5f, 0.25f, 1.0f, 2.0f}, {0}});
  EXPECT_EQ(a.phase, "backward");
  EXPECT_EQ(a.layer, "fc2");
  EXPECT_EQ(a.kind, "linear");
  EXPECT_EQ(a.tensor, "input gradient");
  EXPECT_EQ(a.index, 0);
  EXPECT_EQ(a.sample, 0);
  EXPECT_EQ(a.value, -infinity);
}

// A one-layer regression: fc's output is its bias (its weights are zero).
struct Regression {
  Graph graph = graph_from_spec(Json::parse(R"({"input": [2], "layers": [
      {"name": "fc", "kind": "linear", "in_features": 2, "out_features": 1}]})"));
  ParameterStore parameters{graph};
  explicit Regression(float bias) {
    std::fill_n(parameter(parameters, "fc.weight"), 2, 0.0f);
    parameter(parameters, "fc.bias")[0] = bias;
  }
  Anomaly anomaly_of_step(int threads, std::int64_t micro_batch, const std::vector<float>& inputs,
                          const std::vector<float>& targets) {
    Executor executor(graph, parameters, detecting(threads, micro_batch));
    const MeanSquaredErrorLoss loss;
    try {
      executor.train_step(inputs.data(), static_cast<std::int64_t>(targets.size()), Targets{{}, targets.data()}, loss, 1);
    } catch (const AnomalyError& e) {
      return e.anomaly();
    }
    ADD_FAILURE() << "no anomaly reported";
    return {};
  }
};

// MSE's gradient 2 / (B E) * (y - t) is computed in float: y - t = 3e38 + 3e38 overflows
// though the loss (in double) and the prediction are finite.
TEST(Anomaly, ALossGradientOverflowIsNamedAtTheLoss) {
  Regression model(3e38f);
  const Anomaly a = model.anomaly_of_step(1, 16, {0.5f, 0.5f, 0.25f, 0.25f}, {-3e38f, -3e38f});
  EXPECT_EQ(a.phase, "backward");
  EXPECT_EQ(a.layer, "loss");
  EXPECT_EQ(a.kind, "mse");
  EXPECT_EQ(a.tensor, "prediction gradient");
  EXPECT_EQ(a.sample, 0);
  EXPECT_EQ(a.value, infinity);
}

// Micro-batches of one sample: each lane's bias gradient 2 / 2 * (1.5e38 + 1.5e38) = 3e38
// is finite, their sum is not.
TEST(Anomaly, AnOverflowInTheSumOfTheMicroBatchesIsNamed) {
  for (int threads : {1, 2}) {
    Regression model(1.5e38f);
    const Anomaly a = model.anomaly_of_step(threads, 1, {0.5f, 0.5f, 0.25f, 0.25f}, {-1.5e38f, -1.5e38f});
    EXPECT_EQ(a.phase, "backward") << threads << " threads";
    EXPECT_EQ(a.layer, "fc") << threads << " threads";
    EXPECT_EQ(a.tensor, "fc.bias gradient") << threads << " threads";
    EXPECT_EQ(a.index, 0) << threads << " threads";
    EXPECT_EQ(a.value, infinity) << threads << " threads";
  }
}

// conv1's output stays in oneDNN's blocked layout (channels interleaved by 8 or 16). Only
// channels 1 and 3 see the large pixel of sample 2, at (10, 10): channel 3 through its
// bottom-right tap overflows at (9, 9), channel 1 through its top-left tap at (11, 11).
// In memory channel 3 comes first (earlier pixel); in the logical (N, C, H, W) order
// channel 1 does, and that is the element to report.
// An average pool: a 2x2 max pool would be fused into conv1 in training (simd's direct
// kernel, plain output).
TEST(Anomaly, ABlockedLayoutReportsTheLogicalElement) {
  const Graph graph = graph_from_spec(Json::parse(R"({"input": [1, 28, 28], "layers": [
      {"name": "conv1", "kind": "conv2d", "in_channels": 1, "out_channels": 32, "kernel": 3, "padding": 1},
      {"name": "relu1", "kind": "relu"},
      {"name": "pool1", "kind": "avg_pool2d", "kernel": 2},
      {"name": "flatten", "kind": "flatten"},
      {"name": "fc1", "kind": "linear", "in_features": 6272, "out_features": 10}]})"));
  ParameterStore parameters(graph);
  parameters.initialize(1);
  float* weight = parameter(parameters, "conv1.weight");
  std::fill_n(weight, 32 * 9, 0.0f);
  weight[1 * 9 + 0] = 1e10f;  // channel 1, tap (0, 0)
  weight[3 * 9 + 8] = 1e10f;  // channel 3, tap (2, 2)
  Batch batch = random_batch(graph, 4, 5);
  std::fill(batch.input.begin(), batch.input.end(), 0.0f);
  batch.input[2 * 784 + 10 * 28 + 10] = 1e30f;
  Executor executor(graph, parameters, detecting(1, 4));
  const StepPlanReport& report = executor.plan_report(4, Mode::training);
  bool blocked = false;
  for (std::size_t t = 0; t < report.tensors.size(); ++t) {
    blocked = blocked || (report.tensors[t].name == "conv1" && report.shapes[t].find("blocked") != std::string::npos);
  }
  ASSERT_TRUE(blocked) << "conv1's output is plain here: this test needs it blocked";
  const Anomaly a = anomaly_of_step(executor, batch);
  EXPECT_EQ(a.layer, "conv1");
  EXPECT_EQ(a.tensor, "output");
  EXPECT_EQ(a.sample, 2);
  EXPECT_EQ(a.index, 2 * 32 * 784 + 1 * 784 + 11 * 28 + 11);
  EXPECT_EQ(a.value, infinity);
}

TEST(Anomaly, PaddingLanesOfABlockedTensorAreNotReported) {
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  // (1, 3, 2, 2) in nChw16c: 16 lanes per pixel, 13 of them padding.
  const dnnl::memory::desc desc({1, 3, 2, 2}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::nChw16c);
  std::vector<float> buffer(desc.get_size() / sizeof(float), std::numeric_limits<float>::quiet_NaN());
  auto at = [&](int c, int h, int w) -> float& { return buffer[static_cast<std::size_t>((h * 2 + w) * 16 + c)]; };
  for (int c = 0; c < 3; ++c) {
    for (int p = 0; p < 4; ++p) at(c, p / 2, p % 2) = static_cast<float>(c + p);
  }
  const BlockedLayout layout{desc};
  const Tensor tensor{buffer.data(), Shape({1, 3, 2, 2}), &layout};
  EXPECT_FALSE(first_non_finite(tensor, engine, stream).has_value());
  at(2, 1, 0) = infinity;  // logical element 2 * 4 + 1 * 2 + 0
  at(1, 1, 1) = -infinity;  // logical element 7, but later in memory
  const auto bad = first_non_finite(tensor, engine, stream);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->index, 7);
  EXPECT_EQ(bad->value, -infinity);
}

// The checks only read: a few steps give bitwise the same weights with the option on and
// off (LeNet's 6-channel convolution pads its blocked layout).
TEST(Anomaly, WeightsAreBitwiseTheSameWithTheOptionOnAndOff) {
  for (const char* model : {"seed-cnn", "lenet"}) {
    const Graph graph = graph_from_spec(builtin_model_spec(model));
    std::vector<std::vector<float>> weights;
    for (bool detect : {false, true}) {
      ParameterStore parameters(graph);
      parameters.initialize(2);
      ExecutorOptions options = detecting(2, 16);
      options.detect_anomaly = detect;
      Executor executor(graph, parameters, options);
      const std::unique_ptr<Optimizer> optimizer = make_optimizer("adam", OptimizerOptions{}, parameters);
      const CrossEntropyLoss loss;
      for (unsigned step = 0; step < 3; ++step) {
        const Batch batch = random_batch(graph, 40, 10 + step);
        executor.train_step(batch.input.data(), 40, Targets{batch.labels, nullptr}, loss, step);
        optimizer->step(2);
      }
      weights.emplace_back(parameters.values().begin(), parameters.values().end());
    }
    ASSERT_EQ(weights[0].size(), weights[1].size());
    EXPECT_EQ(std::memcmp(weights[0].data(), weights[1].data(), weights[0].size() * sizeof(float)), 0) << model;
  }
}

// SGD's weight decay adds 1e9 * p to the gradient, and a learning rate of 1e36 turns that
// into an infinite update of every non-zero weight, embed.weight's first element first.
TEST(Anomaly, TrainingNamesTheStepAndAnUpdateThatOverflows) {
  TrainOptions options;
  options.model = "attention-mse";
  options.epochs = 1;
  options.batch_size = 32;
  options.optimizer = "sgd";
  options.momentum = 0.0;
  options.learning_rate = 1e36;
  options.weight_decay = 1e9;
  options.train_limit = 64;
  options.test_limit = 32;
  options.detect_anomaly = true;
  TrainingObserver quiet;
  try {
    train(options, quiet);
    FAIL() << "training finished";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("step 1 (epoch 1, batch 1): non-finite value in the optimizer step at layer embed (linear): "
                           "updated embed.weight, element 0"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("training stopped"), std::string::npos) << message;
  }
}

TEST(Anomaly, TrainingNamesTheStepOfAForwardAnomaly) {
  // From step 2 the weights are ~1e27 (a step schedule multiplies the rate by 1e30 after
  // epoch 1 and Adam moves each weight by about the rate): the next step's attention
  // scores overflow.
  TrainOptions options;
  options.model = "attention-mse";
  options.epochs = 2;
  options.batch_size = 32;
  options.schedule = "step";
  options.gamma = 1e30;
  options.train_limit = 64;
  options.test_limit = 32;
  options.detect_anomaly = true;
  TrainingObserver quiet;
  try {
    train(options, quiet);
    FAIL() << "training finished";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("step 4 (epoch 2, batch 2): non-finite value in the forward pass at layer attention "
                           "(attention_pool): output, element 0 (sample 0 of the batch)"), std::string::npos)
        << message;
    EXPECT_NE(message.find("training stopped before applying this step"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace ember
