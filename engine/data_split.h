#pragma once
// A seeded hold-out split: which samples of `count` form the test split (round(fraction
// x count) of them, at least one), the rest the training split, both in their original
// order. The same seed always gives the same split.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/random.h"

namespace ember {

struct SplitIndices {
  std::vector<std::int64_t> train, test;
};

inline SplitIndices split_indices(std::int64_t count, double fraction, std::uint64_t seed, const std::string& source) {
  const auto held_out = std::max<std::int64_t>(1, std::llround(fraction * static_cast<double>(count)));
  if (!(fraction > 0.0 && fraction < 1.0) || held_out >= count) {
    throw Error(source + ": a validation split of " + std::to_string(fraction) + " of " + std::to_string(count) +
                " samples leaves no training or no test samples; expected a fraction in (0, 1) and more samples");
  }
  std::vector<std::int64_t> order(static_cast<std::size_t>(count));
  std::iota(order.begin(), order.end(), 0);
  Random random(mix64(seed) ^ 0x5917u);
  for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[random.below(i)]);
  SplitIndices split;
  split.test.assign(order.begin(), order.begin() + held_out);
  split.train.assign(order.begin() + held_out, order.end());
  std::sort(split.test.begin(), split.test.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

}  // namespace ember
