#include "engine/training_state.h"

#include <algorithm>
#include <limits>
#include <span>
#include <vector>

#include "engine/error.h"
#include "engine/json_text.h"
#include "engine/model_spec.h"
#include "engine/onnx_import.h"
#include "engine/memory_limit.h"
#include "engine/safetensors.h"
#include "engine/step_memory.h"

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
  return parse_json(metadata_field(file, key), file.path() + ": __metadata__." + key);
}

// A found value for a message: its JSON, cut short if long.
std::string found_text(const Json& value) {
  std::string text = value.dump();
  if (text.size() > 80) text = text.substr(0, 77) + "...";
  return text;
}

// ember writes model_spec, optimizer and run as JSON objects; valid JSON of another type
// is refused here, not left to surface later as a nlohmann::json type_error.
Json metadata_object(const SafetensorsFile& file, const std::string& key) {
  Json value = metadata_json(file, key);
  if (!value.is_object()) {
    throw Error(file.path() + ": __metadata__." + key + ": expected a JSON object, found " + found_text(value));
  }
  return value;
}

// A decimal integer in [0, max]: digits only (no sign, space or suffix), no wrap-around.
std::int64_t metadata_integer(const SafetensorsFile& file, const std::string& key,
                              std::int64_t max = std::numeric_limits<std::int64_t>::max()) {
  const std::string& text = metadata_field(file, key);
  if (text.empty() || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    throw Error(file.path() + ": __metadata__." + key + ": expected a non-negative integer, found \"" + text + "\"");
  }
  std::int64_t value = 0;
  for (const char c : text) {
    if (__builtin_mul_overflow(value, 10, &value) || __builtin_add_overflow(value, c - '0', &value) || value > max) {
      throw Error(file.path() + ": __metadata__." + key + ": expected an integer in [0, " + std::to_string(max) + "], found \"" +
                  text + "\"");
    }
  }
  return value;
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

// Every parameter's (or buffer's) values in the file, each checked for presence, dtype
// and shape; nothing is copied, so a refused file changes nothing.
std::vector<std::span<const float>> tensor_values(const SafetensorsFile& file, std::span<const ParameterEntry> entries) {
  std::vector<std::span<const float>> values;
  for (const ParameterEntry& entry : entries) values.push_back(file.floats(entry.name, dims(entry.spec.shape)));
  return values;
}

// A model's tensors in a file, checked, not yet copied.
struct ModelValues {
  std::vector<std::span<const float>> parameters;
  std::vector<std::span<const float>> buffers;
};

ModelValues model_values(const SafetensorsFile& file, const std::vector<ParameterEntry>& entries,
                         const std::vector<ParameterEntry>& buffer_entries) {
  return {tensor_values(file, entries), tensor_values(file, buffer_entries)};
}

void copy_values(const std::vector<std::span<const float>>& values, const std::vector<ParameterEntry>& entries,
                 std::span<float> block) {
  for (std::size_t i = 0; i < entries.size(); ++i) std::copy(values[i].begin(), values[i].end(), block.begin() + entries[i].offset);
}

void copy_model_values(const ModelValues& values, ParameterStore& parameters) {
  copy_values(values.parameters, parameters.entries(), parameters.values());
  copy_values(values.buffers, parameters.buffer_entries(), parameters.buffers());
}

void add_tensors(std::vector<TensorToWrite>& tensors, const std::vector<ParameterEntry>& entries,
                 std::span<const float> block, const std::string& prefix = {}) {
  for (const ParameterEntry& entry : entries) {
    tensors.push_back({prefix + entry.name, dims(entry.spec.shape),
                       block.subspan(static_cast<std::size_t>(entry.offset), static_cast<std::size_t>(entry.spec.shape.elements()))});
  }
}

// The model's weights from an opened checkpoint: every tensor is checked against the
// graph, and the model against the memory limit, before the store is allocated.
std::unique_ptr<ParameterStore> read_model_weights(const SafetensorsFile& file, const Graph& graph, std::size_t memory_limit) {
  ParameterLayout layout = parameter_layout(graph);
  const ModelValues values = model_values(file, layout.entries, layout.buffer_entries);
  check_model_memory(graph, layout, 1, resolve_memory_limit(memory_limit), file.path());
  auto parameters = std::make_unique<ParameterStore>(std::move(layout));
  copy_model_values(values, *parameters);
  return parameters;
}

}  // namespace

