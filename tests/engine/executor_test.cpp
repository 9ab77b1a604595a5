#include "engine/executor.h"

#include <gtest/gtest.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/error.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/training_graph.h"
#include "engine/workspace.h"
#include "layers/linear.h"
#include "support/expect_error.h"
#include "support/forced_isa.h"
#include "support/random_batch.h"

namespace ember {
namespace {

using testing::Batch;
using testing::random_batch;

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

double mean_loss(Executor& executor, const Batch& batch, std::int64_t batch_size) {
  const CrossEntropyLoss loss;
  return executor.evaluate(batch.input.data(), batch_size, Targets{batch.labels, nullptr}, loss).mean_loss();
}

// Finite differences of the mean loss for one parameter: the central difference, and the
// two one-sided ones (over the float steps actually taken, the differences in double).
struct NumericGradient {
  double central = 0.0;
  double forward = 0.0;
  double backward = 0.0;
};

NumericGradient numeric_gradient(ParameterStore& parameters, Executor& executor, const Batch& batch, std::int64_t batch_size,
                                 std::size_t index, float relative_step, double loss_at_original) {
  float& p = parameters.values()[index];
  const float original = p;
  const float step = relative_step * std::max(1.0f, std::fabs(original));
  p = original + step;
  const double plus_value = p;
  const double plus = mean_loss(executor, batch, batch_size);
  p = original - step;
  const double minus_value = p;
  const double minus = mean_loss(executor, batch, batch_size);
  p = original;
  return {(plus - minus) / (plus_value - minus_value), (plus - loss_at_original) / (plus_value - original),
          (loss_at_original - minus) / (original - minus_value)};
}

// Every element of a small tensor; of a larger one the first, the last and a seeded
// sample of 32 others.
std::vector<std::int64_t> elements_to_check(std::int64_t elements, std::mt19937& random) {
  std::vector<std::int64_t> chosen;
  if (elements <= 64) {
    for (std::int64_t i = 0; i < elements; ++i) chosen.push_back(i);
    return chosen;
  }
  chosen = {0, elements - 1};
  std::uniform_int_distribution<std::int64_t> pick(1, elements - 2);
  while (chosen.size() < 34) {
    const std::int64_t i = pick(random);
    if (std::find(chosen.begin(), chosen.end(), i) == chosen.end()) chosen.push_back(i);
  }
  return chosen;
}

struct GradientCheck {
  float relative_step = 1e-2f;
  // |analytic - central| <= relative * scale + absolute + kink, where scale is the largest
  // |central| among the checked elements of that tensor (each tensor is held to its own
  // gradient's size, not the model's), and kink is half the disagreement of the forward
  // and backward differences: a ReLU or max-pool switch inside the step moves the central
  // difference by about that much, while on a smooth stretch the two agree to h f''.
  double relative = 0.0;
  double absolute = 0.0;
  // Whether the kink allowance applies (a model with ReLU or max pooling), and for at most
  // what fraction of a tensor's checked elements.
  bool allow_kinks = false;
  double kinked_fraction = 0.0;
  // Tensors (by name) held to a looser relative tolerance: upstream of many kinks, the
  // central difference averages slopes over pieces on both sides of the point.
  std::vector<std::pair<std::string, double>> relative_for;
};

void expect_gradients_match_finite_differences(const Json& spec, std::int64_t batch_size, std::int64_t micro_batch,
                                               const GradientCheck& check) {
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
  const double loss_at_original = mean_loss(executor, batch, batch_size);

  std::mt19937 random(5);
  for (const ParameterEntry& entry : parameters.entries()) {
    const std::vector<std::int64_t> chosen = elements_to_check(entry.spec.shape.elements(), random);
    std::vector<NumericGradient> numeric;
    double scale = 0.0;
    for (std::int64_t element : chosen) {
      const auto index = static_cast<std::size_t>(entry.offset + element);
      numeric.push_back(numeric_gradient(parameters, executor, batch, batch_size, index, check.relative_step, loss_at_original));
      scale = std::max(scale, std::fabs(numeric.back().central));
    }
    double relative = check.relative;
    for (const auto& [name, value] : check.relative_for) {
      if (name == entry.name) relative = value;
    }
    const double tolerance = relative * scale + check.absolute;
    double worst = 0.0;
    std::size_t kinked = 0;
    for (std::size_t k = 0; k < chosen.size(); ++k) {
      const double got = analytic[static_cast<std::size_t>(entry.offset + chosen[k])];
      const double error = std::fabs(got - numeric[k].central);
      const double kink = check.allow_kinks ? 0.5 * std::fabs(numeric[k].forward - numeric[k].backward) : 0.0;
      if (error > tolerance) ++kinked;
      worst = std::max(worst, std::max(0.0, error - kink));
      EXPECT_LE(error, tolerance + kink) << entry.name << " element " << chosen[k] << ": analytic " << got << ", central difference "
                                         << numeric[k].central << " (forward " << numeric[k].forward << ", backward "
                                         << numeric[k].backward << "; gradient scale of " << entry.name << ": " << scale << ")";
    }
    EXPECT_LE(static_cast<double>(kinked), check.kinked_fraction * static_cast<double>(chosen.size()))
        << entry.name << ": " << kinked << " of " << chosen.size() << " elements needed the kink allowance";
    std::printf("%-12s %2zu of %4lld elements: gradient scale %.3g, max error %.3g (%.3g of the scale; beyond the kink allowance where allowed), %zu kinked\n",
                entry.name.c_str(), chosen.size(), static_cast<long long>(entry.spec.shape.elements()), scale, worst, worst / scale, kinked);
  }
}

// Tolerances are about 4x the largest error measured (the figures printed by the check).
// Smooth CNN, step 1e-2: 1.6e-4 of the scale (conv2.weight).
GradientCheck smooth_cnn_check() {
  GradientCheck c;
  c.relative = 6e-4;
  c.absolute = 1e-6;
  return c;
}

// Linear layers, ReLU and add, step 1e-2: 2.3e-5 of the scale; no kink within a step.
GradientCheck dag_check() {
  GradientCheck c;
  c.relative = 1e-4;
  c.absolute = 1e-6;
  return c;
}

// ReLU then max pooling, step 3e-3 (a larger step crosses more kinks): beyond the kink
// allowance 1.9e-4 of the scale downstream of the first conv, but 2% for its weight, each
// of which moves 315 pre-activations across many kinks; about a third of the first conv's
// elements need the allowance.
GradientCheck relu_cnn_check() {
  GradientCheck c;
  c.relative_step = 3e-3f;
  c.relative = 8e-4;
  c.absolute = 1e-6;
  c.allow_kinks = true;
  c.kinked_fraction = 0.5;
  c.relative_for = {{"conv.weight", 8e-2}};
  return c;
}

// conv -> activation -> pool -> conv -> flatten -> linear: exercises oneDNN's blocked
// layouts and the reorder to plain at the flatten.
Json cnn_spec(const char* activation, const char* pool) {
  return Json::parse(std::string(R"({"input": [2, 9, 7], "layers": [
      {"name": "conv", "kind": "conv2d", "in_channels": 2, "out_channels": 17, "kernel": 3, "padding": 1},
      {"name": "act", "kind": ")") + activation + R"("},
      {"name": "pool", "kind": ")" + pool + R"(", "kernel": 2},
      {"name": "conv2", "kind": "conv2d", "in_channels": 17, "out_channels": 5, "kernel": 2},
      {"name": "flatten", "kind": "flatten"},
      {"name": "fc", "kind": "linear", "in_features": 30, "out_features": 4}]})");
}

