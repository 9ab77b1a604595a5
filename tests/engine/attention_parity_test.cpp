// Parity with PyTorch for attention (goldens from tests/pytorch/make_goldens.py, Debian's
// torch 1.13): one nn.MultiheadAttention against ember's multi_head_attention layer, and
// the attn-cnn model against the same network in PyTorch, at the same weights and batch.
// Outputs, loss and every parameter gradient agree to 1e-4 relative error per tensor.
#include <gtest/gtest.h>

#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "support/forced_isa.h"
#include "support/golden_file.h"

namespace ember {
namespace {

constexpr double tolerance = 1e-4;

void expect_step_matches(const testing::GoldenFile& golden, const Graph& graph, std::int64_t batch, const Loss& loss,
                         const Targets& targets, int threads) {
  ParameterStore parameters(graph);
  golden.load_parameters(parameters);
  ExecutorOptions options;
  options.threads = threads;
  options.micro_batch = 3;  // uneven micro-batches
  Executor executor(graph, parameters, options);

  const auto expected_output = golden.tensor("output");
  std::vector<float> output(expected_output.size());
  executor.infer(golden.input.data(), batch, output.data());
  const double output_error = testing::relative_error(output, expected_output);
  std::printf("output: max relative error %.3g\n", output_error);
  EXPECT_LE(output_error, tolerance);

  const StepResult result = executor.train_step(golden.input.data(), batch, targets, loss, 0);
  const double torch_loss = golden.tensor("loss")[0];
  std::printf("loss: ember %.7f torch %.7f\n", result.mean_loss(), torch_loss);
  EXPECT_LE(std::fabs(result.mean_loss() - torch_loss) / torch_loss, tolerance);
  testing::expect_gradients_match(parameters, golden, tolerance);
}

TEST(AttentionParity, MultiHeadAttentionMatchesTorchMultiheadAttention) {
  const testing::GoldenFile golden("mha_golden.safetensors");
  const Graph graph = graph_from_spec(Json::parse(R"({
    "input": [11, 32],
    "layers": [{"name": "attention", "kind": "multi_head_attention", "d_model": 32, "heads": 4}]})"));
  const auto target = golden.tensor("target");
  const MeanSquaredErrorLoss loss;
  for (int threads : {1, 2}) expect_step_matches(golden, graph, 3, loss, Targets{{}, target.data()}, threads);
}

TEST(AttentionParity, AttnCnnMatchesPyTorch) {
  const testing::GoldenFile golden("attn_cnn_golden.safetensors");
  const Graph graph = graph_from_spec(builtin_model_spec("attn-cnn"));
  const std::vector<std::int32_t> labels = golden.int_tensor("target");
  const CrossEntropyLoss loss;
  for (int threads : {1, 2}) expect_step_matches(golden, graph, 4, loss, Targets{labels, nullptr}, threads);
}

}  // namespace
}  // namespace ember
