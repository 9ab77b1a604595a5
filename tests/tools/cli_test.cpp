// The `ember` command line, run as a user would: exit codes, messages, the thread budget,
// resuming, and stopping on a NaN loss without losing the last checkpoint.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <numeric>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "engine/executor.h"
#include "engine/idx.h"
#include "engine/training_state.h"
#include "tools/cli_helpers.h"

namespace {

using ember::testing::CliRun;

CliRun ember(const std::string& arguments) { return ember::testing::run_ember(arguments); }
std::string read_file(const std::string& path) { return ember::testing::file_bytes(path); }

// A checkpoint's logits for a directory's t10k images, computed here through the library
// (not through the CLI): images normalized as training did, (x / 255 - mean) / std.
struct TestSetLogits {
  std::int64_t classes = 0;
  std::vector<float> logits;
  std::vector<std::int64_t> labels;

  std::span<const float> row(std::size_t i) const {
    return {logits.data() + i * static_cast<std::size_t>(classes), static_cast<std::size_t>(classes)};
  }
  double log_sum_exp(std::size_t i) const {
    const std::span<const float> r = row(i);
    const double max = *std::max_element(r.begin(), r.end());
    double sum = 0.0;
    for (float v : r) sum += std::exp(static_cast<double>(v) - max);
    return max + std::log(sum);
  }
  double cross_entropy(std::size_t i) const { return log_sum_exp(i) - row(i)[static_cast<std::size_t>(labels[i])]; }
  double probability(std::size_t i, std::int64_t c) const { return std::exp(row(i)[static_cast<std::size_t>(c)] - log_sum_exp(i)); }
};

TestSetLogits logits_of(const std::string& checkpoint, const std::string& directory) {
  ember::TrainedModel model = ember::load_trained_model(checkpoint);
  const ember::IdxArray images = ember::read_idx(directory + "/t10k-images-idx3-ubyte.gz", 3);
  const ember::IdxArray labels = ember::read_idx(directory + "/t10k-labels-idx1-ubyte.gz", 1);
  const ember::Shape input = model.graph->input_sample_shape();
  EXPECT_EQ(input, (ember::Shape{1, images.dims[1], images.dims[2]})) << "the test assumes unpadded images";
  const double mean = model.run.value("mean", 0.0), std = model.run.value("std", 1.0);
  std::vector<float> normalized(images.data.size());
  for (std::size_t i = 0; i < normalized.size(); ++i) {
    normalized[i] = static_cast<float>((images.data[i] / 255.0 - mean) / std);
  }
  TestSetLogits result;
  result.classes = model.graph->value_shape(model.graph->output()).sample_elements();
  result.logits.resize(static_cast<std::size_t>(images.dims[0] * result.classes));
  ember::Executor executor(*model.graph, *model.parameters, ember::ExecutorOptions{});
  executor.infer(normalized.data(), images.dims[0], result.logits.data());
  for (std::uint8_t label : labels.data) result.labels.push_back(label);
  return result;
}

// Class indices, highest logit first (ties: the lower index first, as predict sorts).
std::vector<std::int64_t> classes_by_logit(std::span<const float> row) {
  std::vector<std::int64_t> order(row.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
    return row[static_cast<std::size_t>(a)] > row[static_cast<std::size_t>(b)];
  });
  return order;
}

// A small MNIST-shaped dataset whose class is visible in the image (a bright band at a
// class-dependent row), so training makes progress in a few steps; every 8th test label
// is deliberately wrong.
class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/ember-cli-XXXXXX";
    directory_ = ::mkdtemp(pattern);
    ember::testing::write_band_dataset(directory_, 512, 128, /*mislabel_every=*/8);
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + directory_).c_str()); }
  static std::string train_flags() { return "train --model seed-cnn --data " + directory_ + " --batch-size 32 --seed 3 "; }
  static std::string directory_;
};
std::string CliTest::directory_;

