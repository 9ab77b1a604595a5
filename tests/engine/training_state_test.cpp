// Bad-input handling of engine/training_state (checkpoints): a save/load round trip
// restores parameters and optimizer state bitwise; unknown versions, foreign models,
// corrupted and truncated files are refused with a message naming the file and field.
#include "engine/training_state.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/error.h"
#include "support/file_helpers.h"
#include "engine/model_spec.h"
#include "engine/safetensors.h"
#include "support/buffered_layer.h"

namespace ember {
namespace {

namespace fs = std::filesystem;
using testing::Bytes;
using testing::FileSizeLimit;
using testing::contains;
using testing::error_of;
using testing::header_length_of;
using testing::read_file;
using testing::starts_with;
using testing::write_file;

// Replaces the one occurrence of `from` in the file's bytes by `to` (same length, so the
// header length stays right).
void replace_once(Bytes& bytes, const std::string& from, const std::string& to) {
  ASSERT_EQ(from.size(), to.size());
  const std::string text(bytes.begin(), bytes.end());
  const std::size_t at = text.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  ASSERT_EQ(text.find(from, at + 1), std::string::npos) << from << " occurs twice";
  std::memcpy(bytes.data() + at, to.data(), to.size());
}

// input (4) -> fc1 (3) -> relu -> <head> (outputs)
Json tiny_spec(std::int64_t outputs = 2, const std::string& head = "fc2", bool relu = true) {
  Json spec = Json::parse(R"({"input": [4], "layers": [{"name": "fc1", "kind": "linear", "in_features": 4, "out_features": 3}]})");
  if (relu) spec["layers"].push_back({{"name", "relu"}, {"kind", "relu"}});
  spec["layers"].push_back({{"name", head}, {"kind", "linear"}, {"in_features", 3}, {"out_features", outputs}});
  return spec;
}

OptimizerOptions sgd_momentum() {
  OptimizerOptions options;
  options.learning_rate = 0.1f;
  options.momentum = 0.9f;
  return options;
}

// A model, its parameters and an optimizer over them.
struct Trainee {
  Trainee(const Json& spec, const std::string& optimizer_name, const OptimizerOptions& options = {}, std::uint64_t seed = 1)
      : Trainee(graph_from_spec(spec), optimizer_name, options, seed) {}
  Trainee(Graph model, const std::string& optimizer_name, const OptimizerOptions& options = {}, std::uint64_t seed = 1)
      : graph(std::move(model)), parameters(graph) {
    parameters.initialize(seed);
    optimizer = make_optimizer(optimizer_name, options, parameters);
  }

  // Deterministic made-up gradients; `n` optimizer steps.
  void train(int n) {
    for (int s = 0; s < n; ++s) {
      const int step = static_cast<int>(optimizer->step_count());
      std::fill(parameters.gradients().begin(), parameters.gradients().end(), 0.0f);
      for (const ParameterEntry& entry : parameters.entries()) {
        for (std::int64_t i = 0; i < entry.spec.shape.elements(); ++i) {
          parameters.gradients()[static_cast<std::size_t>(entry.offset + i)] =
              0.25f * std::sin(static_cast<float>(13 * step + entry.offset + i));
        }
      }
      optimizer->step();
    }
  }

  TrainingState state(int epoch, std::int64_t step) const {
    TrainingState s;
    s.model_spec = spec_from_graph(graph, "tiny");
    s.optimizer = {{"name", std::string(optimizer->name())}, {"learning_rate", optimizer->learning_rate()}};
    s.run = {{"seed", 7}, {"data", "synthetic"}};
    s.epoch = epoch;
    s.step = step;
    return s;
  }

  std::vector<float> values() const { return {parameters.values().begin(), parameters.values().end()}; }
  std::vector<float> buffers() const { return {parameters.buffers().begin(), parameters.buffers().end()}; }

  // What a training forward would leave in the buffers: distinct values, one a -0.0
  // and one a subnormal, which only a bitwise copy keeps.
  void set_buffers(float start) {
    for (const ParameterEntry& entry : parameters.buffer_entries()) {
      for (std::int64_t i = 0; i < entry.spec.shape.elements(); ++i) {
        parameters.buffers()[static_cast<std::size_t>(entry.offset + i)] = start + 0.5f * static_cast<float>(entry.offset + i);
      }
    }
    parameters.buffers()[0] = -0.0f;
    parameters.buffers()[1] = 1e-40f;
  }