// Smooth all the way (GELU, average pooling), so every tensor is held tight.
TEST(Executor, CnnGradientsMatchFiniteDifferences) {
  expect_gradients_match_finite_differences(cnn_spec("gelu", "avg_pool2d"), 5, 2, smooth_cnn_check());
}

TEST(Executor, CnnWithReluAndMaxPoolGradientsMatchFiniteDifferences) {
  expect_gradients_match_finite_differences(cnn_spec("relu", "max_pool2d"), 5, 2, relu_cnn_check());
}

TEST(Executor, DagWithAValueReadTwiceSumsBothGradients) {
  const Json spec = Json::parse(R"({"input": [6], "layers": [
      {"name": "a", "kind": "linear", "in_features": 6, "out_features": 6},
      {"name": "r", "kind": "relu"},
      {"name": "sum", "kind": "add", "inputs": ["a", "r"]},
      {"name": "out", "kind": "linear", "in_features": 6, "out_features": 3}]})");
  expect_gradients_match_finite_differences(spec, 4, 3, dag_check());
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
  expect_gradients_match_finite_differences(spec, 4, 3, dag_check());
}

// seed-cnn's step runs conv1 and pool1 fused (simd's direct kernel and its winners-only
// weight gradient) and fc1 on the GEMM: every sum in a fixed order per micro-batch.
TEST(Executor, StepIsBitwiseIdenticalForOneTwoAndFourThreads) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  {
    ParameterStore parameters(graph);
    Executor executor(graph, parameters, ExecutorOptions{});
    const std::vector<std::string> fused = executor.plan_report(16, Mode::training).fused;
    ASSERT_NE(std::find(fused.begin(), fused.end(), "conv1+pool1"), fused.end()) << "the step under test is the fused one";
  }
  const Batch batch = random_batch(graph, 70, 10, 9);  // 70: a partial last micro-batch
  const std::vector<float> one = gradients_after_step(graph, batch, 70, 1, 16);
  const std::vector<float> two = gradients_after_step(graph, batch, 70, 2, 16);
  const std::vector<float> four = gradients_after_step(graph, batch, 70, 4, 16);
  ASSERT_EQ(one.size(), two.size());
  EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(one.data(), four.data(), one.size() * sizeof(float)), 0);
}