TEST_F(CliTest, HelpAndUsageErrorsExitWithTwo) {
  EXPECT_EQ(ember("--help").exit_code, 0);
  for (const char* command : {"train", "eval", "predict", "plan", "bench", "info"}) {
    const CliRun help = ember(std::string(command) + " --help");
    EXPECT_EQ(help.exit_code, 0) << command;
    EXPECT_NE(help.output.find("usage: ember " + std::string(command)), std::string::npos) << help.output;
  }
  const CliRun unknown = ember("frobnicate");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.output.find("unknown command 'frobnicate'"), std::string::npos) << unknown.output;

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"train --batch-size 0", "--batch-size: expected a positive integer, found '0'"},
      {"train --batch-size -4", "--batch-size: expected a positive integer, found '-4'"},
      {"train --lr -0.1", "--lr: expected a positive number, found '-0.1'"},
      {"train --lr abc", "--lr: expected a positive number, found 'abc'"},
      {"train --optimizer adagrad", "--optimizer: expected one of sgd|adam|adamw, found 'adagrad'"},
      {"train --epochs", "--epochs needs a value"},
      {"train --frobnicate 3", "unknown flag --frobnicate"},
      {"train --max-steps -1", "--max-steps: expected a non-negative integer, found '-1'"},
      {"train --eval-every -1", "--eval-every: expected a non-negative integer, found '-1'"},
      {"train --eval-every 0.5", "--eval-every: expected a non-negative integer, found '0.5'"},
      {"train --stop-at-accuracy 101", "--stop-at-accuracy: expected a number in [0, 100], found '101'"},
      {"train --stop-at-accuracy -5", "--stop-at-accuracy: expected a number in [0, 100], found '-5'"},
      {"train --stop-at-accuracy 90%", "--stop-at-accuracy: expected a number in [0, 100], found '90%'"},
      {"train --schedule linear", "--schedule: expected one of constant|step|cosine|onecycle, found 'linear'"},
      {"train --pct-start 1.5", "--pct-start: expected a number in [0, 1], found '1.5'"},
      {"train --div-factor 0", "--div-factor: expected a positive number, found '0'"},
      {"train --final-div-factor -1e4", "--final-div-factor: expected a positive number, found '-1e4'"},
      {"eval", "--checkpoint is required"},
  };
  for (const auto& [arguments, message] : cases) {
    const CliRun run = ember(arguments);
    EXPECT_EQ(run.exit_code, 2) << arguments << ": " << run.output;
    EXPECT_NE(run.output.find(message), std::string::npos) << arguments << ": " << run.output;
  }
}

TEST_F(CliTest, FailuresExitWithOneAndSaySo) {
  const CliRun missing = ember("eval --checkpoint /nonexistent/model.safetensors");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("/nonexistent/model.safetensors: cannot open"), std::string::npos) << missing.output;
  { std::ofstream(directory_ + "/corrupt.safetensors") << "this is not a checkpoint"; }
  const CliRun corrupt = ember("eval --checkpoint " + directory_ + "/corrupt.safetensors --data " + directory_);
  EXPECT_EQ(corrupt.exit_code, 1);
  EXPECT_NE(corrupt.output.find("corrupt.safetensors"), std::string::npos) << corrupt.output;
  const CliRun no_data = ember("train --data /nonexistent-dataset");
  EXPECT_EQ(no_data.exit_code, 1);
  EXPECT_NE(no_data.output.find("/nonexistent-dataset"), std::string::npos) << no_data.output;
}

TEST_F(CliTest, NeverRunsMoreThreadsThanItIsGiven) {
  for (int threads : {1, 2}) {
    const CliRun run = ember("bench --model seed-cnn --training --batch-size 64 --steps 3 --warmup 1 --json --threads " +
                          std::to_string(threads));
    ASSERT_EQ(run.exit_code, 0) << run.output;
    const std::size_t at = run.output.find("\"threads_seen\": ");
    ASSERT_NE(at, std::string::npos) << run.output;
    const int seen = std::atoi(run.output.c_str() + at + 16);
    EXPECT_LE(seen, threads) << run.output;
    EXPECT_GE(seen, 1);
  }
}

