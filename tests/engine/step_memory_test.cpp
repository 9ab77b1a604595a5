#include "engine/step_memory.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "engine/error.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "support/buffered_layer.h"
#include "support/file_helpers.h"

namespace ember {
namespace {

StepMemoryOptions training(std::int64_t batch, int threads, std::int64_t micro_batch = 16) {
  StepMemoryOptions options;
  options.batch = batch;
  options.executor.threads = threads;
  options.executor.micro_batch = micro_batch;
  options.mode = Mode::training;
  return options;
}

TEST(StepMemory, CountsBlocksLanesAndArenasByTheExecutorsRules) {
  const std::vector<ProgramFootprint> programs{{1000, 10, 100}, {200, 12, 100}};  // full, last
  const std::int64_t floats = 1600;  // 6400 bytes, a multiple of 64
  // 256 samples in 16 micro-batches: 4 lanes; 2 threads, 2 arenas of the larger plan;
  // kept memory for each of the 16 micro-batches, and one batch memory.
  const StepMemory m = estimate_step_memory(floats, programs, training(256, 2));
  EXPECT_EQ(m.block_bytes, 6400u);
  EXPECT_EQ(m.parameters, 6400u);
  EXPECT_EQ(m.gradient_lanes, 4);
  EXPECT_EQ(m.gradients, 4u * 6400u);
  EXPECT_EQ(m.optimizer_blocks, 2);  // adam
  EXPECT_EQ(m.optimizer_state, 2u * 6400u);
  EXPECT_EQ(m.arena_count, 2);
  EXPECT_EQ(m.arena_bytes, 1024u);  // 1000 rounded up to 64 bytes, as allocated
  EXPECT_EQ(m.arenas, 2u * 1024u);
  EXPECT_EQ(m.kept_bytes, 64u);
  EXPECT_EQ(m.kept_count, 16);
  EXPECT_EQ(m.batch_bytes, 128u);
  EXPECT_EQ(m.kept, 16u * 64u + 128u);
  EXPECT_EQ(m.total(), 6400u * 7 + 2u * 1024u + 16u * 64u + 128u);

  // Fewer micro-batches than threads and lanes: only the threads that run get an arena.
  const StepMemory small = estimate_step_memory(floats, programs, training(16, 2));
  EXPECT_EQ(small.gradient_lanes, 1);
  EXPECT_EQ(small.arena_count, 1);
  // More threads than lanes: lanes grow to the thread count.
  EXPECT_EQ(estimate_step_memory(floats, programs, training(256, 6)).gradient_lanes, 6);

  StepMemoryOptions sgd = training(256, 1);
  sgd.optimizer = "sgd";
  EXPECT_EQ(estimate_step_memory(floats, programs, sgd).optimizer_blocks, 0);
  sgd.optimizer_options.momentum = 0.9f;
  EXPECT_EQ(estimate_step_memory(floats, programs, sgd).optimizer_blocks, 1);

  // Inference: no optimizer, no lanes but the store's own gradient block.
  StepMemoryOptions inference = training(256, 2);
  inference.mode = Mode::inference;
  const StepMemory i = estimate_step_memory(floats, programs, inference);
  EXPECT_EQ(i.gradient_lanes, 1);
  EXPECT_EQ(i.optimizer_state, 0u);
  EXPECT_EQ(i.arena_count, 2);

  // The step's constants (packed weights) count in training with two or more
  // micro-batches; an executor makes none in inference, nor for one micro-batch.
  const StepMemory with_constants = estimate_step_memory(floats, programs, training(256, 2), 0, 4096);
  EXPECT_EQ(with_constants.constants, 4096u);
  EXPECT_EQ(with_constants.total(), m.total() + 4096u);
  EXPECT_EQ(estimate_step_memory(floats, programs, inference, 0, 4096).constants, 0u);
  EXPECT_EQ(estimate_step_memory(floats, programs, training(16, 2), 0, 4096).constants, 0u) << "one micro-batch";
}

// Buffers are one block, in training and inference alike; no lanes, no optimizer state.
TEST(StepMemory, CountsTheBufferBlockOnce) {
  const std::vector<ProgramFootprint> programs{{1000, 10}};
  EXPECT_EQ(estimate_step_memory(1600, programs, training(256, 2)).buffers, 0u);
  const StepMemory m = estimate_step_memory(1600, programs, training(256, 2), 20);
  EXPECT_EQ(m.buffers, 128u);  // 80 bytes rounded up to 64, as allocated
  EXPECT_EQ(m.total(), 6400u * 7 + 128u + 2u * 1024u + 16u * 64u);
  EXPECT_THROW(estimate_step_memory(16, programs, training(64, 1), -1), Error);

  const Graph graph = testing::buffered_graph();
  const ParameterStore parameters(graph);
  StepMemoryOptions inference = training(4, 1);
  inference.mode = Mode::inference;
  const StepMemory estimate = estimate_step_memory(graph, parameters, inference);
  EXPECT_EQ(estimate.buffers, 192u);
  EXPECT_EQ(estimate.parameters, 320u);
  EXPECT_EQ(estimate.total(), 320u + 192u + 320u + estimate.arenas);
  EXPECT_TRUE(testing::contains(testing::error_of([&] { check_step_memory(estimate, estimate.total() - 1, "buffered"); }),
                                "parameters 320 bytes, buffers 192 bytes, gradients 320 bytes"));
}

// Before the store exists: values, gradients and buffers, 320 + 320 + 192 bytes.
TEST(StepMemory, ModelMemoryCountsTheBufferBlock) {
  const Graph graph = testing::buffered_graph();
  const ParameterLayout layout = parameter_layout(graph);
  EXPECT_NO_THROW(check_model_memory(graph, layout, 1, 832, "buffered"));
  const std::string message = testing::error_of([&] { check_model_memory(graph, layout, 1, 831, "buffered"); });
  EXPECT_TRUE(testing::starts_with(message, "buffered: the parameter memory needs 832 bytes (a block of values and one of "
                                            "gradients, and one of buffers); the memory limit is 831 bytes"))
      << message;
  // The float-count form takes the buffers from the graph.
  EXPECT_NO_THROW(check_model_memory(graph, layout.total_floats, 1, 832, "buffered"));
  EXPECT_NE(testing::error_of([&] { check_model_memory(graph, layout.total_floats, 1, 831, "buffered"); }), "no error");
}

TEST(StepMemory, RefusesWhatTheExecutorRefuses) {
  const std::vector<ProgramFootprint> programs{{1000, 10}};
  EXPECT_THROW(estimate_step_memory(16, programs, training(0, 1)), Error);
  EXPECT_THROW(estimate_step_memory(16, programs, training(64, 0)), Error);
  EXPECT_THROW(estimate_step_memory(16, programs, training(64, 65)), Error);
  EXPECT_THROW(estimate_step_memory(16, programs, training(64, 1, 0)), Error);
  StepMemoryOptions unknown = training(64, 1);
  unknown.optimizer = "adagrad";
  EXPECT_THROW(estimate_step_memory(16, programs, unknown), Error);
  EXPECT_THROW(estimate_step_memory(16, {}, training(64, 1)), Error);
}

// The estimate counts, before anything runs, exactly the buffers an executor then holds.
class StepMemoryOf : public ::testing::TestWithParam<const char*> {};

TEST_P(StepMemoryOf, MatchesWhatTheExecutorAllocates) {
  const Graph graph = graph_from_spec(builtin_model_spec(GetParam()), GetParam());
  const CrossEntropyLoss loss;
  // 100 samples in micro-batches of 16: six of 16 and a last of 4.
  for (const auto& [batch, threads] : {std::pair<std::int64_t, int>{100, 2}, {256, 1}, {8, 2}}) {
    ParameterStore parameters(graph);
    parameters.initialize(1);
    const StepMemoryOptions options = training(batch, threads);
    const StepMemory estimate = estimate_step_memory(graph, parameters, options);
    std::vector<float> input(static_cast<std::size_t>(batch * graph.input_sample_shape().elements()), 0.5f);
    std::vector<std::int32_t> labels(static_cast<std::size_t>(batch), 3);
    Executor executor(graph, parameters, options.executor);
    executor.train_step(input.data(), batch, Targets{labels, nullptr}, loss, 0);
    // The executor holds the arenas, the kept memory (resnet's BatchNorms make sync
    // points), lanes 1..L-1 (lane 0 is the store's) and the step's constants.
    EXPECT_EQ(executor.buffer_bytes(),
              estimate.arenas + estimate.kept + estimate.gradients - estimate.block_bytes + estimate.constants)
        << "batch " << batch << ", " << threads << " thread(s)";
    // Every built-in model has a Linear layer, whose packed W^T and W a step of two or
    // more micro-batches makes.
    EXPECT_EQ(estimate.constants > 0, batch > 16) << "batch " << batch;
    EXPECT_EQ(estimate.block_bytes, static_cast<std::size_t>(parameters.total_floats()) * sizeof(float));
    EXPECT_EQ(estimate.kept > 0, std::string(GetParam()) == "resnet");
  }
}

INSTANTIATE_TEST_SUITE_P(Models, StepMemoryOf, ::testing::Values("seed-cnn", "resnet"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param) == "seed-cnn" ? std::string("seed_cnn") : std::string(info.param);
                         });

}  // namespace
}  // namespace ember
