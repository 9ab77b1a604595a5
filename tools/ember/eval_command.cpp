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
#include "tools/ember/eval_report.h"
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

// The regression test split (the synthetic task): the mean of the run's loss.
void evaluate_regression(Executor& executor, const RegressionDataset& set, const Loss& loss, std::int64_t batch_size,
                         const std::string& path) {
  RegressionLoader loader(set, batch_size, 0, /*shuffle=*/false);
  std::vector<float> inputs(static_cast<std::size_t>(batch_size * set.sample_shape.elements()));
  std::vector<float> targets(static_cast<std::size_t>(batch_size * set.outputs));
  StepResult total;
  for (std::int64_t b = 0; b < loader.batches_per_epoch(); ++b) {
    const std::int64_t count = loader.load(0, b, inputs.data(), targets.data());
    total += executor.evaluate(inputs.data(), count, Targets{{}, targets.data()}, loss);
  }
  // A regression has no accuracy; the loss is named, as it is not cross-entropy.
  std::printf("%s on %s test (%lld samples): loss %.4f (%s)\n", path.c_str(), std::string(attention_retrieval_name).c_str(),
              static_cast<long long>(total.samples), total.mean_loss(), std::string(loss.name()).c_str());
}

// Labelled images: the run's loss and accuracy from each batch's logits, and per class.
void evaluate_classifier(Executor& executor, const Dataset& set, const ImageFormat& format, const Loss& loss,
                         std::int64_t batch_size, const std::string& where, ClassReport& report) {
  BatchLoader loader(set, format, batch_size, 0, /*shuffle=*/false);
  std::vector<float> inputs(static_cast<std::size_t>(batch_size * loader.sample_floats()));
  std::vector<float> logits(static_cast<std::size_t>(batch_size * report.classes()));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch_size));
  double loss_sum = 0.0;
  std::int64_t correct = 0, samples = 0;
  for (std::int64_t b = 0; b < loader.batches_per_epoch(); ++b) {
    const std::int64_t count = loader.load(0, b, inputs.data(), labels.data());
    executor.infer(inputs.data(), count, logits.data());
    const Targets targets{std::span<const std::int32_t>(labels.data(), static_cast<std::size_t>(count)), nullptr};
    const LossResult r = loss.compute(Tensor{logits.data(), Shape{count, report.classes()}}, targets, 1.0f, nullptr);
    loss_sum += r.loss_sum;
    correct += r.correct;
    samples += count;
    report.add(logits, labels, count);
  }
  std::printf("%s test (%lld images): accuracy %.2f%%, loss %.4f\n", where.c_str(), static_cast<long long>(samples),
              100.0 * static_cast<double>(correct) / static_cast<double>(samples), loss_sum / static_cast<double>(samples));
}

}  // namespace

int eval_command(int argc, char** argv) {
  Flags flags("eval", "Evaluate a checkpoint on a dataset's test split with the loss it was trained with: mean loss, and "
                      "for a classifier accuracy, per-class accuracy and the confusion matrix.");
  flags.value("checkpoint", "checkpoint written by ember train --save", std::nullopt, "PATH")
      .value("data", "fashion-mnist, mnist, a directory of IDX files, or attention-retrieval (synthetic); default: the data the checkpoint was trained on, else fashion-mnist", "", "D")
      .value("batch-size", "samples per batch", "256", "B")
      .threads("compute threads")
      .value("limit", "use only the first N test samples (0: all)", "0", "N")
      .value("report", "a classifier's per-class accuracy and confusion matrix as CSV, written atomically", "", "FILE.csv")
      .memory_limit();
  if (!flags.parse(argc, argv, 2)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  const std::string path = flags.text("checkpoint");
  const std::int64_t batch_size = flags.positive_integer("batch-size");
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
  if (!loss->uses_labels() && data_name != attention_retrieval_name) {
    throw Error(path + ": the model was trained with " + std::string(loss->name()) + " on regression targets; expected --data " +
                std::string(attention_retrieval_name) + ", found " + data_name);
  }
  if (!loss->uses_labels() && !flags.text("report").empty()) {
    throw UsageError("ember eval: --report: " + path + " is a regression model (" + std::string(loss->name()) +
                     "); it has no classes to report");
  }
  ExecutorOptions options;
  options.threads = flags.thread_count();
  StepMemoryOptions step;
  step.batch = batch_size;
  step.executor = options;
  step.mode = Mode::inference;
  check_step_memory(estimate_step_memory(*model.graph, *model.parameters, step), memory_limit, path);
  Executor executor(*model.graph, *model.parameters, options);
  if (!loss->uses_labels()) {
    const RegressionDataset set = attention_retrieval_split(Split::test, limit, run_seed(model.run, path));
    if (!(set.sample_shape == input_shape)) {
      throw Error(std::string(attention_retrieval_name) + ": samples are " + set.sample_shape.str() +
                  " but the model's input is " + input_shape.str());
    }
    evaluate_regression(executor, set, *loss, batch_size, path);
    return 0;
  }
  const Dataset set = load_dataset(data_name, Split::test, limit);
  const ImageFormat format = image_format_for(input_shape, set, run_normalization(model.run, "mean", 0.0),
                                              run_normalization(model.run, "std", 1.0));
  ClassReport report(model.graph->value_shape(model.graph->output()).sample_elements(), model.run);
  evaluate_classifier(executor, set, format, *loss, batch_size, path + " on " + data_name, report);
  std::printf("%s", report.text().c_str());
  if (!flags.text("report").empty()) {
    report.write_csv(flags.text("report"));
    std::printf("wrote %s\n", flags.text("report").c_str());
  }
  return 0;
}

}  // namespace ember::cli
