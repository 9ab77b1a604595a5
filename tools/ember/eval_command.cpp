#include <cstdio>
#include <vector>

#include "engine/dataset.h"
#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/memory_limit.h"
#include "engine/step_memory.h"
#include "engine/training_state.h"
#include "tools/ember/commands.h"
#include "tools/ember/flags.h"

namespace ember::cli {

int eval_command(int argc, char** argv) {
  Flags flags("eval", "Evaluate a checkpoint on a dataset's test split: accuracy and mean cross-entropy.");
  flags.value("checkpoint", "checkpoint written by ember train --save", std::nullopt, "PATH")
      .value("data", "fashion-mnist, mnist, or a directory of IDX files", "fashion-mnist", "D")
      .value("batch-size", "samples per batch", "256", "B")
      .value("threads", "compute threads", "1", "N")
      .value("limit", "use only the first N test images (0: all)", "0", "N")
      .memory_limit();
  if (!flags.parse(argc, argv, 2)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  const std::string path = flags.text("checkpoint");
  const std::int64_t batch_size = flags.positive_integer("batch-size");
  const int threads = static_cast<int>(flags.positive_integer("threads"));
  const std::size_t memory_limit = resolve_memory_limit(flags.memory_size("memory-limit"));
  TrainedModel model = load_trained_model(path, memory_limit);
  const Dataset test_set = load_dataset(flags.text("data"), Split::test, flags.non_negative_integer("limit"));
  const ImageFormat format = image_format_for(model.graph->input_sample_shape(), test_set, model.run.value("mean", 0.0),
                                              model.run.value("std", 1.0));
  BatchLoader loader(test_set, format, batch_size, 0, /*shuffle=*/false);
  ExecutorOptions options;
  options.threads = threads;
  StepMemoryOptions step;
  step.batch = batch_size;
  step.executor = options;
  step.mode = Mode::inference;
  check_step_memory(estimate_step_memory(*model.graph, *model.parameters, step), memory_limit, path);
  Executor executor(*model.graph, *model.parameters, options);
  const CrossEntropyLoss loss;
  std::vector<float> images(static_cast<std::size_t>(batch_size * model.graph->input_sample_shape().elements()));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch_size));
  StepResult total;
  for (std::int64_t b = 0; b < loader.batches_per_epoch(); ++b) {
    const std::int64_t count = loader.load(0, b, images.data(), labels.data());
    const StepResult r = executor.evaluate(images.data(), count,
                                           Targets{std::span<const std::int32_t>(labels.data(), static_cast<std::size_t>(count)), nullptr}, loss);
    total.loss_sum += r.loss_sum;
    total.correct += r.correct;
    total.samples += r.samples;
  }
  std::printf("%s on %s test (%lld images): accuracy %.2f%%, loss %.4f\n", path.c_str(), flags.text("data").c_str(),
              static_cast<long long>(total.samples), 100.0 * static_cast<double>(total.correct) / static_cast<double>(total.samples),
              total.mean_loss());
  return 0;
}

}  // namespace ember::cli
