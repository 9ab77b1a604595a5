#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/dataset.h"
#include "engine/error.h"
#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/memory_limit.h"
#include "engine/model_spec.h"
#include "engine/step_memory.h"
#include "engine/synthetic_task.h"
#include "engine/training_state.h"
#include "tools/ember/commands.h"
#include "tools/ember/flags.h"

namespace ember::cli {

namespace {

// A text field of the checkpoint's run settings, or `fallback` if it is absent or empty.
std::string run_text(const Json& run, const char* key, const std::string& fallback, const std::string& path) {
  if (!run.contains(key)) return fallback;
  if (!run[key].is_string()) throw Error(path + ": __metadata__.run." + key + ": expected a string, found " + run[key].dump());
  const std::string text = run[key].get<std::string>();
  return text.empty() ? fallback : text;
}

std::uint64_t run_seed(const Json& run, const std::string& path) {
  if (!run.contains("seed")) return 0;
  if (!run["seed"].is_number_unsigned()) {
    throw Error(path + ": __metadata__.run.seed: expected a non-negative integer, found " + run["seed"].dump());
  }
  return run["seed"].get<std::uint64_t>();
}

}  // namespace

int eval_command(int argc, char** argv) {
  Flags flags("eval", "Evaluate a checkpoint on a dataset's test split with the loss it was trained with: accuracy (classification) and mean loss.");
  flags.value("checkpoint", "checkpoint written by ember train --save", std::nullopt, "PATH")
      .value("data", "fashion-mnist, mnist, a directory of IDX files, or attention-retrieval (synthetic); default: the data the checkpoint was trained on, else fashion-mnist", "", "D")
      .value("batch-size", "samples per batch", "256", "B")
      .value("threads", "compute threads", "1", "N")
      .value("limit", "use only the first N test samples (0: all)", "0", "N")
      .memory_limit();
  if (!flags.parse(argc, argv, 2)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  const std::string path = flags.text("checkpoint");
  const std::int64_t batch_size = flags.positive_integer("batch-size");
  const int threads = static_cast<int>(flags.positive_integer("threads"));
  const std::int64_t limit = flags.non_negative_integer("limit");
  const std::size_t memory_limit = resolve_memory_limit(flags.memory_size("memory-limit"));
  TrainedModel model = load_trained_model(path, memory_limit);
  // The loss and data the run trained with (engine/trainer.cpp records them; older
  // checkpoints name neither and were trained with cross-entropy, or on their --data).
  const std::unique_ptr<Loss> loss = make_loss(run_text(model.run, "loss", default_loss_name, path));
  const std::string data_name =
      !flags.text("data").empty() ? flags.text("data")
                                  : run_text(model.run, "dataset", run_text(model.run, "data", "fashion-mnist", path), path);
  const Shape& input_shape = model.graph->input_sample_shape();

  // The test split: regression targets of the synthetic task, or labelled images.
  std::optional<RegressionDataset> regression_set;
  std::optional<Dataset> image_set;
  std::optional<ImageFormat> format;
  if (!loss->uses_labels()) {
    if (data_name != attention_retrieval_name) {
      throw Error(path + ": the model was trained with " + std::string(loss->name()) + " on regression targets; expected --data " +
                  std::string(attention_retrieval_name) + ", found " + data_name);
    }
    regression_set = attention_retrieval_split(Split::test, limit, run_seed(model.run, path));
    if (!(regression_set->sample_shape == input_shape)) {
      throw Error(std::string(attention_retrieval_name) + ": samples are " + regression_set->sample_shape.str() +
                  " but the model's input is " + input_shape.str());
    }
  } else {
    image_set = load_dataset(data_name, Split::test, limit);
    format = image_format_for(input_shape, *image_set, run_normalization(model.run, "mean", 0.0), run_normalization(model.run, "std", 1.0));
  }

  ExecutorOptions options;
  options.threads = threads;
  StepMemoryOptions step;
  step.batch = batch_size;
  step.executor = options;
  step.mode = Mode::inference;
  check_step_memory(estimate_step_memory(*model.graph, *model.parameters, step), memory_limit, path);
  Executor executor(*model.graph, *model.parameters, options);
  std::vector<float> inputs(static_cast<std::size_t>(batch_size * input_shape.elements()));
  StepResult total;

  if (regression_set) {
    RegressionLoader loader(*regression_set, batch_size, 0, /*shuffle=*/false);
    std::vector<float> targets(static_cast<std::size_t>(batch_size * regression_set->outputs));
    for (std::int64_t b = 0; b < loader.batches_per_epoch(); ++b) {
      const std::int64_t count = loader.load(0, b, inputs.data(), targets.data());
      const StepResult r = executor.evaluate(inputs.data(), count, Targets{{}, targets.data()}, *loss);
      total += r;
    }
    // A regression has no accuracy; the loss is named, as it is not cross-entropy.
    std::printf("%s on %s test (%lld samples): loss %.4f (%s)\n", path.c_str(), data_name.c_str(),
                static_cast<long long>(total.samples), total.mean_loss(), std::string(loss->name()).c_str());
    return 0;
  }

  BatchLoader loader(*image_set, *format, batch_size, 0, /*shuffle=*/false);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch_size));
  for (std::int64_t b = 0; b < loader.batches_per_epoch(); ++b) {
    const std::int64_t count = loader.load(0, b, inputs.data(), labels.data());
    const StepResult r = executor.evaluate(inputs.data(), count,
                                           Targets{std::span<const std::int32_t>(labels.data(), static_cast<std::size_t>(count)), nullptr}, *loss);
    total += r;
  }
  std::printf("%s on %s test (%lld images): accuracy %.2f%%, loss %.4f\n", path.c_str(), data_name.c_str(),
              static_cast<long long>(total.samples), 100.0 * static_cast<double>(total.correct) / static_cast<double>(total.samples),
              total.mean_loss());
  return 0;
}

}  // namespace ember::cli