// The gradient of a batch of two micro-batches run straight from their program, in
// order into one block (as the executor's single lane does), given no constants and so
// working from the weights as layers did before training constants. The program is the
// executor's: on its training graph (engine/training_graph.h), which fuses what the
// model's graph cannot (seed-cnn: conv1 and pool1).
std::vector<float> gradients_from_the_weights(const Graph& model_graph, ParameterStore& parameters, const Batch& batch,
                                              std::int64_t micro_batch, std::uint64_t step_seed) {
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  const std::unique_ptr<Graph> training_graph = relu_after_max_pools(model_graph);
  const Graph& graph = training_graph ? *training_graph : model_graph;
  const StepProgram program(graph, parameters, micro_batch, Mode::training, engine, PlanStrategy::best_fit);
  Workspace workspace(engine, program.arena_bytes());
  std::vector<float> gradients(parameters.gradients().size(), 0.0f);
  const CrossEntropyLoss loss;
  const Targets targets{batch.labels, nullptr};
  for (std::int64_t j = 0; j < 2; ++j) {
    StepRun run;
    run.first_sample = j * micro_batch;
    run.input = batch.input.data() + run.first_sample * graph.input_sample_shape().elements();
    run.gradients = gradients.data();
    run.accumulate = j > 0;
    run.loss = &loss;
    run.targets = &targets;
    run.grad_scale = 1.0f / static_cast<float>(2 * micro_batch);
    run.random = CounterRandom(step_seed);
    program.run(run, workspace);
  }
  return gradients;
}

// A training step of two or more micro-batches packs Linear's weights once, at its start
// (Executor::make_step_constants), and runs every micro-batch against them: the gradients
// have the bits of runs from the weights, for micro-batches of 16 and of 3 (fc1's forward
// then takes the unpacked dot orientation), and on the next step after the weights
// changed (the constants are remade).
TEST(Executor, TrainingConstantsGiveTheBitsOfARunFromTheWeights) {
  for (const char* model : {"seed-cnn", "attn-cnn"}) {
    const Graph graph = graph_from_spec(builtin_model_spec(model));
    for (std::int64_t size : {16, 3}) {
      const Batch batch = random_batch(graph, 2 * size, 10, 5);
      ParameterStore parameters(graph);
      parameters.initialize(7);
      ExecutorOptions options;
      options.micro_batch = size;
      options.gradient_lanes = 1;
      Executor executor(graph, parameters, options);
      const CrossEntropyLoss loss;
      for (std::uint64_t step = 1; step <= 2; ++step) {
        executor.train_step(batch.input.data(), 2 * size, Targets{batch.labels, nullptr}, loss, step);
        const std::vector<float> stepped(parameters.gradients().begin(), parameters.gradients().end());
        const std::vector<float> expected = gradients_from_the_weights(graph, parameters, batch, size, step);
        ASSERT_EQ(stepped.size(), expected.size());
        EXPECT_EQ(std::memcmp(stepped.data(), expected.data(), stepped.size() * sizeof(float)), 0)
            << model << ", micro-batch " << size << ", step " << step;
        for (float& w : parameters.values()) w *= 0.75f;  // what an update does: new weights
      }
    }
  }
}