// `ember bench --session`: callers share one session (a workspace each, made up front);
// it reports throughput, latency percentiles and resident memory, and refuses the flags of
// the other mode.
TEST_F(CliTest, SessionBenchReportsCallsLatencyAndMemory) {
  const CliRun run = ember("bench --session --callers 3 --calls 20 --warmup 2 --batch-size 8 --mixed-batches --json");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const auto field = [&](const std::string& name) {
    const std::size_t at = run.output.find("\"" + name + "\": ");
    EXPECT_NE(at, std::string::npos) << name << " in " << run.output;
    return at == std::string::npos ? -1.0 : std::atof(run.output.c_str() + at + name.size() + 4);
  };
  EXPECT_EQ(field("callers"), 3.0) << run.output;
  EXPECT_EQ(field("threads"), 1.0) << run.output;
  // One workspace per caller that overlapped another; how many did depends on the machine.
  EXPECT_GE(field("workspaces"), 1.0) << run.output;
  EXPECT_LE(field("workspaces"), 3.0) << run.output;
  EXPECT_GT(field("calls_per_s"), 0.0) << run.output;
  EXPECT_GT(field("img_per_s"), field("calls_per_s")) << "batches of 1..8 samples: " << run.output;
  EXPECT_GT(field("p50_ms"), 0.0) << run.output;
  EXPECT_LE(field("p50_ms"), field("p99_ms")) << run.output;
  EXPECT_GT(field("resident_before_bytes"), 0.0) << run.output;
  EXPECT_GT(field("resident_after_bytes"), 0.0) << run.output;
  for (const auto& [arguments, flag] : {std::pair<std::string, std::string>{"bench --session --training", "--training"},
                                        {"bench --session --steps 2", "--steps"},
                                        {"bench --calls 5", "--calls"}}) {
    const CliRun refused = ember(arguments);
    EXPECT_EQ(refused.exit_code, 2) << arguments << ": " << refused.output;
    EXPECT_NE(refused.output.find(flag), std::string::npos) << arguments << ": " << refused.output;
  }
}

TEST_F(CliTest, ResumingGivesTheSameWeightsAsAnUninterruptedRun) {
  const std::string straight = directory_ + "/straight.safetensors";
  const std::string first = directory_ + "/first.safetensors";
  ASSERT_EQ(ember(train_flags() + "--epochs 2 --threads 2 --save " + straight).exit_code, 0);
  ASSERT_EQ(ember(train_flags() + "--epochs 1 --threads 2 --save " + first).exit_code, 0);
  const CliRun resumed = ember(train_flags() + "--epochs 2 --threads 2 --resume " + first + " --save " + first);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("epoch 2:"), std::string::npos) << resumed.output;
  EXPECT_EQ(resumed.output.find("epoch 1:"), std::string::npos) << resumed.output;
  // Weights, optimizer state and metadata: the files are identical byte for byte.
  EXPECT_TRUE(read_file(straight) == read_file(first));
  // The same seed, data and threads reproduce the run exactly.
  const std::string again = directory_ + "/again.safetensors";
  ASSERT_EQ(ember(train_flags() + "--epochs 2 --threads 2 --save " + again).exit_code, 0);
  EXPECT_TRUE(read_file(straight) == read_file(again));
}

TEST_F(CliTest, ANanLossStopsTrainingAndKeepsTheLastCheckpoint) {
  const std::string checkpoint = directory_ + "/good.safetensors";
  ASSERT_EQ(ember(train_flags() + "--epochs 1 --save " + checkpoint).exit_code, 0);
  const std::string before = read_file(checkpoint);
  // An absurd learning rate drives the weights to infinity within a few steps.
  const CliRun run = ember(train_flags() + "--epochs 2 --lr 1e38 --resume " + checkpoint + " --save " + checkpoint);
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find("training stopped before applying this step"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("is intact"), std::string::npos) << run.output;
  EXPECT_TRUE(read_file(checkpoint) == before);
}

TEST_F(CliTest, DetectAnomalyNamesTheLayerAndKeepsTheLastCheckpoint) {
  const std::string checkpoint = directory_ + "/before-anomaly.safetensors";
  ASSERT_EQ(ember(train_flags() + "--epochs 1 --save " + checkpoint).exit_code, 0);
  const std::string before = read_file(checkpoint);
  // Adam at a rate of 1e38 moves the weights to about +-1e38 in step 17, the first of
  // epoch 2; step 18's first convolution overflows.
  const CliRun run =
      ember(train_flags() + "--epochs 2 --lr 1e38 --detect-anomaly --resume " + checkpoint + " --save " + checkpoint);
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find("error: step 18 (epoch 2, batch 2): non-finite value in the forward pass at layer conv1 "
                            "(conv2d): output"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("is intact"), std::string::npos) << run.output;
  EXPECT_TRUE(read_file(checkpoint) == before);
  const CliRun eval = ember("eval --checkpoint " + checkpoint + " --data " + directory_);
  EXPECT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_NE(ember("train --help").output.find("--detect-anomaly"), std::string::npos);
}

