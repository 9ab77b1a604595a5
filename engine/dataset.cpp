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

ImageFormat image_format_for(const Shape& input, const Dataset& dataset, double mean, double std) {
  if (input.rank() != 3 || input[0] != 1 || input[1] < dataset.height || input[2] < dataset.width) {
    throw Error("the model takes inputs " + input.str() + " but " + dataset.source + " holds " + std::to_string(dataset.height) +
                "x" + std::to_string(dataset.width) + " grey images; a model for it takes (1, H, W) with H >= " +
                std::to_string(dataset.height) + " and W >= " + std::to_string(dataset.width));
  }
  if (!(std > 0.0)) throw Error("normalization std must be positive, found " + std::to_string(std));
  ImageFormat format;
  format.height = input[1];
  format.width = input[2];
  format.pad_top = (input[1] - dataset.height) / 2;
  format.pad_left = (input[2] - dataset.width) / 2;
  format.scale = static_cast<float>(1.0 / (255.0 * std));
  format.shift = static_cast<float>(-mean / std);
  return format;
}

BatchLoader::BatchLoader(const Dataset& dataset, const ImageFormat& format, std::int64_t batch_size, std::uint64_t seed,
                         bool shuffle)
    : dataset_(dataset), format_(format), batch_size_(batch_size), order_(dataset.count, seed, shuffle) {
  if (batch_size < 1) throw Error("batch size must be positive, found " + std::to_string(batch_size));
  if (dataset.count < 1) throw Error(dataset.source + ": the dataset is empty");
}

const std::vector<std::int64_t>& BatchLoader::order(int epoch) { return order_.of(epoch); }

std::int64_t BatchLoader::load(int epoch, std::int64_t batch, float* images, std::int32_t* labels, const SampleFilter& wanted) {
  if (batch < 0 || batch >= batches_per_epoch()) {
    throw Error("batch " + std::to_string(batch) + " does not exist; an epoch has " + std::to_string(batches_per_epoch()));
  }
  const std::vector<std::int64_t>& indices = order(epoch);
  const std::int64_t first = batch * batch_size_;
  const std::int64_t count = std::min(batch_size_, dataset_.count - first);
  const auto& to_float = simd::elementwise_kernels().u8_to_float;
  const std::int64_t h = dataset_.height, w = dataset_.width, plane = format_.height * format_.width;
  const bool padded = format_.height != h || format_.width != w;
  for (std::int64_t i = 0; i < count; ++i) {
    if (wanted && !wanted(i)) continue;
    const std::int64_t sample = indices[static_cast<std::size_t>(first + i)];
    const std::uint8_t* pixels = dataset_.images.data() + sample * h * w;
    float* out = images + i * plane;
    if (!padded) {
      to_float(out, pixels, format_.scale, format_.shift, h * w);
    } else {
      std::fill(out, out + plane, format_.shift);  // a black pixel, normalized
      for (std::int64_t r = 0; r < h; ++r) {
        to_float(out + (r + format_.pad_top) * format_.width + format_.pad_left, pixels + r * w, format_.scale, format_.shift, w);
      }
    }
    labels[i] = dataset_.labels[static_cast<std::size_t>(sample)];
  }
  return count;
}

}  // namespace ember
