#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <vector>

#include "engine/dataset.h"
#include "engine/error.h"
#include "engine/executor.h"
#include "engine/idx.h"
#include "engine/memory_limit.h"
#include "engine/step_memory.h"
#include "engine/training_state.h"
#include "tools/ember/commands.h"
#include "tools/ember/flags.h"

namespace ember::cli {

int predict_command(int argc, char** argv) {
  Flags flags("predict", "Classify the images of an IDX images file with a trained checkpoint; prints the top classes and probabilities of each.");
  flags.value("checkpoint", "checkpoint written by ember train --save", std::nullopt, "PATH")
      .value("input", "IDX images file (raw or .gz), e.g. t10k-images-idx3-ubyte.gz", std::nullopt, "PATH")
      .value("top", "classes to print per image", "1", "K")
      .value("limit", "classify only the first N images (0: all)", "0", "N")
      .value("threads", "compute threads", "1", "N")
      .memory_limit();
  if (!flags.parse(argc, argv, 2)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  const std::string input_path = flags.text("input");
  const std::int64_t limit = flags.non_negative_integer("limit");
  const std::size_t memory_limit = resolve_memory_limit(flags.memory_size("memory-limit"));
  TrainedModel model = load_trained_model(flags.text("checkpoint"), memory_limit);
  const std::int64_t classes = model.graph->value_shape(model.graph->output()).sample_elements();
  const std::int64_t top = std::min(flags.positive_integer("top"), classes);

  IdxArray images = read_idx(input_path, 3);
  Dataset dataset;
  dataset.source = input_path;
  dataset.count = limit > 0 ? std::min(limit, images.dims[0]) : images.dims[0];
  dataset.height = images.dims[1];
  dataset.width = images.dims[2];
  dataset.images = std::move(images.data);
  dataset.labels.assign(static_cast<std::size_t>(dataset.count), 0);
  const ImageFormat format =
      image_format_for(model.graph->input_sample_shape(), dataset, model.run.value("mean", 0.0), model.run.value("std", 1.0));
  const std::int64_t batch = 256;
  BatchLoader loader(dataset, format, batch, 0, /*shuffle=*/false);
  ExecutorOptions options;
  options.threads = static_cast<int>(flags.positive_integer("threads"));
  StepMemoryOptions step;
  step.batch = batch;
  step.executor = options;
  step.mode = Mode::inference;
  check_step_memory(estimate_step_memory(*model.graph, *model.parameters, step), memory_limit, flags.text("checkpoint"));
  Executor executor(*model.graph, *model.parameters, options);
  std::vector<float> inputs(static_cast<std::size_t>(batch * loader.sample_floats()));
  std::vector<std::int32_t> unused(static_cast<std::size_t>(batch));
  std::vector<float> logits(static_cast<std::size_t>(batch * classes));
  std::vector<std::int64_t> order(static_cast<std::size_t>(classes));
  for (std::int64_t b = 0; b < loader.batches_per_epoch(); ++b) {
    const std::int64_t count = loader.load(0, b, inputs.data(), unused.data());
    executor.infer(inputs.data(), count, logits.data());
    for (std::int64_t i = 0; i < count; ++i) {
      const float* row = logits.data() + i * classes;
      const float max = *std::max_element(row, row + classes);
      double sum = 0.0;
      for (std::int64_t c = 0; c < classes; ++c) sum += std::exp(static_cast<double>(row[c] - max));
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + top, order.end(), [&](std::int64_t a, std::int64_t c) { return row[a] > row[c]; });
      std::printf("%lld", static_cast<long long>(b * batch + i));
      for (std::int64_t k = 0; k < top; ++k) {
        const std::int64_t c = order[static_cast<std::size_t>(k)];
        std::printf(" %lld:%.4f", static_cast<long long>(c), std::exp(static_cast<double>(row[c] - max)) / sum);
      }
      std::printf("\n");
    }
  }
  return 0;
}

}  // namespace ember::cli
