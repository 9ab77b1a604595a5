// Parity with PyTorch: the seed CNN at weights and a batch dumped by
// tests/pytorch/make_goldens.py (Debian's torch 1.13). Logits, loss and every parameter
// gradient must agree to 1e-4 relative error (max |ember - torch| / max |torch| per
// tensor), the parameters after 3 Adam steps to 3e-4 (see tolerance_after_adam).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "support/forced_isa.h"
#include "support/golden_file.h"

namespace ember {
namespace {

constexpr double tolerance = 1e-4;
// The parameters after Adam steps: Adam divides each element's gradient by that element's
// own running RMS, so an element whose gradient is a near-cancelling sum, far below the
// tensor's largest, carries its relative rounding error into its update at full size (up
// to the learning rate). Measured on fc1.weight, whose gradients agree to 2e-7: 8.4e-5
// with conv1 and pool1 on oneDNN, 1.6e-4 with them fused in simd's direct kernel (its conv
// sums in another order). A wrong gradient moves an element by about the learning rate,
// 1e-3 here, ~0.08 of fc1.weight's largest element.
constexpr double tolerance_after_adam = 3e-4;

struct Golden : testing::GoldenFile {
  std::vector<std::int32_t> labels;
  Golden() : GoldenFile("seed_cnn_golden.safetensors"), labels(int_tensor("labels")) {}
};

struct ParityCase {
  int threads;
  std::int64_t micro_batch;
};

class SeedCnnParity : public ::testing::TestWithParam<ParityCase> {};

TEST_P(SeedCnnParity, LogitsLossAndGradientsMatchPyTorch) {
  const Golden golden;
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  ParameterStore parameters(graph);
  golden.load_parameters(parameters);
  ExecutorOptions options;
  options.threads = GetParam().threads;
  options.micro_batch = GetParam().micro_batch;
  Executor executor(graph, parameters, options);

  std::vector<float> logits(8 * 10);
  executor.infer(golden.input.data(), 8, logits.data());
  const double logits_error = testing::relative_error(logits, golden.tensor("logits"));
  std::printf("logits: max relative error %.3g\n", logits_error);
  EXPECT_LE(logits_error, tolerance);

  const CrossEntropyLoss loss;
  const StepResult result = executor.train_step(golden.input.data(), 8, Targets{golden.labels, nullptr}, loss, 0);
  const double torch_loss = golden.tensor("loss")[0];
  std::printf("loss: ember %.7f torch %.7f\n", result.mean_loss(), torch_loss);
  EXPECT_LE(std::fabs(result.mean_loss() - torch_loss) / torch_loss, tolerance);
  testing::expect_gradients_match(parameters, golden, tolerance);
}

TEST_P(SeedCnnParity, ParametersAfterThreeAdamStepsMatchPyTorch) {
  const Golden golden;
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  ParameterStore parameters(graph);
  golden.load_parameters(parameters);
  ExecutorOptions options;
  options.threads = GetParam().threads;
  options.micro_batch = GetParam().micro_batch;
  Executor executor(graph, parameters, options);
  OptimizerOptions adam;
  adam.learning_rate = 1e-3f;
  auto optimizer = make_optimizer("adam", adam, parameters);
  const CrossEntropyLoss loss;
  for (int step = 0; step < 3; ++step) {
    executor.train_step(golden.input.data(), 8, Targets{golden.labels, nullptr}, loss, 0);
    optimizer->step();
  }
  for (const ParameterEntry& e : parameters.entries()) {
    const auto ours = parameters.values().subspan(static_cast<std::size_t>(e.offset), static_cast<std::size_t>(e.spec.shape.elements()));
    const double error = testing::relative_error(ours, golden.tensor("after3." + e.name));
    std::printf("after 3 steps %-12s max relative error %.3g\n", e.name.c_str(), error);
    EXPECT_LE(error, tolerance_after_adam) << e.name;
  }
}

// The whole batch in one micro-batch, and split unevenly across two threads.
INSTANTIATE_TEST_SUITE_P(Splits, SeedCnnParity, ::testing::Values(ParityCase{1, 8}, ParityCase{2, 3}),
                         [](const ::testing::TestParamInfo<ParityCase>& info) {
                           return std::to_string(info.param.threads) + "_threads_micro_batch_" + std::to_string(info.param.micro_batch);
                         });

}  // namespace
}  // namespace ember