// One micro-batch makes no constants (they would not be reused), also after a step that
// did: the program then runs from the current weights, not an earlier step's packing.
TEST(Executor, OneMicroBatchStepRunsFromTheCurrentWeights) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  const Batch batch = random_batch(graph, 32, 10, 6);
  ParameterStore parameters(graph);
  parameters.initialize(7);
  ExecutorOptions options;
  options.micro_batch = 16;
  options.gradient_lanes = 1;
  Executor executor(graph, parameters, options);
  const CrossEntropyLoss loss;
  executor.train_step(batch.input.data(), 32, Targets{batch.labels, nullptr}, loss, 1);  // makes constants
  for (float& w : parameters.values()) w *= 0.75f;
  executor.train_step(batch.input.data(), 16, Targets{batch.labels, nullptr}, loss, 2);  // one micro-batch
  const std::vector<float> stepped(parameters.gradients().begin(), parameters.gradients().end());
  std::vector<float> expected;
  {
    ParameterStore fresh(graph);
    std::copy(parameters.values().begin(), parameters.values().end(), fresh.values().begin());
    Executor alone(graph, fresh, options);
    alone.train_step(batch.input.data(), 16, Targets{batch.labels, nullptr}, loss, 2);
    expected.assign(fresh.gradients().begin(), fresh.gradients().end());
  }
  ASSERT_EQ(stepped.size(), expected.size());
  EXPECT_EQ(std::memcmp(stepped.data(), expected.data(), stepped.size() * sizeof(float)), 0);
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

// Inference fuses what training cannot (lenet: conv1's ReLU and max pool run inside simd's
// direct conv kernel); training's forward runs every layer on its own through oneDNN. The
// same weights and batch must give the same loss, to float rounding.
TEST(Executor, InferenceFusionsGiveTheTrainingForwardsLoss) {
  for (const char* model : {"lenet", "seed-cnn"}) {
    const Graph graph = graph_from_spec(builtin_model_spec(model));
    const Batch batch = random_batch(graph, 21, 10, 5);
    ParameterStore parameters(graph);
    parameters.initialize(11);
    ExecutorOptions options;
    options.micro_batch = 8;
    Executor executor(graph, parameters, options);
    const CrossEntropyLoss loss;
    const Targets targets{batch.labels, nullptr};
    const StepResult inference = executor.evaluate(batch.input.data(), 21, targets, loss);
    const StepResult training = executor.train_step(batch.input.data(), 21, targets, loss, 1);  // loss before any update
    EXPECT_NEAR(inference.loss_sum, training.loss_sum, 1e-5 * std::fabs(training.loss_sum)) << model;
    EXPECT_EQ(inference.correct, training.correct) << model;
  }
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

TEST(Executor, AutoMicroBatchGrowsOnlyForWeightHeavyModelsAndKeepsTwoMicroBatches) {
  auto chosen = [](const char* model, std::int64_t batch) {
    const Graph graph = graph_from_spec(builtin_model_spec(model));
    return auto_micro_batch(graph, parameter_layout(graph).total_floats, batch);
  };
  // seed-cnn: fc1's 0.8M weights against 63k forward floats a sample.
  EXPECT_EQ(chosen("seed-cnn", 16), 16);
  EXPECT_EQ(chosen("seed-cnn", 63), 16);   // 32 would leave one micro-batch and a remainder
  EXPECT_EQ(chosen("seed-cnn", 64), 32);
  EXPECT_EQ(chosen("seed-cnn", 256), 32);  // 64: the activations would outweigh the weights
  // Activations dwarf the weights: the smallest.
  for (const char* model : {"attn-cnn", "resnet"}) {
    for (std::int64_t batch : {16, 64, 256}) EXPECT_EQ(chosen(model, batch), 16) << model << " batch " << batch;
  }
  // It never depends on more than the graph and the batch: a tiny graph whose weights
  // dominate grows to the cap, two micro-batches kept.
  Graph wide(Shape{4096});
  wide.set_output(wide.add("fc", std::make_unique<Linear>(4096, 4, true), {wide.input()}));
  EXPECT_EQ(auto_micro_batch(wide, parameter_layout(wide).total_floats, 1024), 64);
  EXPECT_EQ(auto_micro_batch(wide, parameter_layout(wide).total_floats, 64), 32);
}

TEST(Executor, BadArgumentsAreRefused) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  ParameterStore parameters(graph);
  ExecutorOptions options;
  options.threads = 0;
  EXPECT_TRUE(testing::throws_error_with([&] { Executor(graph, parameters, options); }, {"thread count", "between 1 and 64", "found 0"}));
  options.threads = 1;
  options.micro_batch = 0;
  EXPECT_TRUE(testing::throws_error_with([&] { Executor(graph, parameters, options); }, {"micro-batch size", "at least 1", "found 0"}));
  Executor executor(graph, parameters, ExecutorOptions{});
  std::vector<float> input(28 * 28);
  std::vector<std::int32_t> labels{1};
  const CrossEntropyLoss loss;
  EXPECT_TRUE(testing::throws_error_with([&] { executor.train_step(input.data(), 0, Targets{labels, nullptr}, loss, 0); },
                                         {"batch size", "at least 1", "found 0"}));
  try {
    executor.train_step(input.data(), 2, Targets{labels, nullptr}, loss, 0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("batch of 2 samples but only 1 labels"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ember