void save_training_state(const std::string& path, const TrainingState& state, const ParameterStore& parameters,
                         const Optimizer& optimizer) {
  std::vector<TensorToWrite> tensors;
  add_tensors(tensors, parameters.entries(), parameters.values());
  // Under their own names, as PyTorch's state_dict() has them ("bn1.running_mean").
  add_tensors(tensors, parameters.buffer_entries(), parameters.buffers());
  for (const ConstOptimizerStateView& block : optimizer.state_tensors()) {
    add_tensors(tensors, parameters.entries(), block.values, state_tensor_name(block.name, ""));
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
  // Everything is read and checked first; the parameters and the optimizer change only
  // once nothing can fail, so a refused checkpoint leaves the caller's state as it was.
  const SafetensorsFile file = open_checkpoint(path);
  TrainingState state;
  state.model_spec = metadata_object(file, "model_spec");
  state.optimizer = metadata_object(file, "optimizer");
  state.run = metadata_object(file, "run");
  state.epoch = static_cast<int>(metadata_integer(file, "epoch", std::numeric_limits<int>::max()));
  state.step = metadata_integer(file, "step");
  const std::int64_t optimizer_steps = metadata_integer(file, "optimizer_steps");
  const auto name = state.optimizer.find("name");
  if (name == state.optimizer.end()) throw Error(path + ": __metadata__.optimizer has no 'name'");
  if (!name->is_string()) {
    throw Error(path + ": __metadata__.optimizer.name: expected a string, found " + found_text(*name));
  }
  if (name->get<std::string>() != optimizer.name()) {
    throw Error(path + ": the checkpoint's optimizer is " + name->get<std::string>() + ", this run uses " +
                std::string(optimizer.name()));
  }
  const ModelValues values = model_values(file, parameters.entries(), parameters.buffer_entries());

  // Optimizer blocks: per-parameter slices back into blocks laid out like the parameters.
  const auto block_floats = static_cast<std::size_t>(optimizer.total_floats());
  const std::vector<std::string> state_names = optimizer.state_names();
  std::vector<std::vector<float>> blocks;
  for (const std::string& state_name : state_names) {
    std::vector<float>& block = blocks.emplace_back(block_floats, 0.0f);
    for (const ParameterEntry& entry : parameters.entries()) {
      const std::span<const float> slice = file.floats(state_tensor_name(state_name, entry.name), dims(entry.spec.shape));
      std::copy(slice.begin(), slice.end(), block.begin() + entry.offset);
    }
  }
  std::vector<ConstOptimizerStateView> views;
  for (std::size_t i = 0; i < blocks.size(); ++i) views.push_back({state_names[i], blocks[i]});
  optimizer.import_state(optimizer_steps, views);  // checks everything before it changes anything
  copy_model_values(values, parameters);            // cannot fail
  return state;
}

std::vector<std::string> run_class_names(const Json& run, std::int64_t classes) {
  if (!run.contains("class_names") || !run["class_names"].is_array()) return {};
  const Json& names = run["class_names"];
  if (static_cast<std::int64_t>(names.size()) != classes) return {};
  if (!std::all_of(names.begin(), names.end(), [](const Json& n) { return n.is_string(); })) return {};
  return names.get<std::vector<std::string>>();
}

std::vector<double> run_normalization(const Json& run, const char* key, double fallback) {
  if (!run.contains(key)) return {fallback};
  if (run[key].is_number()) return {run[key].get<double>()};
  return run[key].get<std::vector<double>>();
}

bool file_holds_a_model(const std::string& path) {
  if (is_onnx_path(path)) return true;
  try {
    return SafetensorsFile::read(path).metadata().count("model_spec") > 0;
  } catch (const Error&) {
    return false;
  }
}

Json model_spec_of_file(const std::string& path) {
  if (is_onnx_path(path)) {
    const TrainedModel model = import_onnx(path);
    return spec_from_graph(*model.graph, path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1));
  }
  return metadata_json(SafetensorsFile::read(path), "model_spec");
}

TrainedModel load_trained_model(const std::string& path, std::size_t memory_limit) {
  // Models trained elsewhere: an ONNX file is imported (engine/onnx_import.h).
  if (is_onnx_path(path)) return import_onnx(path, memory_limit);
  const SafetensorsFile file = open_checkpoint(path);
  TrainedModel model;
  model.graph = std::make_unique<Graph>(graph_from_spec(metadata_json(file, "model_spec"), path + " (model_spec)"));
  model.run = metadata_object(file, "run");
  // Evaluation and prediction normalize inputs with these.
  // One number, or one per channel (arrays: image folders with per-channel --mean/--std).
  for (const char* key : {"mean", "std"}) {
    if (!model.run.contains(key)) continue;
    const Json& value = model.run[key];
    const bool numbers = value.is_array() && !value.empty() &&
                         std::all_of(value.begin(), value.end(), [](const Json& v) { return v.is_number(); });
    if (!value.is_number() && !numbers) {
      throw Error(path + ": __metadata__.run." + key + ": expected a number, found " + found_text(value));
    }
  }
  // The file's tensors are checked against the spec's parameters and buffers before the
  // store exists: a spec that asks for more than the file holds is refused, not allocated.
  model.parameters = read_model_weights(file, *model.graph, memory_limit);
  return model;
}

std::unique_ptr<ParameterStore> load_model_weights(const std::string& path, const Graph& graph, std::size_t memory_limit) {
  return read_model_weights(open_checkpoint(path), graph, memory_limit);
}

}  // namespace ember