TEST_F(CliTest, TrainEvalAndPredictWork) {
  const std::string checkpoint = directory_ + "/model.safetensors";
  const std::string log = directory_ + "/log.csv";
  const CliRun train = ember(train_flags() + "--epochs 2 --save " + checkpoint + " --log " + log);
  ASSERT_EQ(train.exit_code, 0) << train.output;
  EXPECT_NE(train.output.find("epoch 2: train loss"), std::string::npos) << train.output;
  const std::string csv = read_file(log);
  EXPECT_EQ(csv.rfind("epoch,step,learning_rate,train_loss,train_accuracy,test_loss,test_accuracy", 0), 0u) << csv;
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3);

  // The same checkpoint run here, through the library, over the same 128 test images: the
  // accuracy and loss eval prints, and the classes predict prints, must be these.
  const TestSetLogits expected = logits_of(checkpoint, directory_);
  ASSERT_EQ(expected.labels.size(), 128u);
  std::int64_t hits = 0;
  double loss_sum = 0.0;
  for (std::size_t i = 0; i < expected.labels.size(); ++i) {
    const std::vector<std::int64_t> order = classes_by_logit(expected.row(i));
    if (order[0] == expected.labels[i]) ++hits;
    loss_sum += expected.cross_entropy(i);
  }
  // Trained on images whose class is a visible band: far better than chance, so a wrong
  // count cannot agree with it by accident.
  EXPECT_GE(hits, 64) << "the test model did not learn; the checks below would be weak";
  EXPECT_LE(hits, 112) << "every 8th test label is wrong";

  const CliRun eval = ember("eval --checkpoint " + checkpoint + " --data " + directory_ + " --batch-size 48");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const std::size_t at = eval.output.find("(128 images): accuracy ");
  ASSERT_NE(at, std::string::npos) << eval.output;
  double printed_accuracy = -1.0, printed_loss = -1.0;
  ASSERT_EQ(std::sscanf(eval.output.c_str() + at, "(128 images): accuracy %lf%%, loss %lf", &printed_accuracy, &printed_loss), 2)
      << eval.output;
  EXPECT_NEAR(printed_accuracy, 100.0 * static_cast<double>(hits) / 128.0, 0.005 + 1e-9)
      << eval.output << "expected " << hits << " of 128 right";
  EXPECT_NEAR(printed_loss, loss_sum / 128.0, 5e-5 + 1e-4 * loss_sum / 128.0) << eval.output;

  const CliRun predict = ember("predict --checkpoint " + checkpoint + " --input " + directory_ + "/t10k-images-idx3-ubyte.gz --top 2");
  ASSERT_EQ(predict.exit_code, 0) << predict.output;
  std::istringstream lines(predict.output);
  std::string line;
  std::size_t count = 0;
  while (std::getline(lines, line)) {
    long long index = -1, first = -1, second = -1;
    double first_probability = -1.0, second_probability = -1.0;
    ASSERT_EQ(std::sscanf(line.c_str(), "%lld %lld:%lf %lld:%lf", &index, &first, &first_probability, &second, &second_probability), 5)
        << line;
    ASSERT_EQ(index, static_cast<long long>(count)) << line;
    const std::vector<std::int64_t> order = classes_by_logit(expected.row(count));
    EXPECT_EQ(first, order[0]) << "image " << count << ": " << line;
    EXPECT_EQ(second, order[1]) << "image " << count << ": " << line;
    EXPECT_NEAR(first_probability, expected.probability(count, order[0]), 1e-4) << line;
    EXPECT_NEAR(second_probability, expected.probability(count, order[1]), 1e-4) << line;
    ++count;
  }
  EXPECT_EQ(count, 128u) << predict.output;
  const CliRun limited = ember("predict --checkpoint " + checkpoint + " --input " + directory_ + "/t10k-images-idx3-ubyte.gz --limit 4");
  ASSERT_EQ(limited.exit_code, 0) << limited.output;
  EXPECT_EQ(std::count(limited.output.begin(), limited.output.end(), '\n'), 4) << limited.output;
}

// The test accuracies (in percent) of the "step S (epoch E, batch B/N): ... acc A% | ..."
// lines, in order, with their steps.
std::vector<std::pair<long long, double>> evaluation_lines(const std::string& output) {
  std::vector<std::pair<long long, double>> found;
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    long long step = -1;
    if (std::sscanf(line.c_str(), "step %lld (epoch", &step) != 1) continue;
    const std::size_t at = line.find(" acc ");
    found.emplace_back(step, at == std::string::npos ? -1.0 : std::atof(line.c_str() + at + 5));
  }
  return found;
}

