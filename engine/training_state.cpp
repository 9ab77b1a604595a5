#include "engine/training_state.h"

#include <algorithm>

#include "engine/error.h"
#include "engine/model_spec.h"
#include "engine/safetensors.h"

namespace ember {
namespace {

constexpr const char* format_name = "ember.checkpoint";
constexpr int format_version = 1;

std::string state_tensor_name(const std::string& state, const std::string& parameter) {
  return "optimizer." + state + "." + parameter;
}

std::vector<std::int64_t> dims(const Shape& shape) { return {shape.dims().begin(), shape.dims().end()}; }

const std::string& metadata_field(const SafetensorsFile& file, const std::string& key) {
  auto it = file.metadata().find(key);
  if (it == file.metadata().end()) throw Error(file.path() + ": __metadata__ has no '" + key + "': not an ember checkpoint");
  return it->second;
}

Json metadata_json(const SafetensorsFile& file, const std::string& key) {
  try {
    return Json::parse(metadata_field(file, key));
  } catch (const Json::parse_error& e) {
    throw Error(file.path() + ": __metadata__." + key + " is not valid JSON: " + e.what());
  }
}

std::int64_t metadata_integer(const SafetensorsFile& file, const std::string& key) {
  const std::string& text = metadata_field(file, key);
  try {
    std::size_t used = 0;
    const long long value = std::stoll(text, &used);
    if (used != text.size() || value < 0) throw std::invalid_argument(text);
    return value;
  } catch (const std::exception&) {
    throw Error(file.path() + ": __metadata__." + key + ": expected a non-negative integer, found \"" + text + "\"");
  }
}

SafetensorsFile open_checkpoint(const std::string& path) {
  SafetensorsFile file = SafetensorsFile::read(path);
  if (metadata_field(file, "format") != format_name) {
    throw Error(path + ": __metadata__.format: expected \"" + std::string(format_name) + "\", found \"" +
                metadata_field(file, "format") + "\"");
  }
  const std::string& version = metadata_field(file, "format_version");
  if (version != std::to_string(format_version)) {
    throw Error(path + ": format_version " + version + " is not supported by this ember (reads version " +
                std::to_string(format_version) + ")");
  }
  return file;
}

void load_parameters(const SafetensorsFile& file, ParameterStore& parameters) {
  for (std::size_t i = 0; i < parameters.entries().size(); ++i) {
    const ParameterEntry& entry = parameters.entries()[i];
    const std::span<const float> values = file.floats(entry.name, dims(entry.spec.shape));
    std::copy(values.begin(), values.end(), parameters.values().begin() + entry.offset);
  }
}

}  // namespace

void save_training_state(const std::string& path, const TrainingState& state, const ParameterStore& parameters,
                         const Optimizer& optimizer) {
  std::vector<TensorToWrite> tensors;
  for (const ParameterEntry& entry : parameters.entries()) {
    tensors.push_back({entry.name, dims(entry.spec.shape),
                       parameters.values().subspan(static_cast<std::size_t>(entry.offset),
                                                   static_cast<std::size_t>(entry.spec.shape.elements()))});
  }
  for (const ConstOptimizerStateView& block : optimizer.state_tensors()) {
    for (const ParameterEntry& entry : parameters.entries()) {
      tensors.push_back({state_tensor_name(block.name, entry.name), dims(entry.spec.shape),
                         block.values.subspan(static_cast<std::size_t>(entry.offset),
                                              static_cast<std::size_t>(entry.spec.shape.elements()))});
    }
  }
  const std::map<std::string, std::string> metadata{
      {"format", format_name},
      {"format_version", std::to_string(format_version)},
      {"model_spec", state.model_spec.dump()},
      {"optimizer", state.optimizer.dump()},
      {"run", state.run.dump()},
      {"epoch", std::to_string(state.epoch)},
      {"step", std::to_string(state.step)},
      {"optimizer_steps", std::to_string(optimizer.step_count())},
  };
  write_safetensors(path, tensors, metadata);
}

TrainingState load_training_state(const std::string& path, ParameterStore& parameters, Optimizer& optimizer) {
  const SafetensorsFile file = open_checkpoint(path);
  TrainingState state;
  state.model_spec = metadata_json(file, "model_spec");
  state.optimizer = metadata_json(file, "optimizer");
  state.run = metadata_json(file, "run");
  state.epoch = static_cast<int>(metadata_integer(file, "epoch"));
  state.step = metadata_integer(file, "step");
  if (state.optimizer.value("name", "") != optimizer.name()) {
    throw Error(path + ": the checkpoint's optimizer is " + state.optimizer.value("name", std::string("unknown")) +
                ", this run uses " + std::string(optimizer.name()));
  }
  load_parameters(file, parameters);

  // Optimizer blocks: per-parameter slices back into blocks laid out like the parameters.
  const auto block_floats = static_cast<std::size_t>(optimizer.total_floats());
  std::vector<std::vector<float>> blocks;
  std::vector<ConstOptimizerStateView> views;
  for (const std::string& name : optimizer.state_names()) {
    std::vector<float>& block = blocks.emplace_back(block_floats, 0.0f);
    for (const ParameterEntry& entry : parameters.entries()) {
      const std::span<const float> values = file.floats(state_tensor_name(name, entry.name), dims(entry.spec.shape));
      std::copy(values.begin(), values.end(), block.begin() + entry.offset);
    }
  }
  for (std::size_t i = 0; i < blocks.size(); ++i) views.push_back({optimizer.state_names()[i], blocks[i]});
  optimizer.import_state(metadata_integer(file, "optimizer_steps"), views);
  return state;
}

TrainedModel load_trained_model(const std::string& path) {
  const SafetensorsFile file = open_checkpoint(path);
  TrainedModel model;
  model.graph = std::make_unique<Graph>(graph_from_spec(metadata_json(file, "model_spec"), path + " (model_spec)"));
  model.parameters = std::make_unique<ParameterStore>(*model.graph);
  load_parameters(file, *model.parameters);
  model.run = metadata_json(file, "run");
  return model;
}

}  // namespace ember
