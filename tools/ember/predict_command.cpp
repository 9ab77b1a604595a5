#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <cstdio>
#include <functional>
#include <memory>
#include <numeric>
#include <vector>

#include "engine/dataset.h"
#include "engine/error.h"
#include "engine/executor.h"
#include "engine/idx.h"
#include "engine/image_decode.h"
#include "engine/image_folder.h"
#include "engine/memory_limit.h"
#include "engine/step_memory.h"
#include "engine/training_state.h"
#include "tools/ember/commands.h"
#include "tools/ember/flags.h"

namespace ember::cli {
namespace {

// Where predict's inputs come from: `count` samples, loaded in batches already normalized
// as the model was trained. One function per kind of input: an IDX file, or image files.
struct InputSource {
  std::int64_t count = 0;
  std::int64_t batches = 0;
  std::int64_t sample_floats = 0;
  std::function<std::int64_t(std::int64_t batch, float* inputs)> load;  // returns the batch's size
  std::vector<std::string> names;  // per sample, printed instead of its index (image files)
};

// Batches of `dataset` (held by the source) in the model's input format.
InputSource dataset_input_source(std::shared_ptr<Dataset> dataset, const TrainedModel& model, std::int64_t batch) {
  const ImageFormat format = image_format_for(model.graph->input_sample_shape(), *dataset,
                                              run_normalization(model.run, "mean", 0.0), run_normalization(model.run, "std", 1.0));
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

bool is_image_file(const std::filesystem::path& path) {
  std::string extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(), [](unsigned char c) { return std::tolower(c); });
  return extension == ".png" || extension == ".jpg" || extension == ".jpeg";
}

// `path` itself, or the PNG/JPEG files under the folder `path` (recursively, sorted).
std::vector<std::string> image_files(const std::string& path, std::int64_t limit) {
  std::vector<std::string> files;
  if (!std::filesystem::is_directory(path)) return {path};
  for (const auto& entry : std::filesystem::recursive_directory_iterator(path)) {
    if (entry.is_regular_file() && is_image_file(entry.path())) files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(path + ": no PNG or JPEG files in the folder (or its sub-folders)");
  if (limit > 0 && static_cast<std::int64_t>(files.size()) > limit) files.resize(static_cast<std::size_t>(limit));
  return files;
}

// How images become the model's input: its channels and size; a conversion or resize the
// training run made (its run settings) or the flags ask for.
ImageFolderFormat image_fit(const TrainedModel& model, const std::string& convert, bool resize) {
  const Shape& input = model.graph->input_sample_shape();
  if (input.rank() != 3 || (input[0] != 1 && input[0] != 3)) {
    throw Error("the model takes inputs of shape " + input.str() + ", not grey or RGB images (C, H, W)");
  }
  ImageFolderFormat format;
  format.channels = input[0];
  format.height = input[1];
  format.width = input[2];
  format.convert = !convert.empty() ? convert : model.run.value("convert", std::string());
  format.resize = resize || model.run.contains("resize");
  return format;
}

// PNG/JPEG files: one, or every one under a folder, fitted and normalized as in training.
InputSource image_input_source(const std::string& path, std::int64_t limit, const TrainedModel& model, std::int64_t batch,
                               const std::string& convert, bool resize) {
  const ImageFolderFormat format = image_fit(model, convert, resize);
  const std::vector<std::string> files = image_files(path, limit);
  auto dataset = std::make_shared<Dataset>();
  dataset->source = path;
  dataset->count = static_cast<std::int64_t>(files.size());
  dataset->channels = format.channels;
  dataset->height = format.height;
  dataset->width = format.width;
  dataset->images.reserve(files.size() * static_cast<std::size_t>(dataset->sample_bytes()));
  for (const std::string& file : files) {
    DecodedImage image = decode_image_file(file);
    fit_image(image, format, file);
    dataset->images.insert(dataset->images.end(), image.pixels.begin(), image.pixels.end());
  }
  dataset->labels.assign(files.size(), 0);
  InputSource source = dataset_input_source(dataset, model, batch);
  source.names = files;
  return source;
}

// An IDX images file (raw or .gz), its first `limit` images (0: all).
InputSource idx_input_source(const std::string& path, std::int64_t limit, const TrainedModel& model, std::int64_t batch) {
  IdxArray images = read_idx(path, 3);
  auto dataset = std::make_shared<Dataset>();
  dataset->source = path;
  dataset->count = limit > 0 ? std::min(limit, images.dims[0]) : images.dims[0];
  dataset->height = images.dims[1];
  dataset->width = images.dims[2];
  dataset->images = std::move(images.data);
  dataset->images.resize(static_cast<std::size_t>(dataset->count * dataset->sample_bytes()));
  dataset->labels.assign(static_cast<std::size_t>(dataset->count), 0);
  return dataset_input_source(dataset, model, batch);
}

struct Printer {
  std::int64_t classes = 0, top = 1;
  bool json = false;
  std::vector<std::string> names;

  std::string name_of(std::int64_t c) const { return names.empty() ? std::to_string(c) : names[static_cast<std::size_t>(c)]; }

  // One sample: "INDEX CLASS:P ..." (the file instead of the index for image files) or one
  // JSON object with the top classes and the logits.
  void print(std::int64_t index, const std::string& file, const float* row) const {
    const float max = *std::max_element(row, row + classes);
    double sum = 0.0;
    for (std::int64_t c = 0; c < classes; ++c) sum += std::exp(static_cast<double>(row[c] - max));
    std::vector<std::int64_t> order(static_cast<std::size_t>(classes));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top, order.end(), [&](std::int64_t a, std::int64_t c) { return row[a] > row[c]; });
    Json object{{"index", index}, {"top", Json::array()}, {"logits", Json::array()}};
    if (!file.empty()) object["file"] = file;
    std::string line = file.empty() ? std::to_string(index) : file;
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
  Flags flags("predict", "Classify images with a trained checkpoint: a PNG or JPEG file, a folder of them, or an IDX "
                         "images file; prints the top classes and probabilities of each (class names when the checkpoint "
                         "has them).");
  flags.value("checkpoint", "checkpoint written by ember train --save (or an .onnx file)", std::nullopt, "PATH")
      .value("input", "a PNG/JPEG file, a folder of them (searched recursively, sorted), or an IDX images file (raw or .gz)",
             std::nullopt, "PATH")
      .value("convert", "images: convert to the model's channels, rgb or grey (default: as the training run did; else a "
                        "mismatch is an error)", "", "C")
      .toggle("resize", "images: resize (bilinear) to the model's input size (default: as the training run did; else a "
                        "mismatch is an error)")
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
  printer.names = run_class_names(model.run, printer.classes);
  const std::int64_t batch = 256;
  const std::string input = flags.text("input");
  const std::int64_t limit = flags.non_negative_integer("limit");
  const std::string convert = flags.text("convert").empty() ? "" : flags.choice("convert", {"rgb", "grey"});
  const InputSource source = std::filesystem::is_directory(input) || is_image_file(input)
                                 ? image_input_source(input, limit, model, batch, convert, flags.on("resize"))
                                 : idx_input_source(input, limit, model, batch);
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
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t index = b * batch + i;
      printer.print(index, source.names.empty() ? std::string() : source.names[static_cast<std::size_t>(index)],
                    logits.data() + i * printer.classes);
    }
  }
  return 0;
}

}  // namespace ember::cli
