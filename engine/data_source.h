#pragma once
// Where `ember train` gets its batches: the MNIST family's IDX files, an image folder
// (engine/image_folder.h), a CSV table (engine/csv_table.h) or the synthetic regression
// task. Every set is loaded and validated against the model (input shape, classes,
// labels) before training starts; the problems found are reported together.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/dataset.h"
#include "engine/shape.h"
#include "engine/trainer.h"

namespace ember {

using Json = nlohmann::json;

// What the model expects of its data.
struct ModelDataNeeds {
  Shape input;                 // one sample
  std::int64_t outputs = 0;    // elements of one output
  bool regression = false;     // the loss compares values (MSE), not classes
};

// The loaders are owned here; the functions fill one batch and return its size.
struct TrainingData {
  std::int64_t train_size = 0, test_size = 0;
  std::int64_t train_batches = 0, test_batches = 0;
  std::int64_t max_batch = 0;
  std::int64_t train_batch_size = 0, test_batch_size = 0;
  std::int64_t target_floats = 0;  // per sample; 0 for class labels
  // Fill batch b of epoch e: inputs, labels, regression targets; only the samples the
  // filter names (a data-parallel rank's own; engine/dataset.h), or all of them: a loader
  // may fill more than asked, which changes no result.
  std::function<std::int64_t(int, std::int64_t, float*, std::int32_t*, float*, const SampleFilter&)> train_batch, test_batch;
  std::shared_ptr<void> owner;
  // Kept in the checkpoint's run settings for eval and predict: "class_names",
  // "feature_mean" and "feature_std" (CSV --standardize).
  Json metadata = Json::object();
};

// `name` is options.data or the model's default. Throws ember::Error naming every problem.
TrainingData open_training_data(const std::string& name, const ModelDataNeeds& model, const TrainOptions& options,
                                TrainingObserver& observer);

// The run settings the data options add to a checkpoint (only those not at their
// defaults, so that checkpoints of runs without them still match on --resume).
void add_data_options(Json& run, const DataOptions& options);

// The data options a checkpoint's run settings recorded (add_data_options), for eval and
// predict to read data as the run did; a malformed entry is an error naming `path`.
DataOptions data_options_from_run(const Json& run, const std::string& path);

// Normalization as a checkpoint records it: a number for one value, else an array.
Json normalization_json(const std::vector<double>& values);

}  // namespace ember