// --eval-every: the test split is evaluated within epochs, every N steps counted over
// the run (the epoch's last step is its own evaluation), each line with the time since
// the command started, as are the epoch lines.
TEST_F(CliTest, EvalEveryEvaluatesWithinEpochsAndPrintsTheElapsedTime) {
  // 512 images in batches of 32: 16 steps an epoch.
  const CliRun run = ember(train_flags() + "--epochs 2 --eval-every 6");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const auto evaluations = evaluation_lines(run.output);
  std::vector<long long> steps;
  for (const auto& [step, accuracy] : evaluations) {
    steps.push_back(step);
    EXPECT_GE(accuracy, 0.0) << run.output;
    EXPECT_LE(accuracy, 100.0) << run.output;
  }
  EXPECT_EQ(steps, (std::vector<long long>{6, 12, 18, 24, 30})) << run.output;
  EXPECT_NE(run.output.find("step 6 (epoch 1, batch 6/16): test loss "), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("step 18 (epoch 2, batch 2/16): test loss "), std::string::npos) << run.output;
  std::istringstream lines(run.output);
  std::string line;
  int timed = 0;
  double last_elapsed = 0.0;
  while (std::getline(lines, line)) {
    if (line.rfind("step ", 0) != 0 && line.rfind("epoch ", 0) != 0) continue;
    const std::size_t at = line.rfind("| ");
    const std::size_t unit = line.rfind(" s elapsed");
    if (unit == std::string::npos || at == std::string::npos || unit + 10 != line.size()) continue;
    const double elapsed = std::atof(line.c_str() + at + 2);
    EXPECT_GE(elapsed, last_elapsed) << line;
    last_elapsed = elapsed;
    ++timed;
  }
  EXPECT_EQ(timed, 5 + 2) << "every evaluation and epoch line ends with the time since start:\n" << run.output;
  // Without the flag, only the epochs are evaluated.
  const CliRun plain = ember(train_flags() + "--epochs 1");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_TRUE(evaluation_lines(plain.output).empty()) << plain.output;
}

// --stop-at-accuracy stops at the first evaluation that reaches it, within an epoch too;
// the checkpoint and the log hold that step, and eval of the checkpoint gives the accuracy
// that stopped it.
TEST_F(CliTest, StopAtAccuracyStopsAtTheFirstEvaluationThatReachesIt) {
  const std::string checkpoint = directory_ + "/stopped.safetensors";
  const std::string log = directory_ + "/stopped.csv";
  // Band images are learnt within a few steps; every 8th test label is wrong, so at most
  // 87.5% is reachable. 77% comes after a few steps (5 with this seed), well within epoch 1.
  const CliRun run = ember(train_flags() + "--epochs 6 --eval-every 1 --stop-at-accuracy 77 --save " + checkpoint +
                           " --log " + log);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const auto evaluations = evaluation_lines(run.output);
  ASSERT_FALSE(evaluations.empty()) << run.output;
  const auto [stop_step, stop_accuracy] = evaluations.back();
  EXPECT_GE(stop_accuracy, 77.0) << run.output;
  EXPECT_NE(stop_step % 16, 0) << "the test wants a stop within an epoch:\n" << run.output;
  ASSERT_GE(evaluations.size(), 3u) << "the test wants evaluations that did not stop it:\n" << run.output;
  for (std::size_t i = 0; i + 1 < evaluations.size(); ++i) {
    EXPECT_EQ(evaluations[i].first, static_cast<long long>(i + 1)) << run.output;
    EXPECT_LT(evaluations[i].second, 77.0) << run.output;
  }
  char stopping[128];
  std::snprintf(stopping, sizeof stopping, "test accuracy %.2f%% >= 77%% (--stop-at-accuracy) after %lld steps", stop_accuracy,
                stop_step);
  EXPECT_NE(run.output.find(stopping), std::string::npos) << stopping << "\n" << run.output;
  const int stopped_epoch = static_cast<int>(stop_step / 16) + 1;
  char epoch_line[96];
  std::snprintf(epoch_line, sizeof epoch_line, "epoch %d (stopped after batch %lld/16): train loss", stopped_epoch, stop_step % 16);
  EXPECT_NE(run.output.find(epoch_line), std::string::npos) << epoch_line << "\n" << run.output;
  EXPECT_EQ(run.output.find("epoch " + std::to_string(stopped_epoch + 1)), std::string::npos) << run.output;
  // The log's last row is the stopping step.
  const std::string csv = read_file(log);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), stopped_epoch + 1) << csv;
  int logged_epoch = 0;
  long long logged_step = 0;
  ASSERT_EQ(std::sscanf(csv.c_str() + csv.rfind('\n', csv.size() - 2) + 1, "%d,%lld,", &logged_epoch, &logged_step), 2) << csv;
  EXPECT_EQ(logged_epoch, stopped_epoch) << csv;
  EXPECT_EQ(logged_step, stop_step) << csv;
  // The checkpoint holds the weights that were evaluated.
  const CliRun eval = ember("eval --checkpoint " + checkpoint + " --data " + directory_);
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const std::size_t at = eval.output.find("(128 images): accuracy ");
  ASSERT_NE(at, std::string::npos) << eval.output;
  EXPECT_NEAR(std::atof(eval.output.c_str() + at + 23), stop_accuracy, 0.005 + 1e-9) << eval.output << run.output;

  // A target no evaluation reaches runs every epoch.
  const CliRun unreached = ember(train_flags() + "--epochs 2 --stop-at-accuracy 99");
  ASSERT_EQ(unreached.exit_code, 0) << unreached.output;
  EXPECT_NE(unreached.output.find("epoch 2: train loss"), std::string::npos) << unreached.output;
  EXPECT_EQ(unreached.output.find("stopping"), std::string::npos) << unreached.output;
  // A regression has no accuracy to stop at.
  const CliRun regression = ember("train --model attention-mse --stop-at-accuracy 90 --train-limit 64 --test-limit 64");
  EXPECT_EQ(regression.exit_code, 1) << regression.output;
  EXPECT_NE(regression.output.find("attention-retrieval is a regression task (mse); it has no accuracy"), std::string::npos)
      << regression.output;
}

