// Starting weights from a file (ember train --init) and frozen parameters (--freeze):
// PyTorch state_dicts written by tests/pytorch/make_state_dicts.py load by name and give
// PyTorch's logits; every refused file names the file, the tensor, expected and found,
// and changes nothing.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/executor.h"
#include "engine/initial_weights.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "engine/safetensors.h"
#include "support/golden_file.h"

namespace ember {
namespace {

std::string data_path(const std::string& name) { return std::string(EMBER_TEST_DATA_DIR) + "/" + name; }

// The message of the ember::Error `body` throws ("" if none).
template <class Body>
std::string error_of(Body&& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_contains(const std::string& text, std::initializer_list<std::string> parts) {
  for (const std::string& part : parts) EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

class PyTorchStateDict : public ::testing::TestWithParam<const char*> {};

TEST_P(PyTorchStateDict, LoadsByNameAndGivesPyTorchsLogits) {
  const std::string model = GetParam();
  std::string stem = model;
  std::replace(stem.begin(), stem.end(), '-', '_');
  const testing::GoldenFile golden(stem + "_state_dict_logits.safetensors");
  const Graph graph = graph_from_spec(builtin_model_spec(model));
  ParameterStore parameters(graph);
  parameters.initialize(0);
  const InitialWeightsReport report = load_initial_weights(data_path(stem + "_state_dict.safetensors"), {}, parameters);
  EXPECT_EQ(report.loaded, static_cast<std::int64_t>(parameters.entries().size() + parameters.buffer_entries().size()));
  EXPECT_EQ(report.skipped, 0);
  EXPECT_EQ(report.unused, 0) << "every tensor of the state_dict has a place in the model";
  Executor executor(graph, parameters, ExecutorOptions{});
  const std::span<const float> expected = golden.tensor("logits");
  std::vector<float> logits(expected.size());
  executor.infer(golden.input.data(), 4, logits.data());
  double worst = 0.0;
  for (std::size_t i = 0; i < logits.size(); ++i) worst = std::max(worst, std::fabs(double(logits[i]) - expected[i]));
  std::printf("%s: max |ember - torch| %.3g over %zu logits\n", model.c_str(), worst, logits.size());
  EXPECT_LE(worst, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(BuiltIns, PyTorchStateDict, ::testing::Values("attn-cnn", "resnet"));

TEST(PyTorchNames, DifferOnlyForTheOutProjectionAndThePositionalEmbedding) {
  EXPECT_EQ(pytorch_name("block1.attention.out_proj_weight"), "block1.attention.out_proj.weight");
  EXPECT_EQ(pytorch_name("block1.attention.out_proj_bias"), "block1.attention.out_proj.bias");
  EXPECT_EQ(pytorch_name("block1.attention.in_proj_weight"), "block1.attention.in_proj_weight");
  EXPECT_EQ(pytorch_name("position.weight"), "position");
  EXPECT_EQ(pytorch_name("conv1.weight"), "conv1.weight");
  EXPECT_EQ(pytorch_name("stem.bn.running_var"), "stem.bn.running_var");
}

TEST(Prefixes, MatchWholeNameParts) {
  EXPECT_TRUE(matches_prefix("conv1.weight", "conv1"));
  EXPECT_TRUE(matches_prefix("conv1.weight", "conv1.weight"));
  EXPECT_TRUE(matches_prefix("conv1.weight", "conv1."));
  EXPECT_FALSE(matches_prefix("conv10.weight", "conv1"));
  EXPECT_FALSE(matches_prefix("conv1.weight", ""));
  EXPECT_TRUE(matches_prefix("block1.attention.in_proj_weight", "block1.attention"));
  EXPECT_EQ(split_names("fc2,conv1,,x.y"), (std::vector<std::string>{"fc2", "conv1", "x.y"}));
  EXPECT_TRUE(split_names("").empty());
}

// A seed-cnn and a file of its tensors, one of which the test changes.
class InitErrors : public ::testing::Test {
 protected:
  InitErrors() : graph(graph_from_spec(builtin_model_spec("seed-cnn"))), parameters(graph), source(graph) {
    parameters.initialize(1);
    source.initialize(2);
    before.assign(parameters.values().begin(), parameters.values().end());
  }
  // The seed-cnn tensors of `source`, `fc2.weight` with `fc2_rows` rows, without `drop`.
  std::string write_file(const std::string& name, std::int64_t fc2_rows = 10, const std::string& drop = "") {
    std::vector<TensorToWrite> tensors;
    std::vector<float> fc2(static_cast<std::size_t>(fc2_rows * 128), 0.5f);
    for (const ParameterEntry& e : source.entries()) {
      if (e.name == drop) continue;
      const auto values = source.values().subspan(static_cast<std::size_t>(e.offset), static_cast<std::size_t>(e.spec.shape.elements()));
      if (e.name == "fc2.weight") tensors.push_back({e.name, {fc2_rows, 128}, fc2});
      else tensors.push_back({e.name, {e.spec.shape.dims().begin(), e.spec.shape.dims().end()}, values});
    }
    const std::string path = ::testing::TempDir() + name;
    write_safetensors(path, tensors, {});
    return path;
  }
  void expect_unchanged() {
    EXPECT_TRUE(std::equal(before.begin(), before.end(), parameters.values().begin())) << "a refused file changed the weights";
  }
  Graph graph;
  ParameterStore parameters, source;
  std::vector<float> before;
};

TEST_F(InitErrors, AMissingTensorIsNamedWithItsShape) {
  const std::string path = write_file("init_missing.safetensors", 10, "fc2.bias");
  const std::string message = error_of([&] { load_initial_weights(path, {}, parameters); });
  expect_contains(message, {path, "no tensor 'fc2.bias'", "expected shape [10]", "found none", "--init-skip"});
  expect_unchanged();
}

TEST_F(InitErrors, AMisShapedTensorIsNamedWithBothShapes) {
  const std::string path = write_file("init_five_classes.safetensors", 5);
  const std::string message = error_of([&] { load_initial_weights(path, {}, parameters); });
  expect_contains(message, {path, "tensor 'fc2.weight'", "expected shape [10, 128]", "found [5, 128]"});
  expect_unchanged();
}

TEST_F(InitErrors, SkippedTensorsKeepTheirFreshInitialization) {
  const std::string path = write_file("init_skip.safetensors", 5);
  const std::vector<std::string> skip{"fc2"};
  const InitialWeightsReport report = load_initial_weights(path, skip, parameters);
  EXPECT_EQ(report.loaded, 4);
  EXPECT_EQ(report.skipped, 2);
  EXPECT_EQ(report.unused, 2);  // the file's fc2.weight and fc2.bias
  for (const ParameterEntry& e : parameters.entries()) {
    const auto n = static_cast<std::size_t>(e.spec.shape.elements()), at = static_cast<std::size_t>(e.offset);
    const auto& expected = e.name.starts_with("fc2") ? std::span<const float>(before).subspan(at, n) : source.values().subspan(at, n);
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), parameters.values().begin() + e.offset)) << e.name;
  }
}

TEST_F(InitErrors, AnUnknownSkipOrFreezePrefixIsNamed) {
  const std::string path = write_file("init_unknown_skip.safetensors");
  const std::vector<std::string> skip{"fc3"};
  expect_contains(error_of([&] { load_initial_weights(path, skip, parameters); }),
                  {"--init-skip: 'fc3' matches no tensor", "conv1, fc1, fc2"});
  const std::vector<std::string> freeze{"conv1", "conv"};
  expect_contains(error_of([&] { frozen_ranges(parameters, freeze); }), {"--freeze: 'conv' matches no tensor", "conv1, fc1, fc2"});
  expect_unchanged();
}

// A safetensors file of one tensor, fc2.bias of `dtype` and `bytes` bytes, written by hand.
std::string write_fc2_bias(const std::string& name, const std::string& dtype, int bytes) {
  const std::string path = ::testing::TempDir() + name;
  const std::string header = R"({"fc2.bias":{"dtype":")" + dtype + R"(","shape":[10],"data_offsets":[0,)" +
                             std::to_string(bytes) + "]}}";
  std::ofstream file(path, std::ios::binary);
  const std::uint64_t size = header.size();
  file.write(reinterpret_cast<const char*>(&size), 8);
  file << header << std::string(static_cast<std::size_t>(bytes), '\0');
  return path;
}

TEST_F(InitErrors, AWrongDtypeIsNamed) {
  const std::vector<std::string> skip{"conv1", "fc1", "fc2.weight"};
  const std::string int32 = write_fc2_bias("init_dtype_i32.safetensors", "I32", 40);
  expect_contains(error_of([&] { load_initial_weights(int32, skip, parameters); }),
                  {int32, "tensor 'fc2.bias'", "expected dtype F32, found I32"});
  // A half-precision state_dict (model.half()) is refused as the file is read.
  const std::string half = write_fc2_bias("init_dtype_f16.safetensors", "F16", 20);
  expect_contains(error_of([&] { load_initial_weights(half, skip, parameters); }), {half, "fc2.bias", "F32", "\"F16\""});
  expect_unchanged();
}

TEST_F(InitErrors, AFileThatIsNotSafetensorsIsNamed) {
  const std::string path = ::testing::TempDir() + "init_not_safetensors.txt";
  std::ofstream(path) << "not safetensors";
  EXPECT_NE(error_of([&] { load_initial_weights(path, {}, parameters); }).find(path), std::string::npos);
  const std::string missing = ::testing::TempDir() + "no_such_init.safetensors";
  EXPECT_NE(error_of([&] { load_initial_weights(missing, {}, parameters); }).find(missing), std::string::npos);
  expect_unchanged();
}

TEST(Freeze, FrozenValuesAndOptimizerStateStayBitwise) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  ParameterStore parameters(graph);
  parameters.initialize(4);
  for (std::size_t i = 0; i < parameters.gradients().size(); ++i) parameters.gradients()[i] = 0.01f * float(i % 7) - 0.03f;
  const std::vector<std::string> freeze{"conv1", "fc2.bias"};
  const std::vector<Optimizer::Range> frozen = frozen_ranges(parameters, freeze);
  ASSERT_EQ(frozen.size(), 3u);
  OptimizerOptions options;
  options.weight_decay = 0.1f;  // would move a frozen weight even with a zero gradient
  auto adamw = make_optimizer("adamw", options, parameters);
  adamw->freeze(frozen);
  const std::vector<float> before(parameters.values().begin(), parameters.values().end());
  for (int step = 0; step < 3; ++step) adamw->step(2);
  for (const ParameterEntry& e : parameters.entries()) {
    const bool is_frozen = e.name.starts_with("conv1") || e.name == "fc2.bias";
    const auto at = parameters.values().begin() + e.offset;
    const bool same = std::equal(at, at + e.spec.shape.elements(), before.begin() + e.offset);
    EXPECT_EQ(same, is_frozen) << e.name;
    for (const ConstOptimizerStateView& state : std::as_const(*adamw).state_tensors()) {
      const auto s = state.values.begin() + e.offset;
      const bool zero = std::all_of(s, s + e.spec.shape.elements(), [](float v) { return v == 0.0f; });
      EXPECT_EQ(zero, is_frozen) << state.name << " of " << e.name;
    }
  }
  EXPECT_THROW(adamw->freeze({{32, 16}}), Error);
}

}  // namespace
}  // namespace ember
