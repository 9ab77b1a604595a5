#include "engine/dataset.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <utility>

#include "engine/error.h"
#include "engine/idx.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

bool exists(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0;
}

// "<dir>/<stem>" or "<dir>/<stem>.gz", whichever exists.
std::string find_file(const std::string& directory, const std::string& stem) {
  for (const std::string& candidate : {directory + "/" + stem + ".gz", directory + "/" + stem}) {
    if (exists(candidate)) return candidate;
  }
  throw Error(directory + ": no " + stem + " or " + stem + ".gz");
}

}  // namespace

Dataset load_idx_dataset(const std::string& images_path, const std::string& labels_path, int classes, std::int64_t limit) {
  IdxArray images = read_idx(images_path, 3);
  IdxArray labels = read_idx(labels_path, 1);
  if (images.dims[0] != labels.dims[0]) {
    throw Error(images_path + " has " + std::to_string(images.dims[0]) + " images but " + labels_path + " has " +
                std::to_string(labels.dims[0]) + " labels");
  }
  Dataset dataset;
  dataset.source = images_path;
  dataset.count = images.dims[0];
  dataset.height = images.dims[1];
  dataset.width = images.dims[2];
  dataset.classes = classes;
  for (std::size_t i = 0; i < labels.data.size(); ++i) {
    if (labels.data[i] >= classes) {
      throw Error(labels_path + ": label " + std::to_string(i) + " is " + std::to_string(labels.data[i]) +
                  "; labels must be in [0, " + std::to_string(classes) + ")");
    }
  }
  if (limit > 0 && limit < dataset.count) dataset.count = limit;
  dataset.images = std::move(images.data);
  dataset.images.resize(static_cast<std::size_t>(dataset.count * dataset.height * dataset.width));
  dataset.labels.assign(labels.data.begin(), labels.data.begin() + dataset.count);
  return dataset;
}

Dataset load_dataset(const std::string& name_or_directory, Split split, std::int64_t limit) {
  std::string directory = name_or_directory;
  if (name_or_directory == "fashion-mnist") {
    directory = "/usr/share/datasets/fashion-mnist";
    if (!exists(directory)) {
      throw Error("Fashion-MNIST is not installed: " + directory + " is missing (apt-get install dataset-fashion-mnist)");
    }
  } else if (name_or_directory == "mnist") {
    // Debian 12 packages no MNIST; a directory of the original files works.
    directory = "/usr/share/datasets/mnist";
    if (!exists(directory)) {
      throw Error("MNIST is not packaged by Debian 12: put train-images-idx3-ubyte.gz and the other three files in a "
                  "directory and pass --data DIR (" + directory + " does not exist)");
    }
  } else if (!exists(directory)) {
    throw Error(name_or_directory + ": no such dataset (fashion-mnist, mnist) or directory");
  }
  const std::string prefix = split == Split::train ? "train" : "t10k";
  return load_idx_dataset(find_file(directory, prefix + "-images-idx3-ubyte"), find_file(directory, prefix + "-labels-idx1-ubyte"),
                          10, limit);
}

namespace {

std::string kind_of_images(std::int64_t channels) {
  return channels == 1 ? "grey" : channels == 3 ? "RGB" : std::to_string(channels) + "-channel";
}

// One value for every channel, or one per channel.
std::vector<double> per_channel(const std::vector<double>& values, std::int64_t channels, const char* option) {
  if (values.size() == 1) return std::vector<double>(static_cast<std::size_t>(channels), values[0]);
  if (static_cast<std::int64_t>(values.size()) != channels) {
    const std::string expected = channels == 1 ? "1 value (the model's input has 1 channel)"
                                               : "1 value or " + std::to_string(channels) + " (one per channel)";
    throw Error(std::string("normalization ") + option + ": expected " + expected + ", found " + std::to_string(values.size()));
  }
  return values;
}

}  // namespace