// --schedule onecycle runs OneCycleLR over the whole run: the log's rates are those of
// the last step of each epoch, ending at --lr / (div-factor x final-div-factor); a resume
// must keep the run's length.
TEST_F(CliTest, OneCycleScheduleSpansTheRun) {
  const std::string log = directory_ + "/onecycle.csv";
  const std::string checkpoint = directory_ + "/onecycle.safetensors";
  const CliRun run = ember(train_flags() + "--epochs 2 --schedule onecycle --lr 0.01 --div-factor 10 --final-div-factor 100 "
                                           "--pct-start 0.25 --log " + log + " --save " + checkpoint);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::istringstream rows(read_file(log));
  std::string row;
  std::getline(rows, row);  // header
  std::vector<double> rates;
  while (std::getline(rows, row)) {
    int epoch = 0;
    long long step = 0;
    double rate = 0.0;
    ASSERT_EQ(std::sscanf(row.c_str(), "%d,%lld,%lf", &epoch, &step, &rate), 3) << row;
    rates.push_back(rate);
  }
  ASSERT_EQ(rates.size(), 2u);
  // 32 steps; the peak at 0.25 * 32 - 1 = step 7; step 15 is (15 - 7) / 24 of the way down.
  const double pi = 3.141592653589793;
  // The log prints 6 digits.
  EXPECT_NEAR(rates[0], 1e-5 + (0.01 - 1e-5) * (1 + std::cos(pi * 8.0 / 24.0)) / 2, 1e-5 * rates[0]);
  EXPECT_NEAR(rates[1], 1e-5, 1e-5 * 1e-5);
  const CliRun longer = ember(train_flags() + "--epochs 3 --schedule onecycle --lr 0.01 --div-factor 10 --final-div-factor 100 "
                                              "--pct-start 0.25 --resume " + checkpoint);
  EXPECT_EQ(longer.exit_code, 1) << longer.output;
  EXPECT_NE(longer.output.find("\"one_cycle\":{\"div_factor\":10.0,\"epochs\":2"), std::string::npos) << longer.output;
  EXPECT_NE(longer.output.find("\"one_cycle\":{\"div_factor\":10.0,\"epochs\":3"), std::string::npos) << longer.output;
}

