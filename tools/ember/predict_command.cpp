#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
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
namespace {

// Where predict's inputs come from: `count` samples, loaded in batches already normalized
// as the model was trained. One function per kind of input (an IDX file today; image
// files and folders can be another that fills the same struct).
struct InputSource {
  std::int64_t count = 0;
  std::int64_t batches = 0;
  std::int64_t sample_floats = 0;
  std::function<std::int64_t(std::int64_t batch, float* inputs)> load;  // returns the batch's size
};

// An IDX images file (raw or .gz), its first `limit` images (0: all).
InputSource idx_input_source(const std::string& path, std::int64_t limit, const TrainedModel& model, std::int64_t batch) {
  IdxArray images = read_idx(path, 3);
  auto dataset = std::make_shared<Dataset>();
  dataset->source = path;
  dataset->count = limit > 0 ? std::min(limit, images.dims[0]) : images.dims[0];
  dataset->height = images.dims[1];
  dataset->width = images.dims[2];
  dataset->images = std::move(images.data);
  dataset->labels.assign(static_cast<std::size_t>(dataset->count), 0);
  const ImageFormat format =
      image_format_for(model.graph->input_sample_shape(), *dataset, model.run.value("mean", 0.0), model.run.value("std", 1.0));
  auto loader = std::make_shared<BatchLoader>(*dataset, format, batch, 0, /*shuffle=*/false);
  auto unused_labels = std::make_shared<std::vector<std::int32_t>>(static_cast<std::size_t>(batch));
  InputSource source;
  source.count = dataset->count;
  source.batches = loader->batches_per_epoch();
  source.sample_floats = loader->sample_floats();
  source.load = [dataset, loader, unused_labels](std::int64_t b, float* inputs) {
    return loader->load(0, b, inputs, unused_labels->data());
  };
  return source;
}

// The checkpoint's class names (run settings "class_names", one per class), else none.
std::vector<std::string> class_names(const Json& run, std::int64_t classes) {
  if (!run.contains("class_names") || !run["class_names"].is_array()) return {};
  const Json& names = run["class_names"];
  if (static_cast<std::int64_t>(names.size()) != classes) return {};
  if (!std::all_of(names.begin(), names.end(), [](const Json& n) { return n.is_string(); })) return {};
  return names.get<std::vector<std::string>>();
}

struct Printer {
  std::int64_t classes = 0, top = 1;
  bool json = false;
  std::vector<std::string> names;

  std::string name_of(std::int64_t c) const { return names.empty() ? std::to_string(c) : names[static_cast<std::size_t>(c)]; }

  // One sample: "INDEX CLASS:P ..." or one JSON object with the top classes and the logits.
  void print(std::int64_t index, const float* row) const {
    const float max = *std::max_element(row, row + classes);
    double sum = 0.0;
    for (std::int64_t c = 0; c < classes; ++c) sum += std::exp(static_cast<double>(row[c] - max));
    std::vector<std::int64_t> order(static_cast<std::size_t>(classes));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top, order.end(), [&](std::int64_t a, std::int64_t c) { return row[a] > row[c]; });
    Json object{{"index", index}, {"top", Json::array()}, {"logits", Json::array()}};
    std::string line = std::to_string(index);
    for (std::int64_t k = 0; k < top; ++k) {
      const std::int64_t c = order[static_cast<std::size_t>(k)];
      const double probability = std::exp(static_cast<double>(row[c] - max)) / sum;
      char text[64];
      std::snprintf(text, sizeof text, ":%.4f", probability);
      line += " " + name_of(c) + text;
      object["top"].push_back(Json{{"class", c}, {"name", name_of(c)}, {"probability", probability}});
    }
    for (std::int64_t c = 0; c < classes; ++c) object["logits"].push_back(row[c]);
    std::printf("%s\n", json ? object.dump().c_str() : line.c_str());
  }
};

}  // namespace

int predict_command(int argc, char** argv) {
  Flags flags("predict", "Classify the images of an IDX images file with a trained checkpoint; prints the top classes and probabilities of each (class names when the checkpoint has them).");
  flags.value("checkpoint", "checkpoint written by ember train --save", std::nullopt, "PATH")
      .value("input", "IDX images file (raw or .gz), e.g. t10k-images-idx3-ubyte.gz", std::nullopt, "PATH")
      .value("top", "classes to print per image", "1", "K")
      .value("limit", "classify only the first N images (0: all)", "0", "N")
      .toggle("json", "one JSON object per image: index, top classes (class, name, probability) and all logits")
      .threads("compute threads")
      .memory_limit();
  if (!flags.parse(argc, argv, 2)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  const std::size_t memory_limit = resolve_memory_limit(flags.memory_size("memory-limit"));
  TrainedModel model = load_trained_model(flags.text("checkpoint"), memory_limit);
  Printer printer;
  printer.classes = model.graph->value_shape(model.graph->output()).sample_elements();
  printer.top = std::min(flags.positive_integer("top"), printer.classes);
  printer.json = flags.on("json");
  printer.names = class_names(model.run, printer.classes);
  const std::int64_t batch = 256;
  const InputSource source = idx_input_source(flags.text("input"), flags.non_negative_integer("limit"), model, batch);
  ExecutorOptions options;
  options.threads = flags.thread_count();
  StepMemoryOptions step;
  step.batch = batch;
  step.executor = options;
  step.mode = Mode::inference;
  check_step_memory(estimate_step_memory(*model.graph, *model.parameters, step), memory_limit, flags.text("checkpoint"));
  Executor executor(*model.graph, *model.parameters, options);
  std::vector<float> inputs(static_cast<std::size_t>(batch * source.sample_floats));
  std::vector<float> logits(static_cast<std::size_t>(batch * printer.classes));
  for (std::int64_t b = 0; b < source.batches; ++b) {
    const std::int64_t count = source.load(b, inputs.data());
    executor.infer(inputs.data(), count, logits.data());
    for (std::int64_t i = 0; i < count; ++i) printer.print(b * batch + i, logits.data() + i * printer.classes);
  }
  return 0;
}

}  // namespace ember::cli
