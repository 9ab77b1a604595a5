// Parity with PyTorch for BatchNorm in training and eval mode: a small residual network
// (BatchNormNet in tests/pytorch/make_goldens.py: a conv-bn-relu stem, a residual_block
// that strides and widens, global average pooling, Linear -> batch_norm1d -> ReLU, a
// Linear head) at the weights and batch of tests/data/batch_norm_golden.safetensors.
// Training mode normalizes with the whole batch's statistics, however the executor cuts
// the batch into micro-batches and threads, and updates the running statistics once per
// step (PyTorch: the unbiased batch variance, momentum 0.1); eval mode normalizes with
// the running statistics. Loss, every parameter gradient, the running statistics after
// one step, and after 3 SGD steps (momentum 0.9, lr 0.1) every parameter, the running
// statistics and the eval-mode logits must agree to 1e-4 relative error. (The golden's
// training-mode logits, "output", are checked through the loss: the executor does not
// return a training step's outputs.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>

#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "support/golden_file.h"

namespace ember {
namespace {

constexpr double tolerance = 1e-4;
constexpr std::int64_t batch = 8;

// BatchNormNet's layers under PyTorch's names, so "param.<name>" and "grad.<name>" of the
// golden are ember's parameter names.
const char* const batch_norm_net = R"({
  "input": [1, 28, 28],
  "layers": [
    {"name": "stem.conv", "kind": "conv2d", "in_channels": 1, "out_channels": 4, "kernel": 3, "padding": 1, "bias": false},
    {"name": "stem.bn", "kind": "batch_norm2d", "num_features": 4},
    {"name": "stem.relu", "kind": "relu"},
    {"name": "block", "kind": "residual_block", "in_channels": 4, "out_channels": 8, "stride": 2},
    {"name": "pool", "kind": "global_avg_pool"},
    {"name": "fc", "kind": "linear", "in_features": 8, "out_features": 6},
    {"name": "bn", "kind": "batch_norm1d", "num_features": 6},
    {"name": "relu", "kind": "relu"},
    {"name": "head", "kind": "linear", "in_features": 6, "out_features": 10}
  ]
})";

struct Golden : testing::GoldenFile {
  std::vector<std::int32_t> labels;
  Golden() : GoldenFile("batch_norm_golden.safetensors"), labels(int_tensor("labels")) {}
};

struct ParityCase {
  int threads;
  std::int64_t micro_batch;
};
// For test names that do not show the struct's padding bytes.
void PrintTo(const ParityCase& c, std::ostream* out) { *out << c.threads << " threads, micro-batch " << c.micro_batch; }

class BatchNormParity : public ::testing::TestWithParam<ParityCase> {
 protected:
  BatchNormParity() : graph_(graph_from_spec(Json::parse(batch_norm_net), "batch_norm_net")), parameters_(graph_) {
    // The buffers' own initialization: running mean 0, variance 1, no batches seen, as
    // PyTorch's; the parameters are then the golden's.
    parameters_.initialize(0);
    golden_.load_parameters(parameters_);
    ExecutorOptions options;
    options.threads = GetParam().threads;
    options.micro_batch = GetParam().micro_batch;
    executor_ = std::make_unique<Executor>(graph_, parameters_, options);
  }

  StepResult train_step() {
    return executor_->train_step(golden_.input.data(), batch, Targets{golden_.labels, nullptr}, loss_, 0);
  }

  // Every buffer against the golden's "<prefix><name>" (num_batches_tracked is I64 there).
  void expect_buffers_match(const std::string& prefix) const {
    ASSERT_FALSE(parameters_.buffer_entries().empty());
    for (const ParameterEntry& e : parameters_.buffer_entries()) {
      const auto ours = parameters_.buffers().subspan(static_cast<std::size_t>(e.offset),
                                                      static_cast<std::size_t>(e.spec.shape.elements()));
      const std::string name = prefix + e.name;
      if (e.name.ends_with("num_batches_tracked")) {
        const std::vector<std::int32_t> theirs = golden_.int_tensor(name);
        ASSERT_EQ(ours.size(), theirs.size()) << name;
        EXPECT_EQ(ours[0], static_cast<float>(theirs[0])) << name;
        continue;
      }
      const double error = testing::relative_error(ours, golden_.tensor(name));
      std::printf("%-40s max relative error %.3g\n", name.c_str(), error);
      EXPECT_LE(error, tolerance) << name;
    }
  }