// --max-steps ends the run after that many optimizer steps, within an epoch, overriding
// --epochs; the last (partial) epoch is evaluated, saved and logged, and onecycle spans
// exactly those steps.
TEST_F(CliTest, MaxStepsEndsTheRunWithinAnEpoch) {
  const std::string log = directory_ + "/max-steps.csv";
  const std::string checkpoint = directory_ + "/max-steps.safetensors";
  const CliRun run = ember(train_flags() + "--epochs 5 --max-steps 20 --schedule onecycle --lr 0.01 --log " + log +
                           " --save " + checkpoint);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("epoch 1: train loss"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("epoch 2 (stopped after batch 4/16): train loss"), std::string::npos) << run.output;
  EXPECT_EQ(run.output.find("epoch 3"), std::string::npos) << run.output;
  const std::string csv = read_file(log);
  ASSERT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3) << csv;
  int epoch = 0;
  long long step = 0;
  double rate = 0.0;
  ASSERT_EQ(std::sscanf(csv.c_str() + csv.rfind('\n', csv.size() - 2) + 1, "%d,%lld,%lf", &epoch, &step, &rate), 3) << csv;
  EXPECT_EQ(epoch, 2);
  EXPECT_EQ(step, 20);
  EXPECT_NEAR(rate, 0.01 / 25 / 1e4, 1e-5 * 0.01 / 25 / 1e4) << "onecycle ends at the last step:\n" << csv;
  // Resumed with the same flags, the run is complete: nothing more is trained.
  const std::string before = read_file(checkpoint);
  const CliRun again = ember(train_flags() + "--epochs 5 --max-steps 20 --schedule onecycle --lr 0.01 --resume " + checkpoint +
                             " --save " + checkpoint);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(again.output.find("epoch "), std::string::npos) << again.output;
  EXPECT_TRUE(read_file(checkpoint) == before);
}

// The tutorial's attention example on its synthetic task: the test MSE must fall from ~1
// (what predicting zeros or an average scores) to below the README's 0.1 in 3 epochs.
TEST_F(CliTest, AttentionMseLearnsToAttend) {
  const CliRun run = ember("train --model attention-mse --epochs 3 --threads 2");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const std::size_t at = run.output.rfind("test loss ");
  ASSERT_NE(at, std::string::npos) << run.output;
  const double test_loss = std::stod(run.output.substr(at + 10));
  EXPECT_LT(test_loss, 0.1) << run.output;
  EXPECT_EQ(run.output.find("acc"), std::string::npos) << "a regression reports no accuracy:\n" << run.output;
}

// eval uses the loss and the data the checkpoint was trained with: on an MSE model it
// reports the MSE over the run's own test split, the figure train printed last.
TEST_F(CliTest, EvalOfAnMseModelReportsTheRunsTestMse) {
  const std::string checkpoint = directory_ + "/attention-mse.safetensors";
  const CliRun train = ember("train --model attention-mse --epochs 1 --threads 2 --seed 5 --save " + checkpoint);
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const std::size_t trained_at = train.output.rfind("test loss ");
  ASSERT_NE(trained_at, std::string::npos) << train.output;
  const double train_test_loss = std::stod(train.output.substr(trained_at + 10));
  EXPECT_LT(train_test_loss, 0.5) << "the model did not learn; a loss near 1 would not tell test sets apart\n" << train.output;

  const CliRun eval = ember("eval --checkpoint " + checkpoint + " --batch-size 100");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const std::size_t at = eval.output.find(" on attention-retrieval test (2000 samples): loss ");
  ASSERT_NE(at, std::string::npos) << eval.output;
  double eval_loss = -1.0;
  char loss_name[16] = {};
  ASSERT_EQ(std::sscanf(eval.output.c_str() + at, " on attention-retrieval test (2000 samples): loss %lf (%15[a-z_])", &eval_loss,
                        loss_name),
            2)
      << eval.output;
  EXPECT_STREQ(loss_name, "mse");
  // Both printed to 4 decimals, from sums over different batch splits.
  EXPECT_NEAR(eval_loss, train_test_loss, 1.5e-4) << eval.output << train.output;
  EXPECT_EQ(eval.output.find("accuracy"), std::string::npos) << eval.output;

  const CliRun images = ember("eval --checkpoint " + checkpoint + " --data " + directory_);
  EXPECT_EQ(images.exit_code, 1) << images.output;
  // The data set is checked against the model before anything runs, every problem named.
  EXPECT_NE(images.output.find("the model takes inputs (16, 8) but " + directory_ + "/train-images-idx3-ubyte.gz holds 28x28 grey"),
            std::string::npos)
      << images.output;
}



