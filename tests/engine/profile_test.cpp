// engine/profile.h: the tallies and the report made from them (by hand-made numbers), and a
// profiled executor: every op counted once per micro-batch, no result changed.
#include "engine/profile.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "support/random_batch.h"

namespace ember {
namespace {

const std::vector<ProfiledOp> two_ops = {{"forward fc", StepPhase::forward}, {"backward fc", StepPhase::backward}};

// Two threads, two steps of 10 ms: thread 0 ran the forward op for 3 ms twice (2 GFLOP,
// 1 GB each), thread 1 the backward op for 6 ms once; the ops' wall time was 12 ms, the
// lane sum 2 ms, the optimizer 4 ms.
StepProfile two_step_profile() {
  StepProfile profile;
  profile.prepare(two_ops, 2);
  profile.thread(0).add(0, 3'000'000, 2e9, 1e9);
  profile.thread(0).add(0, 3'000'000, 2e9, 1e9);
  profile.thread(1).add(1, 6'000'000, 0.0, 0.0);
  profile.add_wall(WallPart::step_ops, 12'000'000);
  profile.add_wall(WallPart::lane_sum, 2'000'000, 4e9);
  profile.add_wall(WallPart::optimizer, 4'000'000);
  profile.add_step(10'000'000);
  profile.add_step(10'000'000);
  return profile;
}

TEST(StepProfile, ReportsPerStepBusyTimesRatesAndPeakFractions) {
  const MachinePeaks peaks{"avx512", 100.0, 20.0};
  const ProfileReport r = make_profile_report(two_step_profile(), peaks);
  EXPECT_EQ(r.threads, 2);
  EXPECT_EQ(r.steps, 2);
  EXPECT_DOUBLE_EQ(r.step_ms, 10.0);
  ASSERT_EQ(r.ops.size(), 2u);
  EXPECT_EQ(r.ops[0].describe, "forward fc");
  EXPECT_DOUBLE_EQ(r.ops[0].busy_ms, 3.0);  // 6 ms over two steps
  EXPECT_DOUBLE_EQ(r.ops[0].calls, 1.0);
  EXPECT_DOUBLE_EQ(r.ops[0].percent, 15.0);  // of 2 threads x 10 ms
  EXPECT_DOUBLE_EQ(r.ops[0].gflop, 2.0);
  EXPECT_DOUBLE_EQ(r.ops[0].gflops_per_second, 4e9 / 6e6);  // flops per ns = GFLOP/s
  EXPECT_DOUBLE_EQ(r.ops[0].peak_flops_fraction, r.ops[0].gflops_per_second / 100.0);
  EXPECT_DOUBLE_EQ(r.ops[0].megabytes, 1000.0);
  EXPECT_DOUBLE_EQ(r.ops[0].peak_bandwidth_fraction, (2e9 / 6e6) / 20.0);
  EXPECT_DOUBLE_EQ(r.ops[1].busy_ms, 3.0);
  EXPECT_DOUBLE_EQ(r.ops[1].gflop, 0.0);
  EXPECT_DOUBLE_EQ(r.ops[1].gflops_per_second, 0.0);
}

TEST(StepProfile, SplitsTheOpsWallTimeByBusyTimeAndKeepsTheRemainder) {
  const ProfileReport r = make_profile_report(two_step_profile(), MachinePeaks{"avx2", 50.0, 10.0});
  ASSERT_EQ(r.phases.size(), 7u);
  const char* names[] = {"forward", "loss", "backward", "lane sum", "optimizer", "constants", "other"};
  // 6 ms of ops wall a step, busy 3 : 0 : 3; lane sum 1, optimizer 2, no constants, 1 ms unaccounted.
  const double wall[] = {3.0, 0.0, 3.0, 1.0, 2.0, 0.0, 1.0};
  double sum = 0.0;
  for (std::size_t i = 0; i < 7; ++i) {
    EXPECT_EQ(r.phases[i].name, names[i]);
    EXPECT_DOUBLE_EQ(r.phases[i].wall_ms, wall[i]) << names[i];
    EXPECT_DOUBLE_EQ(r.phases[i].percent, 10.0 * wall[i]) << names[i];
    sum += r.phases[i].wall_ms;
  }
  EXPECT_DOUBLE_EQ(sum, r.step_ms);
  EXPECT_DOUBLE_EQ(r.ops_wall_ms, 6.0);
  EXPECT_DOUBLE_EQ(r.ops_busy_ms, 6.0);
  EXPECT_DOUBLE_EQ(r.phases[3].gigabytes_per_second, 2000.0);  // 2 GB a step in 1 ms
}

TEST(StepProfile, PreparingOtherOpsStartsAfreshAndMoreThreadsAreAdded) {
  StepProfile profile = two_step_profile();
  profile.prepare(two_ops, 3);  // the same ops: the tallies stay
  EXPECT_EQ(profile.threads().size(), 3u);
  EXPECT_EQ(profile.steps(), 2);
  EXPECT_EQ(profile.thread(0).ops[0].calls, 2);
  const std::vector<ProfiledOp> other = {{"forward conv", StepPhase::forward}};
  profile.prepare(other, 1);
  EXPECT_EQ(profile.steps(), 0);
  EXPECT_EQ(profile.ops().size(), 1u);
  EXPECT_EQ(profile.thread(0).ops[0].calls, 0);
  EXPECT_EQ(profile.wall_nanoseconds(WallPart::step_ops), 0);
}

TEST(StepProfile, ATableAndJsonNameEveryOpAndPhase) {
  const ProfileReport r = make_profile_report(two_step_profile(), MachinePeaks{"avx512", 100.0, 20.0});
  const std::string table = format_profile_table(r);
  for (const char* name : {"forward fc", "backward fc", "lane sum", "optimizer", "other", "avx512"}) {
    EXPECT_NE(table.find(name), std::string::npos) << name << " in\n" << table;
  }
  const nlohmann::json json = profile_json(r);
  ASSERT_TRUE(json["ops"].is_array());
  EXPECT_EQ(json["ops"].size(), 2u);
  EXPECT_EQ(json["ops"][1]["op"], "backward fc");
  EXPECT_EQ(json["phases"].size(), 7u);
  EXPECT_EQ(json["peaks"]["isa"], "avx512");
}

TEST(StepProfile, NoStepsIsAnError) {
  StepProfile profile;
  EXPECT_THROW(make_profile_report(profile, MachinePeaks{}), Error);
}

TEST(StepProfile, MachinePeaksArePositive) {
  const MachinePeaks peaks = measure_machine_peaks();
  EXPECT_FALSE(peaks.isa.empty());
  EXPECT_GT(peaks.fma_gflops_per_core, 0.5);
  EXPECT_GT(peaks.memory_gigabytes_per_second, 0.1);
}

// A profiled executor: each op of the program once per micro-batch, over its threads,
// and the same gradients bit for bit as without the profile.
TEST(StepProfile, AProfiledExecutorCountsEveryOpPerMicroBatchAndChangesNoResult) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  const testing::Batch batch = testing::random_batch(graph, 40, 3);
  const CrossEntropyLoss loss;
  const Targets targets{batch.labels, nullptr};
  std::vector<std::vector<float>> gradients;
  StepProfile profile;
  for (bool profiled : {false, true}) {
    ParameterStore parameters(graph);
    parameters.initialize(7);
    ExecutorOptions options;
    options.threads = 2;
    options.micro_batch = 16;  // 16 + 16 + 8
    Executor executor(graph, parameters, options);
    if (profiled) executor.profile_into(&profile);
    executor.train_step(batch.input.data(), 40, targets, loss, 1);
    gradients.emplace_back(parameters.gradients().begin(), parameters.gradients().end());
  }
  EXPECT_EQ(std::memcmp(gradients[0].data(), gradients[1].data(), gradients[0].size() * sizeof(float)), 0);
  ASSERT_EQ(profile.threads().size(), 2u);
  ASSERT_FALSE(profile.ops().empty());
  for (std::size_t i = 0; i < profile.ops().size(); ++i) {
    std::int64_t calls = 0;
    for (const ThreadProfile& t : profile.threads()) calls += t.ops[i].calls;
    EXPECT_EQ(calls, 3) << profile.ops()[i].describe;
  }
  EXPECT_GT(profile.wall_nanoseconds(WallPart::step_ops), 0);
  EXPECT_GT(profile.wall_nanoseconds(WallPart::lane_sum), 0);
}

// A graph with sync points: each batch reduction is timed once a step, on one thread, and
// each micro-batch op once per micro-batch (the reductions' places in the micro-batch runs
// count nothing).
TEST(StepProfile, BatchReductionsCountOnceAStep) {
  const Graph graph = graph_from_spec(nlohmann::json::parse(R"({
    "input": [1, 8, 8],
    "layers": [
      {"name": "conv", "kind": "conv2d", "in_channels": 1, "out_channels": 4, "kernel": 3, "padding": 1},
      {"name": "bn", "kind": "batch_norm2d", "num_features": 4},
      {"name": "flatten", "kind": "flatten"},
      {"name": "fc", "kind": "linear", "in_features": 256, "out_features": 3}
    ]
  })"));
  const testing::Batch batch = testing::random_batch(graph, 12, 5);
  ParameterStore parameters(graph);
  parameters.initialize(1);
  ExecutorOptions options;
  options.threads = 2;
  options.micro_batch = 4;
  Executor executor(graph, parameters, options);
  StepProfile profile;
  executor.profile_into(&profile);
  const CrossEntropyLoss loss;
  for (int step = 0; step < 2; ++step) executor.train_step(batch.input.data(), 12, Targets{batch.labels, nullptr}, loss, 1);
  int reductions = 0;
  for (std::size_t i = 0; i < profile.ops().size(); ++i) {
    std::int64_t calls = 0;
    for (const ThreadProfile& t : profile.threads()) calls += t.ops[i].calls;
    const bool reduction = profile.ops()[i].describe.rfind("reduce", 0) == 0;
    reductions += reduction ? 1 : 0;
    EXPECT_EQ(calls, reduction ? 2 : 6) << profile.ops()[i].describe;
  }
  EXPECT_EQ(reductions, 2);  // the forward statistics and the backward sums
}

}  // namespace
}  // namespace ember
