// `ember bench`'s step statistics and `ember bench --profile`, run as a user would: every op
// of the step program and every phase is named, the op times fit in the step, and the
// convolution's and the Linear layers' FLOPs are their closed forms.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/executor.h"
#include "engine/model_spec.h"
#include "tools/cli_helpers.h"

namespace ember {
namespace {

using testing::CliRun;
using testing::run_ember;

// The last line of the output: `ember bench --json` prints one.
nlohmann::json last_json_line(const std::string& output) {
  const std::size_t end = output.find_last_not_of('\n');
  const std::size_t begin = output.rfind('\n', end);
  return nlohmann::json::parse(output.substr(begin == std::string::npos ? 0 : begin + 1, end + 1 - (begin == std::string::npos ? 0 : begin + 1)));
}

// bench's micro-batch at its default batch of 64: chosen for training, 16 in inference.
std::int64_t seed_cnn_micro_batch(Mode mode) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  return mode == Mode::training ? auto_micro_batch(graph, parameter_layout(graph).total_floats, 64) : 16;
}

std::vector<std::string> seed_cnn_ops(Mode mode) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  ParameterStore parameters(graph);
  Executor executor(graph, parameters, ExecutorOptions{});
  return executor.plan_report(seed_cnn_micro_batch(mode), mode).ops;
}

const nlohmann::json& op_named(const nlohmann::json& profile, const std::string& name) {
  for (const nlohmann::json& op : profile["ops"]) {
    if (op["op"] == name) return op;
  }
  ADD_FAILURE() << "no op " << name << " in " << profile.dump();
  static const nlohmann::json none = {{"gflop", -1.0}};
  return none;
}

TEST(BenchProfile, PrintsEveryOpAndPhase) {
  for (const Mode mode : {Mode::inference, Mode::training}) {
    const bool training = mode == Mode::training;
    const CliRun run = run_ember(std::string("bench --profile --steps 3 --warmup 1") + (training ? " --training" : ""));
    ASSERT_EQ(run.exit_code, 0) << run.output;
    const std::vector<std::string> ops = seed_cnn_ops(mode);
    ASSERT_GT(ops.size(), 3u);
    for (const std::string& op : ops) EXPECT_NE(run.output.find(op), std::string::npos) << op << " in\n" << run.output;
    for (const char* phase : {"forward", "loss", "backward", "lane sum", "optimizer", "constants", "other", "FMA peak", "GB/s"}) {
      EXPECT_NE(run.output.find(phase), std::string::npos) << phase << " in\n" << run.output;
    }
  }
}

TEST(BenchProfile, OpTimesFitInTheStepAndPhasesAddUpToIt) {
  for (const char* threads : {"1", "2"}) {
    const CliRun run = run_ember(std::string("bench --profile --training --steps 3 --warmup 1 --json --threads ") + threads);
    ASSERT_EQ(run.exit_code, 0) << run.output;
    const nlohmann::json profile = last_json_line(run.output)["profile"];
    const double step_ms = profile["step_ms"];
    const int profiled_threads = profile["threads"];
    EXPECT_EQ(profiled_threads, std::stoi(threads));
    double busy_ms = 0.0, phase_ms = 0.0;
    for (const nlohmann::json& op : profile["ops"]) {
      EXPECT_GE(op["busy_ms"].get<double>(), 0.0) << op.dump();
      // batch 64 in micro-batches of the chosen size
      EXPECT_EQ(op["calls"].get<double>(), static_cast<double>(64 / seed_cnn_micro_batch(Mode::training))) << op.dump();
      busy_ms += op["busy_ms"].get<double>();
    }
    // Busy time is summed over threads: it fits in the threads' time.
    EXPECT_GT(busy_ms, 0.0);
    EXPECT_LE(busy_ms, step_ms * profiled_threads) << profile.dump();
    for (const nlohmann::json& phase : profile["phases"]) phase_ms += phase["wall_ms"].get<double>();
    EXPECT_NEAR(phase_ms, step_ms, 1e-6 * step_ms) << profile.dump();
    EXPECT_GT(profile["peaks"]["fma_gflops_per_core"].get<double>(), 0.0);
    EXPECT_GT(profile["peaks"]["memory_gb_per_s"].get<double>(), 0.0);
  }
}

TEST(BenchProfile, ConvolutionAndLinearFlopsAreTheClosedForms) {
  const CliRun run = run_ember("bench --profile --training --steps 2 --warmup 1 --json --batch-size 64");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json profile = last_json_line(run.output)["profile"];
  const double n = 64;
  // conv1: 1 -> 32 channels, 3x3, padding 1 on 28x28: 2 N Cout Cin kH kW OH OW. It runs
  // fused with pool1 (named so): the model's input needs no gradient, so backward is the
  // weight gradient alone, summed over the pooled 14x14 outputs' winners only.
  const double conv1 = 2 * n * 32 * 1 * 3 * 3 * 28 * 28;
  const double conv1_pooled_weight_grad = 2 * n * 32 * 1 * 3 * 3 * 14 * 14;
  const double fc1 = 2 * n * 6272 * 128, fc2 = 2 * n * 128 * 10;  // 2 N in out
  const std::pair<const char*, double> expected[] = {{"forward conv1+pool1", conv1},
                                                     {"backward conv1+pool1", conv1_pooled_weight_grad},
                                                     {"forward fc1", fc1},     {"backward fc1", 2 * fc1},
                                                     {"forward fc2", fc2},     {"backward fc2", 2 * fc2}};
  for (const auto& [op, flops] : expected) {
    EXPECT_NEAR(op_named(profile, op)["gflop"].get<double>(), flops * 1e-9, 1e-12 * flops) << op;
  }
}

TEST(BenchProfile, BenchReportsTheMedianAndSpreadOfItsSteps) {
  const CliRun run = run_ember("bench --steps 5 --warmup 1 --json");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json line = last_json_line(run.output);
  const double median = line["median_ms_per_step"], p10 = line["p10_ms_per_step"], p90 = line["p90_ms_per_step"];
  EXPECT_GT(median, 0.0);
  EXPECT_LE(line["min_ms_per_step"].get<double>(), p10);
  EXPECT_LE(p10, median);
  EXPECT_LE(median, p90);
  EXPECT_LE(p90, line["max_ms_per_step"].get<double>());
  EXPECT_NEAR(line["spread"].get<double>(), (p90 - p10) / median, 1e-3);
  EXPECT_NEAR(line["median_img_per_s"].get<double>(), 64 * 1000.0 / median, 0.01 * 64 * 1000.0 / median);
  for (const char* key : {"img_per_s", "ms_per_step", "threads_seen", "isa"}) EXPECT_TRUE(line.contains(key)) << key;
  EXPECT_FALSE(line.contains("profile"));
  const CliRun refused = run_ember("bench --session --profile");
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("--profile"), std::string::npos) << refused.output;
}

}  // namespace
}  // namespace ember
