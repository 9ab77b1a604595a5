#pragma once
// The order in which an epoch visits a dataset's samples: shuffled from (seed, epoch) with
// Fisher-Yates, or in file order. The same seed and epoch always give the same order, on
// any machine (engine/random.h), which resuming a run relies on.
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

#include "engine/random.h"

namespace ember {

class EpochOrder {
 public:
  EpochOrder(std::int64_t count, std::uint64_t seed, bool shuffle) : count_(count), seed_(seed), shuffle_(shuffle) {}

  // The sample indices of `epoch`; computed once per epoch and kept.
  const std::vector<std::int64_t>& of(int epoch) {
    if (epoch_ == epoch) return order_;
    order_.resize(static_cast<std::size_t>(count_));
    std::iota(order_.begin(), order_.end(), 0);
    if (shuffle_) {
      Random random(mix64(seed_) ^ mix64(static_cast<std::uint64_t>(epoch) + 0x5eed));
      for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[random.below(i)]);
    }
    epoch_ = epoch;
    return order_;
  }

 private:
  std::int64_t count_;
  std::uint64_t seed_;
  bool shuffle_;
  int epoch_ = -1;
  std::vector<std::int64_t> order_;
};

}  // namespace ember