ImageFormat image_format_for(const Shape& input, const Dataset& dataset, const std::vector<double>& mean,
                             const std::vector<double>& std) {
  const std::int64_t c = dataset.channels;
  if (input.rank() != 3 || input[0] != c || input[1] < dataset.height || input[2] < dataset.width) {
    throw Error("the model takes inputs " + input.str() + " but " + dataset.source + " holds " + std::to_string(dataset.height) +
                "x" + std::to_string(dataset.width) + " " + kind_of_images(c) + " images; a model for it takes (" +
                std::to_string(c) + ", H, W) with H >= " + std::to_string(dataset.height) + " and W >= " +
                std::to_string(dataset.width));
  }
  const std::vector<double> means = per_channel(mean, c, "mean"), stds = per_channel(std, c, "std");
  ImageFormat format;
  format.channels = c;
  format.height = input[1];
  format.width = input[2];
  format.pad_top = (input[1] - dataset.height) / 2;
  format.pad_left = (input[2] - dataset.width) / 2;
  format.scale.clear();
  format.shift.clear();
  for (std::int64_t i = 0; i < c; ++i) {
    const double s = stds[static_cast<std::size_t>(i)], m = means[static_cast<std::size_t>(i)];
    if (!(s > 0.0)) throw Error("normalization std must be positive, found " + std::to_string(s));
    format.scale.push_back(static_cast<float>(1.0 / (255.0 * s)));
    format.shift.push_back(static_cast<float>(-m / s));
  }
  return format;
}

ImageFormat image_format_for(const Shape& input, const Dataset& dataset, double mean, double std) {
  return image_format_for(input, dataset, std::vector<double>{mean}, std::vector<double>{std});
}

BatchLoader::BatchLoader(const Dataset& dataset, const ImageFormat& format, std::int64_t batch_size, std::uint64_t seed,
                         bool shuffle, const SampleAugmenter* augmenter)
    : dataset_(dataset),
      format_(format),
      augmenter_(augmenter),
      batch_size_(batch_size),
      order_(dataset.count, seed, shuffle) {
  if (batch_size < 1) throw Error("batch size must be positive, found " + std::to_string(batch_size));
  if (dataset.count < 1) throw Error(dataset.source + ": the dataset is empty");
  if (augmenter != nullptr) scratch_.resize(static_cast<std::size_t>(dataset.sample_bytes()));
}

const std::vector<std::int64_t>& BatchLoader::order(int epoch) { return order_.of(epoch); }

void BatchLoader::load_sample(const std::uint8_t* pixels, float* out) const {
  const auto& to_float = simd::elementwise_kernels().u8_to_float;
  const std::int64_t h = dataset_.height, w = dataset_.width, plane = format_.height * format_.width;
  const bool padded = format_.height != h || format_.width != w;
  for (std::int64_t c = 0; c < format_.channels; ++c, pixels += h * w, out += plane) {
    const float scale = format_.scale[static_cast<std::size_t>(c)], shift = format_.shift[static_cast<std::size_t>(c)];
    if (!padded) {
      to_float(out, pixels, scale, shift, h * w);
      continue;
    }
    std::fill(out, out + plane, shift);  // a black pixel, normalized
    for (std::int64_t r = 0; r < h; ++r) {
      to_float(out + (r + format_.pad_top) * format_.width + format_.pad_left, pixels + r * w, scale, shift, w);
    }
  }
}

std::int64_t BatchLoader::load(int epoch, std::int64_t batch, float* images, std::int32_t* labels, const SampleFilter& wanted) {
  if (batch < 0 || batch >= batches_per_epoch()) {
    throw Error("batch " + std::to_string(batch) + " does not exist; an epoch has " + std::to_string(batches_per_epoch()));
  }
  const std::vector<std::int64_t>& indices = order(epoch);
  const std::int64_t first = batch * batch_size_;
  const std::int64_t count = std::min(batch_size_, dataset_.count - first);
  const std::int64_t bytes = dataset_.sample_bytes();
  for (std::int64_t i = 0; i < count; ++i) {
    if (wanted && !wanted(i)) continue;
    const std::int64_t sample = indices[static_cast<std::size_t>(first + i)];
    const std::uint8_t* pixels = dataset_.images.data() + sample * bytes;
    if (augmenter_ != nullptr) {
      std::copy(pixels, pixels + bytes, scratch_.begin());
      augmenter_->apply(scratch_.data(), dataset_.channels, dataset_.height, dataset_.width, epoch, sample);
      pixels = scratch_.data();
    }
    load_sample(pixels, images + i * sample_floats());
    labels[i] = dataset_.labels[static_cast<std::size_t>(sample)];
  }
  return count;
}

}  // namespace ember
