#include "engine/synthetic_task.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "engine/error.h"
#include "engine/random.h"

namespace ember {

RegressionDataset make_attention_retrieval(std::int64_t count, std::uint64_t seed) {
  constexpr std::int64_t T = attention_retrieval_tokens, F = attention_retrieval_features, O = attention_retrieval_outputs;
  RegressionDataset data;
  data.sample_shape = Shape{T, F};
  data.outputs = O;
  data.count = count;
  data.inputs.resize(static_cast<std::size_t>(count * T * F));
  data.targets.resize(static_cast<std::size_t>(count * O));
  Random random(seed);
  for (std::int64_t n = 0; n < count; ++n) {
    float* x = data.inputs.data() + n * T * F;
    for (std::int64_t i = 0; i < T * F; ++i) x[i] = random.normal();
    std::int64_t key = 0;
    for (std::int64_t t = 1; t < T; ++t) {
      if (x[t * F] > x[key * F]) key = t;
    }
    std::memcpy(data.targets.data() + n * O, x + key * F + 1, static_cast<std::size_t>(O) * sizeof(float));
  }
  return data;
}

RegressionDataset attention_retrieval_split(Split split, std::int64_t limit, std::uint64_t run_seed) {
  if (split == Split::train) return make_attention_retrieval(limit > 0 ? limit : 20000, mix64(run_seed) ^ 1);
  return make_attention_retrieval(limit > 0 ? limit : 2000, mix64(run_seed) ^ 2);
}

RegressionLoader::RegressionLoader(const RegressionDataset& data, std::int64_t batch_size, std::uint64_t seed, bool shuffle)
    : data_(data), batch_size_(batch_size), order_(data.count, seed, shuffle) {
  if (batch_size < 1) throw Error("batch size must be positive, found " + std::to_string(batch_size));
}

std::int64_t RegressionLoader::load(int epoch, std::int64_t batch, float* inputs, float* targets, const SampleFilter& wanted) {
  if (batch < 0 || batch >= batches_per_epoch()) {
    throw Error("batch " + std::to_string(batch) + " does not exist; an epoch has " + std::to_string(batches_per_epoch()));
  }
  const std::vector<std::int64_t>& order = order_.of(epoch);
  const std::int64_t first = batch * batch_size_;
  const std::int64_t count = std::min(batch_size_, data_.count - first);
  const std::int64_t in = data_.sample_shape.elements();
  for (std::int64_t i = 0; i < count; ++i) {
    if (wanted && !wanted(i)) continue;
    const std::int64_t sample = order[static_cast<std::size_t>(first + i)];
    std::memcpy(inputs + i * in, data_.inputs.data() + sample * in, static_cast<std::size_t>(in) * sizeof(float));
    std::memcpy(targets + i * data_.outputs, data_.targets.data() + sample * data_.outputs,
                static_cast<std::size_t>(data_.outputs) * sizeof(float));
  }
  return count;
}

}  // namespace ember
