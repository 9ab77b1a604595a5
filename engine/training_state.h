#pragma once
// What a training checkpoint holds beyond raw tensors: the model spec, the optimizer and
// its state, the run's settings, and where the run stands. Stored as a safetensors file
// (engine/safetensors.h) so numpy and PyTorch users can read the weights directly.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/optimizer.h"
#include "engine/parameters.h"

namespace ember {

struct TrainingState {
  Json model_spec;    // spec_from_graph() of the trained graph
  Json optimizer;     // name and hyper-parameters
  Json run;           // seed, batch size, data, normalization, ...
  int epoch = 0;      // epochs completed
  std::int64_t step = 0;  // optimizer steps completed
};

// Writes parameters, buffers (under "<node>.<buffer>", PyTorch's state_dict names),
// optimizer state and metadata atomically (temporary file, fsync,
// rename): a failure leaves any previous file at `path` untouched.
void save_training_state(const std::string& path, const TrainingState& state, const ParameterStore& parameters,
                         const Optimizer& optimizer);

// Restores parameters, buffers and optimizer state in place; checks every tensor's presence and
// shape and every metadata field's type and range, and names the first mismatch. All is
// checked before anything is copied: a refused checkpoint leaves `parameters` and
// `optimizer` as they were.
TrainingState load_training_state(const std::string& path, ParameterStore& parameters, Optimizer& optimizer);

// A trained model for evaluation and prediction: its graph and weights, and the run
// settings (input normalization) it was trained with.
struct TrainedModel {
  std::unique_ptr<Graph> graph;
  std::unique_ptr<ParameterStore> parameters;
  Json run;
};
// A run's input normalization ("mean" or "std"): one value, or one per channel.
std::vector<double> run_normalization(const Json& run, const char* key, double fallback);

// The class names a run recorded ("class_names": one string per class), or none when it
// recorded none or not `classes` strings.
std::vector<std::string> run_class_names(const Json& run, std::int64_t classes);

// A path ending in ".onnx" is imported (engine/onnx_import.h) instead of read as a
// checkpoint; its run settings hold only the normalization recorded in its metadata.
// Every tensor is checked against the spec, and the model against `memory_limit`
// (engine/memory_limit.h; 0: the available memory), before its parameters are allocated.
TrainedModel load_trained_model(const std::string& path, std::size_t memory_limit = 0);
// Does `path` hold a model load_trained_model can build: an ONNX file, or a safetensors
// file with a model_spec (an ember checkpoint, not a bare state_dict)? False for a file
// that cannot be read: the caller's own read reports that.
bool file_holds_a_model(const std::string& path);
// The model spec of such a file: a checkpoint's own, or the spec `ember import` would
// save for an ONNX file.
Json model_spec_of_file(const std::string& path);

// The parameters and buffers of `graph` from a checkpoint, checked and limited as above;
// the checkpoint's model spec is not read (for a graph built in code, a test's layer).
std::unique_ptr<ParameterStore> load_model_weights(const std::string& path, const Graph& graph,
                                                   std::size_t memory_limit = 0);

}  // namespace ember