TEST_F(CliTest, PlanPrintsEveryTensorTheTotalsAndTheWholeStep) {
  const CliRun run = ember("plan --model seed-cnn --batch-size 256 --micro-batch 16 --threads 2 --training --optimizer adam");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  for (const char* expected : {"tensor", "shape", "bytes", "offset", "first", "last",
                               "conv1 ", "(16, 32, 14, 14)", "conv1.saved ", "fc1.grad ", "(16, 128)",
                               "per micro-batch of 16 (training)", "  arena ", "  naive ", "  lower bound ", "x lower bound",
                               "whole step, batch 256 on 2 thread(s)", "  parameters ", "(4 lane(s))", "(adam, 2 block(s))",
                               "  arenas ", "(2 x ", "  total "}) {
    EXPECT_NE(run.output.find(expected), std::string::npos) << "missing '" << expected << "' in\n" << run.output;
  }
  // BatchNorm in training: sync points, and tensors kept per micro-batch across them.
  const CliRun resnet = ember("plan --model resnet --batch-size 64 --training");
  ASSERT_EQ(resnet.exit_code, 0) << resnet.output;
  for (const char* expected : {"(sync point)", "forward_partial stem.bn", "reduce_backward stem.bn", "(kept)",
                               "  phases ", "  kept ", "  batch ", "micro-batch(es) x "}) {
    EXPECT_NE(resnet.output.find(expected), std::string::npos) << "missing '" << expected << "' in\n" << resnet.output;
  }
  const CliRun inference = ember("plan --model attn-cnn --batch-size 64");
  ASSERT_EQ(inference.exit_code, 0) << inference.output;
  EXPECT_NE(inference.output.find("(inference)"), std::string::npos) << inference.output;
  EXPECT_EQ(inference.output.find("  optimizer "), std::string::npos) << inference.output;

  const std::vector<std::pair<std::string, std::string>> usage = {
      {"plan --batch-size 0", "--batch-size: expected a positive integer, found '0'"},
      {"plan --micro-batch x", "--micro-batch: expected a positive integer or auto, found 'x'"},
      {"plan --threads 65", "--threads: expected 1 to 64, found '65'"},
      {"plan --optimizer adagrad", "--optimizer: expected one of sgd|sgd-momentum|adam|adamw, found 'adagrad'"},
      {"plan --training=yes", "--training takes no value"},
      {"plan --frobnicate 1", "unknown flag --frobnicate"},
  };
  for (const auto& [arguments, message] : usage) {
    const CliRun bad = ember(arguments);
    EXPECT_EQ(bad.exit_code, 2) << arguments << ": " << bad.output;
    EXPECT_NE(bad.output.find(message), std::string::npos) << arguments << ": " << bad.output;
  }
  const CliRun missing = ember("plan --model /nonexistent/model.json");
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_NE(missing.output.find("/nonexistent/model.json"), std::string::npos) << missing.output;
}

// --memory-limit: every command that builds a model weighs it first. plan prints the
// figures and then refuses; train refuses before it allocates; a bad size is a usage error.
TEST_F(CliTest, MemoryLimitRefusesAModelBeyondIt) {
  const CliRun plan = ember("plan --model seed-cnn --batch-size 256 --training --memory-limit 16M");
  EXPECT_EQ(plan.exit_code, 1) << plan.output;
  EXPECT_NE(plan.output.find("  limit       16.00 MiB"), std::string::npos) << plan.output;
  EXPECT_NE(plan.output.find("seed-cnn: the step needs "), std::string::npos) << plan.output;
  EXPECT_NE(plan.output.find("the memory limit is 16.0 MiB"), std::string::npos) << plan.output;
  EXPECT_EQ(ember("plan --model seed-cnn --batch-size 256 --training --memory-limit 1G").exit_code, 0);

  const CliRun train = ember(train_flags() + "--epochs 1 --memory-limit 2M");
  EXPECT_EQ(train.exit_code, 1) << train.output;
  EXPECT_NE(train.output.find("seed-cnn: the parameter memory needs 6.14 MiB"), std::string::npos) << train.output;
  EXPECT_EQ(train.output.find("training:"), std::string::npos) << "refused before training starts: " << train.output;

  for (const std::string command : {"train", "plan", "eval --checkpoint x", "predict --checkpoint x --input y"}) {
    const CliRun bad = ember(command + " --memory-limit 4X");
    EXPECT_EQ(bad.exit_code, 2) << command << ": " << bad.output;
    EXPECT_NE(bad.output.find("--memory-limit: expected a size such as 512M, 4G or 1.5G (0: the available memory), found '4X'"),
              std::string::npos)
        << command << ": " << bad.output;
  }
}

}  // namespace