  Golden golden_;
  Graph graph_;
  ParameterStore parameters_;
  std::unique_ptr<Executor> executor_;
  CrossEntropyLoss loss_;
};

TEST_P(BatchNormParity, OneTrainingStepMatchesPyTorch) {
  const StepResult result = train_step();
  const double torch_loss = golden_.tensor("loss")[0];
  std::printf("loss: ember %.7f torch %.7f\n", result.mean_loss(), torch_loss);
  EXPECT_LE(std::fabs(result.mean_loss() - torch_loss) / torch_loss, tolerance);
  testing::expect_gradients_match(parameters_, golden_, tolerance);
  expect_buffers_match("after1.");
}

TEST_P(BatchNormParity, ThreeSgdStepsThenEvalModeMatchPyTorch) {
  OptimizerOptions sgd;
  sgd.learning_rate = 0.1f;
  sgd.momentum = 0.9f;
  auto optimizer = make_optimizer("sgd", sgd, parameters_);
  for (int step = 0; step < 3; ++step) {
    train_step();
    optimizer->step();
  }
  for (const ParameterEntry& e : parameters_.entries()) {
    const auto ours = parameters_.values().subspan(static_cast<std::size_t>(e.offset),
                                                   static_cast<std::size_t>(e.spec.shape.elements()));
    const double error = testing::relative_error(ours, golden_.tensor("after3." + e.name));
    std::printf("after 3 steps %-28s max relative error %.3g\n", e.name.c_str(), error);
    EXPECT_LE(error, tolerance) << e.name;
  }
  expect_buffers_match("after3.");

  std::vector<float> logits(batch * 10);
  executor_->infer(golden_.input.data(), batch, logits.data());
  const double error = testing::relative_error(logits, golden_.tensor("eval.output"));
  std::printf("eval-mode logits: max relative error %.3g\n", error);
  EXPECT_LE(error, tolerance);
}

// Eval mode alone, from PyTorch's state after the 3 steps: its parameters and running
// statistics loaded, the logits must be PyTorch's eval-mode logits.
TEST_P(BatchNormParity, EvalModeFromPyTorchsStateMatchesPyTorch) {
  for (const ParameterEntry& e : parameters_.entries()) {
    const auto theirs = golden_.tensor("after3." + e.name);
    ASSERT_EQ(static_cast<std::int64_t>(theirs.size()), e.spec.shape.elements()) << e.name;
    std::copy(theirs.begin(), theirs.end(), parameters_.values().begin() + e.offset);
  }
  for (const ParameterEntry& e : parameters_.buffer_entries()) {
    const std::string name = "after3." + e.name;
    if (e.name.ends_with("num_batches_tracked")) {
      parameters_.buffers()[static_cast<std::size_t>(e.offset)] = static_cast<float>(golden_.int_tensor(name)[0]);
      continue;
    }
    const auto theirs = golden_.tensor(name);
    ASSERT_EQ(static_cast<std::int64_t>(theirs.size()), e.spec.shape.elements()) << name;
    std::copy(theirs.begin(), theirs.end(), parameters_.buffers().begin() + e.offset);
  }
  std::vector<float> logits(batch * 10);
  executor_->infer(golden_.input.data(), batch, logits.data());
  const double error = testing::relative_error(logits, golden_.tensor("eval.output"));
  std::printf("eval-mode logits: max relative error %.3g\n", error);
  EXPECT_LE(error, tolerance);
}

// The whole batch in one micro-batch, and split unevenly across two threads: the
// statistics are the whole batch's either way.
INSTANTIATE_TEST_SUITE_P(Splits, BatchNormParity, ::testing::Values(ParityCase{1, 8}, ParityCase{2, 3}),
                         [](const ::testing::TestParamInfo<ParityCase>& info) {
                           return std::to_string(info.param.threads) + "_threads_micro_batch_" +
                                  std::to_string(info.param.micro_batch);
                         });

}  // namespace
}  // namespace ember
