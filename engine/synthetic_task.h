#pragma once
// The synthetic regression task behind `ember train --model attention-mse` (the tutorial's
// attention example, trained with MSE). Each sample is a sequence of 16 tokens of 8
// features drawn from N(0, 1); the target is features 1..4 of the token whose feature 0
// is the largest. Predicting zeros, or any average over the tokens, leaves a mean squared
// error near 1; a model must find the one token that matters and copy from it, which is
// what attention pooling (score each token, softmax over tokens, weighted sum) can learn.
#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/dataset.h"
#include "engine/epoch_order.h"
#include "engine/shape.h"

namespace ember {

struct RegressionDataset {
  Shape sample_shape;          // one input sample, e.g. (16, 8)
  std::int64_t outputs = 0;    // target values per sample
  std::int64_t count = 0;
  std::vector<float> inputs;   // count x sample_shape.elements()
  std::vector<float> targets;  // count x outputs
};

inline constexpr std::string_view attention_retrieval_name = "attention-retrieval";
inline constexpr std::int64_t attention_retrieval_tokens = 16;
inline constexpr std::int64_t attention_retrieval_features = 8;
inline constexpr std::int64_t attention_retrieval_outputs = 4;

// The same (count, seed) always gives the same samples; the training and test splits use
// different seeds.
RegressionDataset make_attention_retrieval(std::int64_t count, std::uint64_t seed);

// A split as a training run with seed `run_seed` draws it: `limit` samples (0: 20000 for
// training, 2000 for test). ember train and ember eval both use it, so eval sees the
// run's test set.
RegressionDataset attention_retrieval_split(Split split, std::int64_t limit, std::uint64_t run_seed);

// Batches of a regression dataset in a per-epoch order (shuffled from seed and epoch, or in
// order); the last partial batch is kept.
class RegressionLoader {
 public:
  RegressionLoader(const RegressionDataset& data, std::int64_t batch_size, std::uint64_t seed, bool shuffle);
  std::int64_t batch_size() const { return batch_size_; }
  std::int64_t batches_per_epoch() const { return (data_.count + batch_size_ - 1) / batch_size_; }
  // Fills inputs and targets with batch `batch` of `epoch` (only the samples `wanted`
  // names: engine/dataset.h); returns its sample count.
  std::int64_t load(int epoch, std::int64_t batch, float* inputs, float* targets, const SampleFilter& wanted = {});

 private:
  const RegressionDataset& data_;
  std::int64_t batch_size_;
  EpochOrder order_;
};

}  // namespace ember
