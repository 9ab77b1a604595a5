// Parity with PyTorch: the seed CNN at weights and a batch dumped by
// tests/pytorch/make_goldens.py (Debian's torch 1.13). Logits, loss, every parameter
// gradient and the parameters after 3 Adam steps must agree to 1e-4 relative error
// (max |ember - torch| / max |torch| per tensor).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "engine/safetensors.h"

namespace ember {
namespace {

constexpr double tolerance = 1e-4;

struct Golden {
  SafetensorsFile file = SafetensorsFile::read(std::string(EMBER_TEST_DATA_DIR) + "/seed_cnn_golden.safetensors");
  std::vector<float> input;
  std::vector<std::int32_t> labels;

  Golden() {
    const SafetensorsTensor& x = file.tensor("input");
    input.assign(reinterpret_cast<const float*>(x.data.data()), reinterpret_cast<const float*>(x.data.data()) + x.elements());
    const SafetensorsTensor& y = file.tensor("labels");
    EXPECT_EQ(y.dtype, "I64");
    for (std::int64_t i = 0; i < y.elements(); ++i) {
      std::int64_t label = 0;
      std::memcpy(&label, y.data.data() + i * 8, 8);
      labels.push_back(static_cast<std::int32_t>(label));
    }
  }

  std::span<const float> tensor(const std::string& name) const {
    const SafetensorsTensor& t = file.tensor(name);
    return {reinterpret_cast<const float*>(t.data.data()), static_cast<std::size_t>(t.elements())};
  }

  void load_parameters(ParameterStore& parameters) const {
    for (const ParameterEntry& e : parameters.entries()) {
      const auto values = tensor("param." + e.name);
      ASSERT_EQ(static_cast<std::int64_t>(values.size()), e.spec.shape.elements()) << e.name;
      std::copy(values.begin(), values.end(), parameters.values().begin() + e.offset);
    }
  }
};

double relative_error(std::span<const float> ours, std::span<const float> theirs) {
  double max_difference = 0.0, max_reference = 0.0;
  for (std::size_t i = 0; i < theirs.size(); ++i) {
    max_difference = std::max(max_difference, std::fabs(static_cast<double>(ours[i]) - theirs[i]));
    max_reference = std::max(max_reference, std::fabs(static_cast<double>(theirs[i])));
  }
  return max_difference / std::max(max_reference, 1e-30);
}

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
  const double logits_error = relative_error(logits, golden.tensor("logits"));
  std::printf("logits: max relative error %.3g\n", logits_error);
  EXPECT_LE(logits_error, tolerance);

  const CrossEntropyLoss loss;
  const StepResult result = executor.train_step(golden.input.data(), 8, Targets{golden.labels, nullptr}, loss, 0);
  const double torch_loss = golden.tensor("loss")[0];
  std::printf("loss: ember %.7f torch %.7f\n", result.mean_loss(), torch_loss);
  EXPECT_LE(std::fabs(result.mean_loss() - torch_loss) / torch_loss, tolerance);
  for (const ParameterEntry& e : parameters.entries()) {
    const auto ours = parameters.gradients().subspan(static_cast<std::size_t>(e.offset), static_cast<std::size_t>(e.spec.shape.elements()));
    const double error = relative_error(ours, golden.tensor("grad." + e.name));
    std::printf("grad %-12s max relative error %.3g\n", e.name.c_str(), error);
    EXPECT_LE(error, tolerance) << e.name;
  }
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
    const double error = relative_error(ours, golden.tensor("after3." + e.name));
    std::printf("after 3 steps %-12s max relative error %.3g\n", e.name.c_str(), error);
    EXPECT_LE(error, tolerance) << e.name;
  }
}

// The whole batch in one micro-batch, and split unevenly across two threads.
INSTANTIATE_TEST_SUITE_P(Splits, SeedCnnParity, ::testing::Values(ParityCase{1, 8}, ParityCase{2, 3}));

}  // namespace
}  // namespace ember