  Graph graph;
  ParameterStore parameters;
  std::unique_ptr<Optimizer> optimizer;
};

// Every buffer's values, bitwise.
void expect_same_buffers(const ParameterStore& expected, const ParameterStore& found) {
  ASSERT_EQ(expected.buffer_entries().size(), found.buffer_entries().size());
  for (const ParameterEntry& entry : expected.buffer_entries()) {
    const auto begin = static_cast<std::size_t>(entry.offset);
    const auto bytes = static_cast<std::size_t>(entry.spec.shape.elements()) * sizeof(float);
    EXPECT_EQ(std::memcmp(expected.buffers().data() + begin, found.buffers().data() + begin, bytes), 0) << entry.name;
  }
}

// Every entry's values, and every state block's slice of it, bitwise.
void expect_same_state(const Trainee& expected, const Trainee& found) {
  ASSERT_EQ(expected.parameters.entries().size(), found.parameters.entries().size());
  const auto expected_state = std::as_const(*expected.optimizer).state_tensors();
  const auto found_state = std::as_const(*found.optimizer).state_tensors();
  ASSERT_EQ(expected_state.size(), found_state.size());
  for (const ParameterEntry& entry : expected.parameters.entries()) {
    const auto begin = static_cast<std::size_t>(entry.offset);
    const auto bytes = static_cast<std::size_t>(entry.spec.shape.elements()) * sizeof(float);
    EXPECT_EQ(std::memcmp(expected.parameters.values().data() + begin, found.parameters.values().data() + begin, bytes), 0)
        << entry.name;
    for (std::size_t b = 0; b < expected_state.size(); ++b) {
      EXPECT_EQ(expected_state[b].name, found_state[b].name);
      EXPECT_EQ(std::memcmp(expected_state[b].values.data() + begin, found_state[b].values.data() + begin, bytes), 0)
          << expected_state[b].name << " of " << entry.name;
    }
  }
  EXPECT_EQ(expected.optimizer->step_count(), found.optimizer->step_count());
}

// Every value and state float of a trainee, and its step count, to compare before and after.
struct Snapshot {
  explicit Snapshot(const Trainee& trainee)
      : values(trainee.values()), buffers(trainee.buffers()), steps(trainee.optimizer->step_count()) {
    for (const ConstOptimizerStateView& block : std::as_const(*trainee.optimizer).state_tensors()) {
      state.emplace_back(block.values.begin(), block.values.end());
    }
  }
  bool operator==(const Snapshot&) const = default;

  std::vector<float> values;
  std::vector<float> buffers;
  std::int64_t steps;
  std::vector<std::vector<float>> state;
};

class CheckpointFiles : public testing::TempDirectoryTest {
 protected:
  // An Adam run of three steps saved to `name`.
  void save_adam(const std::string& name) {
    Trainee trainee(tiny_spec(), "adam");
    trainee.train(3);
    save_training_state(path(name), trainee.state(2, 3), trainee.parameters, *trainee.optimizer);
  }

  // Copies checkpoint `from` to `to` through the safetensors writer, editing its metadata.
  void rewrite(const std::string& from, const std::string& to,
               const std::function<void(std::map<std::string, std::string>&)>& edit) {
    const SafetensorsFile file = SafetensorsFile::read(path(from));
    std::vector<TensorToWrite> tensors;
    for (const auto& [name, tensor] : file.tensors()) tensors.push_back({name, tensor.shape, file.floats(name, tensor.shape)});
    std::map<std::string, std::string> metadata = file.metadata();
    edit(metadata);
    write_safetensors(path(to), tensors, metadata);
  }

  // A checkpoint of the buffered model (support/buffered_layer.h) after two Adam steps.
  void save_buffered(const std::string& name) {
    Trainee trainee(testing::buffered_graph(), "adam");
    trainee.train(2);
    trainee.set_buffers(3.0f);
    save_training_state(path(name), trainee.state(1, 2), trainee.parameters, *trainee.optimizer);
  }

  // Copies checkpoint `from` to `to`, without the tensors `drop` and with `add` added.
  void rewrite_tensors(const std::string& from, const std::string& to, const std::set<std::string>& drop,
                       const std::vector<TensorToWrite>& add = {}) {
    const SafetensorsFile file = SafetensorsFile::read(path(from));
    std::vector<TensorToWrite> tensors(add);
    for (const auto& [name, tensor] : file.tensors()) {
      if (drop.count(name) == 0) tensors.push_back({name, tensor.shape, file.floats(name, tensor.shape)});
    }
    write_safetensors(path(to), tensors, file.metadata());
  }

