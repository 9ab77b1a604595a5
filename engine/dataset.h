#pragma once
// Image classification datasets (the MNIST family's IDX files, or image folders:
// engine/image_folder.h) and the batches training reads.
//
// Samples stay as uint8 in memory (60000 Fashion-MNIST images are 47 MB) and are turned
// into normalized floats one batch at a time: x / 255, then (x - mean[c]) / std[c] per
// channel, zero-padded to the model's input size (28x28 -> 32x32 for LeNet) with the
// value a black pixel gets; training batches may be augmented first (engine/augment.h).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/epoch_order.h"
#include "engine/random.h"
#include "engine/shape.h"

namespace ember {

enum class Split { train, test };

// Which samples of a batch (by position in it) a loader fills; the rest of the buffers
// stay as they were. Empty: all. A rank of a data-parallel run reads only its own.
using SampleFilter = std::function<bool(std::int64_t)>;

struct Dataset {
  std::string source;  // where it was read from, for messages
  std::int64_t count = 0;
  std::int64_t channels = 1;
  std::int64_t height = 0, width = 0;
  int classes = 10;
  std::vector<std::string> class_names;  // one per class; empty: the classes are numbers
  std::vector<std::uint8_t> images;  // count x channels x height x width
  std::vector<std::int32_t> labels;  // count, each in [0, classes)
  std::int64_t size() const { return count; }
  std::int64_t sample_bytes() const { return channels * height * width; }
};

// Reads an images file and a labels file (IDX, raw or gzip); checks that the counts agree
// and every label is in [0, classes). limit > 0 keeps only the first `limit` samples.
Dataset load_idx_dataset(const std::string& images_path, const std::string& labels_path, int classes = 10,
                         std::int64_t limit = 0);

// "fashion-mnist" (Debian's dataset-fashion-mnist), "mnist", or a directory holding
// {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].
Dataset load_dataset(const std::string& name_or_directory, Split split, std::int64_t limit = 0);

// How samples become model inputs.
struct ImageFormat {
  std::int64_t channels = 1;
  std::int64_t height = 0, width = 0;        // the model's input
  std::int64_t pad_top = 0, pad_left = 0;    // where the image sits inside it
  // Per channel: x * scale + shift = (x / 255 - mean) / std
  std::vector<float> scale{1.0f / 255.0f};
  std::vector<float> shift{0.0f};
};

// The format for a model whose one-sample input shape is (C, H, W), C the dataset's
// channels; the images must fit (they are centred). mean and std hold one value (for
// every channel) or one per channel. Errors name both shapes, or the option and counts.
ImageFormat image_format_for(const Shape& input_sample_shape, const Dataset& dataset, const std::vector<double>& mean,
                             const std::vector<double>& std);
ImageFormat image_format_for(const Shape& input_sample_shape, const Dataset& dataset, double mean, double std);

// Changes a training batch's sample in place (C x H x W uint8) before it is normalized:
// engine/augment.h. `sample` is the dataset index, `epoch` the epoch.
class SampleAugmenter {
 public:
  virtual ~SampleAugmenter() = default;
  virtual void apply(std::uint8_t* pixels, std::int64_t channels, std::int64_t height, std::int64_t width, int epoch,
                     std::int64_t sample) const = 0;
};

// Batches of a dataset in a per-epoch order: shuffled from (seed, epoch) or in file
// order. The last batch of an epoch holds the remainder; nothing is dropped.
class BatchLoader {
 public:
  // `augmenter` (may be null; owned by the caller) changes each sample before it is normalized.
  BatchLoader(const Dataset& dataset, const ImageFormat& format, std::int64_t batch_size, std::uint64_t seed, bool shuffle,
              const SampleAugmenter* augmenter = nullptr);

  std::int64_t batch_size() const { return batch_size_; }
  std::int64_t batches_per_epoch() const { return (dataset_.count + batch_size_ - 1) / batch_size_; }
  std::int64_t sample_floats() const { return format_.channels * format_.height * format_.width; }

  // Fills images (batch_size x sample_floats()) and labels (batch_size) with batch `batch`
  // of epoch `epoch` (only the samples `wanted` names); returns how many samples it holds.
  std::int64_t load(int epoch, std::int64_t batch, float* images, std::int32_t* labels, const SampleFilter& wanted = {});
  // The sample order of an epoch.
  const std::vector<std::int64_t>& order(int epoch);

 private:
  void load_sample(const std::uint8_t* pixels, float* out) const;

  const Dataset& dataset_;
  ImageFormat format_;
  const SampleAugmenter* augmenter_;
  std::vector<std::uint8_t> scratch_;  // an augmented sample
  std::int64_t batch_size_;
  EpochOrder order_;
};

}  // namespace ember
