#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/data_source.h"
#include "engine/error.h"
#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/memory_limit.h"
#include "engine/model_spec.h"
#include "engine/step_memory.h"
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

// The test split as the run read it: its data (or --data) with the run's data options,
// normalization and seed (the held-out part of a --val-split, a CSV's standardization).
TrainingData test_data(const std::string& data_name, const TrainedModel& model, const Loss& loss, std::int64_t batch_size,
                       std::int64_t limit, int threads, const std::string& path) {
  TrainOptions options;
  options.data = data_name;
  options.data_options = data_options_from_run(model.run, path);
  options.mean = run_normalization(model.run, "mean", 0.0);
  options.std = run_normalization(model.run, "std", 1.0);
  options.seed = run_seed(model.run, path);
  options.batch_size = batch_size;
  options.test_limit = limit;
  options.threads = threads;
  const ModelDataNeeds needs{model.graph->input_sample_shape(), model.graph->value_shape(model.graph->output()).sample_elements(),
                             !loss.uses_labels()};
  TrainingObserver quiet;
  return open_training_data(data_name, needs, options, quiet);
}

// The run's loss (and for a classifier accuracy and the per-class report) over the test split.
void evaluate(Executor& executor, TrainingData& data, const TrainedModel& model, const Loss& loss, std::int64_t outputs,
              const std::string& where, ClassReport* report) {
  const std::int64_t rows = data.test_batch_size;
  std::vector<float> inputs(static_cast<std::size_t>(rows * model.graph->input_sample_shape().elements()));
  std::vector<float> logits(static_cast<std::size_t>(rows * outputs));
  std::vector<float> targets(static_cast<std::size_t>(rows * std::max<std::int64_t>(data.target_floats, 1)));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(rows));
  double loss_sum = 0.0;
  std::int64_t correct = 0, samples = 0;
  for (std::int64_t b = 0; b < data.test_batches; ++b) {
    const std::int64_t count = data.test_batch(0, b, inputs.data(), labels.data(), targets.data(), {});
    executor.infer(inputs.data(), count, logits.data());
    const Targets batch_targets{loss.uses_labels() ? std::span<const std::int32_t>(labels.data(), static_cast<std::size_t>(count))
                                                   : std::span<const std::int32_t>(),
                                loss.uses_labels() ? nullptr : targets.data()};
    const LossResult r = loss.compute(Tensor{logits.data(), Shape{count, outputs}}, batch_targets, 1.0f, nullptr);
    loss_sum += r.loss_sum;
    correct += r.correct;
    samples += count;
    if (report != nullptr) report->add(logits, labels, count);
  }
  const double mean_loss = loss_sum / static_cast<double>(samples);
  if (report == nullptr) {  // a regression has no accuracy; the loss is named, as it is not cross-entropy
    std::printf("%s test (%lld samples): loss %.4f (%s)\n", where.c_str(), static_cast<long long>(samples), mean_loss,
                std::string(loss.name()).c_str());
    return;
  }
  const bool images = model.graph->input_sample_shape().rank() == 3;
  std::printf("%s test (%lld %s): accuracy %.2f%%, loss %.4f\n", where.c_str(), static_cast<long long>(samples),
              images ? "images" : "samples",
              100.0 * static_cast<double>(correct) / static_cast<double>(samples), mean_loss);
}

}  // namespace

int eval_command(int argc, char** argv) {
  Flags flags("eval", "Evaluate a checkpoint on the test split of its data (or --data) with the loss it was trained with: "
                      "mean loss, and for a classifier accuracy, per-class accuracy and the confusion matrix.");
  flags.value("checkpoint", "checkpoint written by ember train --save (or an .onnx file)", std::nullopt, "PATH")
      .value("data", "fashion-mnist, mnist, a directory of IDX files, an image folder, a CSV file, or attention-retrieval "
                     "(synthetic); read with the run's data options; default: the data the checkpoint was trained on, "
                     "else fashion-mnist", "", "D")
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
  const std::size_t memory_limit = resolve_memory_limit(flags.memory_size("memory-limit"));
  TrainedModel model = load_trained_model(path, memory_limit);
  // The loss and data the run trained with (engine/trainer.cpp records them; older
  // checkpoints name neither and were trained with cross-entropy, or on their --data).
  const std::unique_ptr<Loss> loss = make_loss(run_text(model.run, "loss", default_loss_name, path));
  const std::string data_name =
      !flags.text("data").empty() ? flags.text("data")
                                  : run_text(model.run, "dataset", run_text(model.run, "data", "fashion-mnist", path), path);
  if (!loss->uses_labels() && !flags.text("report").empty()) {
    throw UsageError("ember eval: --report: " + path + " is a regression model (" + std::string(loss->name()) +
                     "); it has no classes to report");
  }
  ExecutorOptions options;
  options.threads = flags.thread_count();
  TrainingData data = test_data(data_name, model, *loss, batch_size, flags.non_negative_integer("limit"), options.threads, path);
  StepMemoryOptions step;
  step.batch = data.test_batch_size;
  step.executor = options;
  step.mode = Mode::inference;
  check_step_memory(estimate_step_memory(*model.graph, *model.parameters, step), memory_limit, path);
  Executor executor(*model.graph, *model.parameters, options);
  const std::int64_t outputs = model.graph->value_shape(model.graph->output()).sample_elements();
  if (!loss->uses_labels()) {
    evaluate(executor, data, model, *loss, outputs, path + " on " + data_name, nullptr);
    return 0;
  }
  ClassReport report(outputs, model.run);
  evaluate(executor, data, model, *loss, outputs, path + " on " + data_name, &report);
  std::printf("%s", report.text().c_str());
  if (!flags.text("report").empty()) {
    report.write_csv(flags.text("report"));
    std::printf("wrote %s\n", flags.text("report").c_str());
  }
  return 0;
}

}  // namespace ember::cli