  // The message of loading `name` into a fresh Adam trainee of the tiny model.
  std::string load_error(const std::string& name) {
    Trainee trainee(tiny_spec(), "adam");
    return error_of([&] { load_training_state(path(name), trainee.parameters, *trainee.optimizer); });
  }

};

TEST_F(CheckpointFiles, SaveLoadRoundTripsParametersAndOptimizerState) {
  for (const auto& [name, options] : {std::pair<std::string, OptimizerOptions>{"adam", {}},
                                      std::pair<std::string, OptimizerOptions>{"adamw", {}},
                                      std::pair<std::string, OptimizerOptions>{"sgd", sgd_momentum()}}) {
    SCOPED_TRACE(name);
    Trainee original(tiny_spec(), name, options, 1);
    original.train(3);
    const TrainingState saved = original.state(2, 3);
    save_training_state(path("ck"), saved, original.parameters, *original.optimizer);
    EXPECT_EQ(std::distance(fs::directory_iterator(directory_), fs::directory_iterator()), 1) << "no temporary left";

    Trainee restored(tiny_spec(), name, options, 99);  // other initial values
    ASSERT_NE(restored.values(), original.values());
    const TrainingState loaded = load_training_state(path("ck"), restored.parameters, *restored.optimizer);
    EXPECT_EQ(loaded.model_spec, saved.model_spec);
    EXPECT_EQ(loaded.optimizer, saved.optimizer);
    EXPECT_EQ(loaded.run, saved.run);
    EXPECT_EQ(loaded.epoch, 2);
    EXPECT_EQ(loaded.step, 3);
    expect_same_state(original, restored);

    // Continuing gives the same numbers: the step count (Adam's bias correction) and the
    // moments came back, not only the weights.
    original.train(2);
    restored.train(2);
    expect_same_state(original, restored);
  }
}

TEST_F(CheckpointFiles, TrainedModelLoadsFromACheckpoint) {
  Trainee original(tiny_spec(), "adam");
  original.train(2);
  save_training_state(path("ck"), original.state(1, 2), original.parameters, *original.optimizer);
  const TrainedModel model = load_trained_model(path("ck"));
  EXPECT_EQ(spec_from_graph(*model.graph, "tiny"), spec_from_graph(original.graph, "tiny"));
  EXPECT_EQ(model.run, original.state(1, 2).run);
  ASSERT_EQ(model.parameters->entries().size(), original.parameters.entries().size());
  for (std::size_t e = 0; e < original.parameters.entries().size(); ++e) {
    const ParameterEntry& entry = original.parameters.entries()[e];
    EXPECT_EQ(std::memcmp(model.parameters->value_data(static_cast<int>(e)), original.parameters.value_data(static_cast<int>(e)),
                          static_cast<std::size_t>(entry.spec.shape.elements()) * sizeof(float)),
              0)
        << entry.name;
  }
}

// Buffers are saved under PyTorch's state_dict names beside the parameters, never with
// optimizer state, and come back bitwise: in a resumed run, and in a model for inference.
TEST_F(CheckpointFiles, BuffersRoundTripBitwise) {
  Trainee original(testing::buffered_graph(), "adam");
  original.train(2);
  original.set_buffers(3.0f);
  save_training_state(path("ck"), original.state(1, 2), original.parameters, *original.optimizer);

  const SafetensorsFile file = SafetensorsFile::read(path("ck"));
  EXPECT_EQ(file.tensor("bn1.running_mean").shape, (std::vector<std::int64_t>{3}));
  EXPECT_EQ(file.tensor("bn1.running_var").shape, (std::vector<std::int64_t>{3}));
  EXPECT_EQ(file.tensor("bn1.num_batches_tracked").shape, (std::vector<std::int64_t>{1}));
  EXPECT_EQ(file.tensor("bn1.num_batches_tracked").dtype, "F32");
  // 5 parameters, 3 buffers, Adam's two moments of the 5 parameters only.
  EXPECT_EQ(file.tensors().size(), 5u + 3u + 2u * 5u);
  EXPECT_EQ(file.tensors().count("optimizer.exp_avg.bn1.running_mean"), 0u);

  Trainee restored(testing::buffered_graph(), "adam", {}, 99);
  ASSERT_NE(restored.buffers(), original.buffers());
  load_training_state(path("ck"), restored.parameters, *restored.optimizer);
  expect_same_state(original, restored);
  expect_same_buffers(original.parameters, restored.parameters);
  EXPECT_EQ(std::signbit(restored.parameters.buffers()[0]), true) << "-0.0 came back as +0.0";

  // Resumed: further steps change parameters and moments alike, and leave buffers alone.
  original.train(2);
  restored.train(2);
  expect_same_state(original, restored);
  expect_same_buffers(original.parameters, restored.parameters);

  const std::unique_ptr<ParameterStore> weights = load_model_weights(path("ck"), testing::buffered_graph());
  expect_same_buffers(restored.parameters, *weights);
  const SafetensorsFile saved = SafetensorsFile::read(path("ck"));
  for (const ParameterEntry& entry : weights->entries()) {
    const std::span<const float> stored = saved.floats(entry.name, entry.spec.shape.dims());
    EXPECT_EQ(std::memcmp(weights->value_data(weights->find(entry.name)), stored.data(), stored.size_bytes()), 0) << entry.name;
  }
}

// A model without buffers writes the same tensors as before buffers existed.
TEST_F(CheckpointFiles, ModelWithoutBuffersWritesOnlyParametersAndOptimizerState) {
  save_adam("ck");
  std::vector<std::string> names;
  const SafetensorsFile file = SafetensorsFile::read(path("ck"));
  for (const auto& [name, tensor] : file.tensors()) names.push_back(name);
  std::vector<std::string> expected;
  for (const char* prefix : {"", "optimizer.exp_avg.", "optimizer.exp_avg_sq."}) {
    for (const char* parameter : {"fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"}) expected.push_back(prefix + std::string(parameter));
  }
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(names, expected);
}

TEST_F(CheckpointFiles, MissingOrMisshapenBufferIsRefused) {
  save_buffered("ck");
  const std::vector<float> four(4, 1.0f);
  rewrite_tensors("ck", "missing", {"bn1.running_var"});
  rewrite_tensors("ck", "misshapen", {"bn1.running_var"}, {{"bn1.running_var", {4}, four}});
  rewrite_tensors("ck", "scalar", {"bn1.num_batches_tracked"}, {{"bn1.num_batches_tracked", {}, std::span(four).first(1)}});
  // As a checkpoint written before the layer had buffers.
  rewrite_tensors("ck", "old", {"bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"});
  const std::map<std::string, std::string> expected{
      {"missing", path("missing") + ": no tensor 'bn1.running_var'"},
      {"misshapen", path("misshapen") + ": tensor 'bn1.running_var' has shape [4], expected [3]"},
      {"scalar", path("scalar") + ": tensor 'bn1.num_batches_tracked' has shape [], expected [1]"},
      {"old", path("old") + ": no tensor 'bn1.running_mean'"},
  };
  for (const auto& [name, message] : expected) {
    SCOPED_TRACE(name);
    Trainee trainee(testing::buffered_graph(), "adam", {}, 42);
    trainee.train(1);
    trainee.set_buffers(7.0f);
    const Snapshot snapshot(trainee);
    EXPECT_EQ(error_of([&] { load_training_state(path(name), trainee.parameters, *trainee.optimizer); }), message);
    EXPECT_TRUE(Snapshot(trainee) == snapshot) << "the refused load changed the trainee";
    EXPECT_EQ(error_of([&] { load_model_weights(path(name), testing::buffered_graph()); }), message);
  }
}

// The buffer block counts against the memory limit before the store is allocated.
TEST_F(CheckpointFiles, BufferBlockCountsAgainstTheMemoryLimit) {
  save_buffered("ck");
  // Values and gradients take 320 bytes each, the buffers 192.
  EXPECT_NO_THROW(load_model_weights(path("ck"), testing::buffered_graph(), 832));
  const std::string message = error_of([&] { load_model_weights(path("ck"), testing::buffered_graph(), 831); });
  EXPECT_TRUE(starts_with(message, path("ck") + ": the parameter memory needs 832 bytes")) << message;
  EXPECT_TRUE(contains(message, "and one of buffers")) << message;
}

TEST_F(CheckpointFiles, UnknownFormatVersionIsRefused) {
  save_adam("ck");
  rewrite("ck", "v2", [](auto& metadata) { metadata["format_version"] = std::string("2"); });
  EXPECT_EQ(load_error("v2"), path("v2") + ": format_version 2 is not supported by this ember (reads version 1)");
  EXPECT_EQ(error_of([&] { load_trained_model(path("v2")); }),
            path("v2") + ": format_version 2 is not supported by this ember (reads version 1)");

  // The same by editing the bytes of the header.
  Bytes bytes = read_file(path("ck"));
  replace_once(bytes, R"("format_version":"1")", R"("format_version":"7")");
  write_file(path("v7"), bytes);
  EXPECT_EQ(load_error("v7"), path("v7") + ": format_version 7 is not supported by this ember (reads version 1)");

  rewrite("ck", "none", [](auto& metadata) { metadata.erase("format_version"); });
  EXPECT_EQ(load_error("none"), path("none") + ": __metadata__ has no 'format_version': not an ember checkpoint");
}

TEST_F(CheckpointFiles, ForeignFilesAreRefused) {
  save_adam("ck");
  rewrite("ck", "other", [](auto& metadata) { metadata["format"] = "other.checkpoint"; });
  EXPECT_EQ(load_error("other"), path("other") + ": __metadata__.format: expected \"ember.checkpoint\", found \"other.checkpoint\"");
  rewrite("ck", "plain", [](auto& metadata) { metadata.clear(); });
  EXPECT_EQ(load_error("plain"), path("plain") + ": __metadata__ has no 'format': not an ember checkpoint");
  EXPECT_EQ(error_of([&] { load_trained_model(path("plain")); }),
            path("plain") + ": __metadata__ has no 'format': not an ember checkpoint");
  EXPECT_EQ(load_error("absent"), path("absent") + ": cannot open: No such file or directory");
}

TEST_F(CheckpointFiles, ModelThatDoesNotMatchIsRefused) {
  save_adam("ck");
  {
    Trainee wider(tiny_spec(5), "adam");
    EXPECT_EQ(error_of([&] { load_training_state(path("ck"), wider.parameters, *wider.optimizer); }),
              path("ck") + ": tensor 'fc2.weight' has shape [2, 3], expected [5, 3]");
  }
  {
    Trainee renamed(tiny_spec(2, "head"), "adam");
    EXPECT_EQ(error_of([&] { load_training_state(path("ck"), renamed.parameters, *renamed.optimizer); }),
              path("ck") + ": no tensor 'head.weight'");
  }
  {
    Trainee sgd(tiny_spec(), "sgd", sgd_momentum());
    EXPECT_EQ(error_of([&] { load_training_state(path("ck"), sgd.parameters, *sgd.optimizer); }),
              path("ck") + ": the checkpoint's optimizer is adam, this run uses sgd");
  }
  {
    // Same parameters, different layers: the tensors fit, so the load succeeds and the
    // caller compares the returned spec (engine/trainer.cpp does).
    Trainee no_relu(tiny_spec(2, "fc2", false), "adam");
    const TrainingState state = load_training_state(path("ck"), no_relu.parameters, *no_relu.optimizer);
    EXPECT_NE(state.model_spec, spec_from_graph(no_relu.graph, "tiny"));
  }
  // A checkpoint whose stored spec cannot be built.
  rewrite("ck", "bad-spec", [](auto& metadata) {
    Json spec = Json::parse(metadata.at("model_spec"));
    spec["layers"][1]["kind"] = "frobnicate";
    metadata["model_spec"] = spec.dump();
  });
  std::string message = error_of([&] { load_trained_model(path("bad-spec")); });
  EXPECT_TRUE(starts_with(message, path("bad-spec") + " (model_spec): layer 'relu'")) << message;
  EXPECT_TRUE(contains(message, "frobnicate")) << message;

  rewrite("ck", "not-json", [](auto& metadata) { metadata["model_spec"] = "{layers"; });
  message = load_error("not-json");
  EXPECT_TRUE(starts_with(message, path("not-json") + ": __metadata__.model_spec is not valid JSON: ")) << message;
}

// A refused load must leave the model and optimizer as they were, so that a caller that
// catches the error (a server, a retry with another file) still holds its own state.
TEST_F(CheckpointFiles, RefusedLoadLeavesParametersAndOptimizerUntouched) {
  save_adam("ck");
  Trainee wider(tiny_spec(5), "adam", {}, 42);
  wider.train(1);
  const std::vector<float> before = wider.values();
  EXPECT_NE(error_of([&] { load_training_state(path("ck"), wider.parameters, *wider.optimizer); }), "no error");
  EXPECT_EQ(wider.optimizer->step_count(), 1);
  EXPECT_EQ(wider.values(), before) << "fc1 was overwritten before fc2 was found not to fit";

  // Files whose tensors all fit but that are refused later: bad metadata, a missing
  // optimizer state tensor.
  rewrite("ck", "steps", [](auto& metadata) { metadata["optimizer_steps"] = "3x"; });
  rewrite("ck", "epoch", [](auto& metadata) { metadata["epoch"] = "4294967298"; });
  rewrite("ck", "optimizer", [](auto& metadata) { metadata["optimizer"] = R"({"name": 5})"; });
  {
    const SafetensorsFile file = SafetensorsFile::read(path("ck"));
    std::vector<TensorToWrite> tensors;
    for (const auto& [name, tensor] : file.tensors()) {
      if (name != "optimizer.exp_avg_sq.fc2.bias") tensors.push_back({name, tensor.shape, file.floats(name, tensor.shape)});
    }
    write_safetensors(path("no-state"), tensors, file.metadata());
  }
  for (const char* name : {"steps", "epoch", "optimizer", "no-state"}) {
    SCOPED_TRACE(name);
    Trainee trainee(tiny_spec(), "adam", {}, 42);
    trainee.train(1);
    const Snapshot snapshot(trainee);
    const std::string message = error_of([&] { load_training_state(path(name), trainee.parameters, *trainee.optimizer); });
    EXPECT_TRUE(starts_with(message, path(name) + ": ")) << message;
    EXPECT_TRUE(Snapshot(trainee) == snapshot) << "the refused load of " << name << " changed the trainee";
  }
  EXPECT_EQ(load_error("no-state"), path("no-state") + ": no tensor 'optimizer.exp_avg_sq.fc2.bias'");
}

TEST_F(CheckpointFiles, CorruptedHeaderBytesAreRefused) {
  save_adam("ck");
  const Bytes good = read_file(path("ck"));
  const std::uint64_t header = header_length_of(good);

  Bytes bytes = good;
  ASSERT_EQ(bytes[8], '{');
  bytes[8] = 'X';
  write_file(path("brace"), bytes);
  std::string message = load_error("brace");
  EXPECT_TRUE(starts_with(message, path("brace") + ": the header is not valid JSON: ")) << message;

  bytes = good;
  replace_once(bytes, "ember.checkpoint", "ember.checkpoinX");
  write_file(path("name"), bytes);
  EXPECT_EQ(load_error("name"), path("name") + ": __metadata__.format: expected \"ember.checkpoint\", found \"ember.checkpoinX\"");

  bytes = good;
  bytes[3] = 0x01;  // the header length grows by 2^24
  write_file(path("length"), bytes);
  EXPECT_EQ(load_error("length"), path("length") + ": header length " + std::to_string(header + (1u << 24)) +
                                      " is beyond the file's " + std::to_string(good.size()) +
                                      " bytes (truncated or not a safetensors file)");

  // fc1.bias is 3 floats at the start of the data section ("fc1.bias" < "fc1.weight").
  bytes = good;
  replace_once(bytes, R"("fc1.bias":{"data_offsets":[0,12])", R"("fc1.bias":{"data_offsets":[0,16])");
  write_file(path("offsets"), bytes);
  EXPECT_EQ(load_error("offsets"),
            path("offsets") + ": tensor 'fc1.bias': data_offsets [0, 16] hold 16 bytes; shape [3] of F32 needs 12");

  // Every byte of the header replaced by a few others: an ember::Error or a clean load,
  // never another exception (or a crash).
  // The file is patched in place (no truncation: rewriting a truncated file makes ext4
  // flush it on close, which made this loop take half a minute).
  Trainee trainee(tiny_spec(), "adam");
  write_file(path("flip"), good);
  std::fstream flip(path("flip"), std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(flip.good());
  auto put = [&](std::size_t at, std::uint8_t value) {
    flip.seekp(static_cast<std::streamoff>(at));
    flip.put(static_cast<char>(value));
    flip.flush();
    ASSERT_TRUE(flip.good());
  };
  std::vector<std::string> escaped;
  int refused = 0;
  for (std::size_t at = 8; at < 8 + header; ++at) {
    for (const std::uint8_t replacement : {std::uint8_t{'x'}, std::uint8_t{'"'}, std::uint8_t{'{'}, std::uint8_t{'}'},
                                           std::uint8_t{'['}, std::uint8_t{'0'}, std::uint8_t{'9'}, std::uint8_t{' '},
                                           std::uint8_t{0x00}, std::uint8_t{0xff}}) {
      if (good[at] == replacement) continue;
      put(at, replacement);
      try {
        load_training_state(path("flip"), trainee.parameters, *trainee.optimizer);
      } catch (const Error& e) {
        ++refused;
        if (!starts_with(e.what(), path("flip"))) escaped.push_back("byte " + std::to_string(at) + ": unnamed file: " + e.what());
      } catch (const std::exception& e) {
        escaped.push_back("byte " + std::to_string(at) + " = " + std::to_string(replacement) + ": " + e.what());
      }
      put(at, good[at]);
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_TRUE(escaped.empty()) << escaped.size() << " bad outcomes, first: " << escaped.front();
}

TEST_F(CheckpointFiles, TruncatedCheckpointIsRefusedAtEveryLength) {
  save_adam("ck");
  const Bytes good = read_file(path("ck"));
  Trainee trainee(tiny_spec(), "adam");
  // Shrink one file step by step (rewriting a truncated file makes ext4 flush it on close).
  write_file(path("cut"), good);
  for (std::size_t cut = good.size(); cut-- > 0;) {
    fs::resize_file(path("cut"), cut);
    const std::string message = error_of([&] { load_training_state(path("cut"), trainee.parameters, *trainee.optimizer); });
    EXPECT_TRUE(starts_with(message, path("cut") + ": ")) << "cut at " << cut << ": " << message;
    EXPECT_TRUE(contains(message, "truncated")) << "cut at " << cut << ": " << message;
  }
  write_file(path("cut"), Bytes(good.begin(), good.end() - 1));
  const std::string message = error_of([&] { load_trained_model(path("cut")); });
  EXPECT_TRUE(starts_with(message, path("cut") + ": tensor '")) << message;
  EXPECT_TRUE(contains(message, "(truncated file)")) << message;
}

TEST_F(CheckpointFiles, BadIntegerMetadataIsNamed) {
  save_adam("ck");
  rewrite("ck", "word", [](auto& metadata) { metadata["epoch"] = "two"; });
  EXPECT_EQ(load_error("word"), path("word") + ": __metadata__.epoch: expected a non-negative integer, found \"two\"");
  rewrite("ck", "negative", [](auto& metadata) { metadata["step"] = "-3"; });
  EXPECT_EQ(load_error("negative"), path("negative") + ": __metadata__.step: expected a non-negative integer, found \"-3\"");
  rewrite("ck", "suffix", [](auto& metadata) { metadata["optimizer_steps"] = "3x"; });
  EXPECT_EQ(load_error("suffix"),
            path("suffix") + ": __metadata__.optimizer_steps: expected a non-negative integer, found \"3x\"");
  rewrite("ck", "missing", [](auto& metadata) { metadata.erase("optimizer_steps"); });
  EXPECT_EQ(load_error("missing"), path("missing") + ": __metadata__ has no 'optimizer_steps': not an ember checkpoint");
}

// An epoch beyond int: refused, not wrapped to another epoch (4294967298 would become 2).
TEST_F(CheckpointFiles, EpochBeyondIntIsRefused) {
  save_adam("ck");
  rewrite("ck", "big", [](auto& metadata) { metadata["epoch"] = "4294967298"; });
  Trainee trainee(tiny_spec(), "adam");
  TrainingState state;
  const std::string message = error_of([&] { state = load_training_state(path("big"), trainee.parameters, *trainee.optimizer); });
  EXPECT_TRUE(starts_with(message, path("big") + ": __metadata__.epoch")) << message << " (loaded epoch " << state.epoch << ")";
  EXPECT_EQ(message, path("big") + ": __metadata__.epoch: expected an integer in [0, 2147483647], found \"4294967298\"");

  rewrite("ck", "max", [](auto& metadata) { metadata["epoch"] = "2147483647"; });
  EXPECT_EQ(error_of([&] { state = load_training_state(path("max"), trainee.parameters, *trainee.optimizer); }), "no error");
  EXPECT_EQ(state.epoch, 2147483647);
  // Beyond int64: refused, not wrapped, for the 64-bit fields too.
  rewrite("ck", "huge", [](auto& metadata) { metadata["step"] = "18446744073709551618"; });
  EXPECT_EQ(load_error("huge"),
            path("huge") + ": __metadata__.step: expected an integer in [0, 9223372036854775807], found \"18446744073709551618\"");
  // Digits only: no sign, no space.
  rewrite("ck", "plus", [](auto& metadata) { metadata["epoch"] = "+2"; });
  EXPECT_EQ(load_error("plus"), path("plus") + ": __metadata__.epoch: expected a non-negative integer, found \"+2\"");
  rewrite("ck", "space", [](auto& metadata) { metadata["epoch"] = " 2"; });
  EXPECT_EQ(load_error("space"), path("space") + ": __metadata__.epoch: expected a non-negative integer, found \" 2\"");
}

// The optimizer metadata is JSON written by ember; a file whose optimizer field is valid
// JSON of the wrong type must still be refused with an ember::Error naming it.
TEST_F(CheckpointFiles, OptimizerMetadataOfTheWrongTypeIsNamed) {
  save_adam("ck");
  for (const std::string& optimizer : {std::string("[\"adam\"]"), std::string("42"), std::string(R"({"name": 5})")}) {
    SCOPED_TRACE(optimizer);
    rewrite("ck", "odd", [&](auto& metadata) { metadata["optimizer"] = optimizer; });
    const std::string message = load_error("odd");
    EXPECT_TRUE(starts_with(message, path("odd") + ": ")) << message;
    EXPECT_TRUE(contains(message, "optimizer")) << message;
  }
  rewrite("ck", "array", [&](auto& metadata) { metadata["optimizer"] = R"(["adam"])"; });
  EXPECT_EQ(load_error("array"), path("array") + ": __metadata__.optimizer: expected a JSON object, found [\"adam\"]");
  rewrite("ck", "number", [&](auto& metadata) { metadata["optimizer"] = "42"; });
  EXPECT_EQ(load_error("number"), path("number") + ": __metadata__.optimizer: expected a JSON object, found 42");
  rewrite("ck", "name", [&](auto& metadata) { metadata["optimizer"] = R"({"name": 5})"; });
  EXPECT_EQ(load_error("name"), path("name") + ": __metadata__.optimizer.name: expected a string, found 5");
  rewrite("ck", "nameless", [&](auto& metadata) { metadata["optimizer"] = R"({"learning_rate": 0.1})"; });
  EXPECT_EQ(load_error("nameless"), path("nameless") + ": __metadata__.optimizer has no 'name'");
}

// The run settings and the model spec are JSON objects too; eval and predict read the
// run's mean and std as numbers.
TEST_F(CheckpointFiles, RunAndSpecMetadataOfTheWrongTypeAreNamed) {
  save_adam("ck");
  rewrite("ck", "run", [](auto& metadata) { metadata["run"] = "[1, 2]"; });
  EXPECT_EQ(load_error("run"), path("run") + ": __metadata__.run: expected a JSON object, found [1,2]");
  EXPECT_EQ(error_of([&] { load_trained_model(path("run")); }), path("run") + ": __metadata__.run: expected a JSON object, found [1,2]");
  rewrite("ck", "spec", [](auto& metadata) { metadata["model_spec"] = "\"tiny\""; });
  EXPECT_EQ(load_error("spec"), path("spec") + ": __metadata__.model_spec: expected a JSON object, found \"tiny\"");
  rewrite("ck", "mean", [](auto& metadata) { metadata["run"] = R"({"mean": "0.5", "std": 0.25})"; });
  EXPECT_EQ(error_of([&] { load_trained_model(path("mean")); }), path("mean") + ": __metadata__.run.mean: expected a number, found \"0.5\"");
  rewrite("ck", "long", [](auto& metadata) { metadata["run"] = "\"" + std::string(200, 'x') + "\""; });
  EXPECT_EQ(load_error("long"), path("long") + ": __metadata__.run: expected a JSON object, found \"" + std::string(76, 'x') + "...");
}

TEST_F(CheckpointFiles, FailedSaveKeepsThePreviousCheckpoint) {
  save_adam("ck");
  const Bytes before = read_file(path("ck"));
  Trainee other(tiny_spec(), "adam", {}, 5);
  other.train(1);
  // The disk fills up half way through the save (the temporary's name is unique per
  // process, thread and call, so it cannot be blocked in advance).
  std::string message;
  {
    const FileSizeLimit limit(64);
    message = error_of([&] { save_training_state(path("ck"), other.state(9, 9), other.parameters, *other.optimizer); });
  }
  EXPECT_EQ(message, path("ck") + ": write failed: " + std::strerror(EFBIG) + "; the previous file, if any, is untouched");
  EXPECT_EQ(std::distance(fs::directory_iterator(directory_), fs::directory_iterator()), 1) << "no temporary left";
  EXPECT_EQ(read_file(path("ck")), before);
  EXPECT_EQ(load_error("ck"), "no error");
}

}  // namespace
}  // namespace ember
