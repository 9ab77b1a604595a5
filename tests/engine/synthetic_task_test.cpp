#include "engine/synthetic_task.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/error.h"

namespace ember {
namespace {

TEST(AttentionRetrieval, TargetsAreTheValuesOfTheTokenWithTheLargestKey) {
  const RegressionDataset data = make_attention_retrieval(200, 3);
  ASSERT_EQ(data.sample_shape, (Shape{16, 8}));
  ASSERT_EQ(data.outputs, 4);
  double sum_squares = 0.0;
  for (std::int64_t n = 0; n < data.count; ++n) {
    const float* x = data.inputs.data() + n * 128;
    std::int64_t key = 0;
    for (std::int64_t t = 0; t < 16; ++t) {
      if (x[t * 8] > x[key * 8]) key = t;
    }
    for (std::int64_t o = 0; o < 4; ++o) {
      ASSERT_EQ(data.targets[static_cast<std::size_t>(n * 4 + o)], x[key * 8 + 1 + o]) << "sample " << n;
      sum_squares += static_cast<double>(x[key * 8 + 1 + o]) * x[key * 8 + 1 + o];
    }
  }
  // Targets are N(0, 1): predicting zero scores an MSE near 1, the task's baseline.
  EXPECT_NEAR(sum_squares / 800.0, 1.0, 0.2);
}

TEST(AttentionRetrieval, TheSameSeedGivesTheSameSamples) {
  EXPECT_EQ(make_attention_retrieval(10, 5).inputs, make_attention_retrieval(10, 5).inputs);
  EXPECT_NE(make_attention_retrieval(10, 5).inputs, make_attention_retrieval(10, 6).inputs);
}

TEST(RegressionLoader, EveryEpochVisitsEverySampleOnceAndKeepsThePartialBatch) {
  const RegressionDataset data = make_attention_retrieval(10, 1);
  RegressionLoader loader(data, 4, 9, true);
  ASSERT_EQ(loader.batches_per_epoch(), 3);
  std::vector<float> x(4 * 128), y(4 * 4);
  std::vector<int> seen(10, 0);
  std::int64_t total = 0;
  for (std::int64_t b = 0; b < 3; ++b) {
    const std::int64_t count = loader.load(0, b, x.data(), y.data());
    total += count;
    for (std::int64_t i = 0; i < count; ++i) {
      for (std::int64_t n = 0; n < 10; ++n) {
        if (std::equal(x.begin() + i * 128, x.begin() + (i + 1) * 128, data.inputs.begin() + n * 128)) ++seen[static_cast<std::size_t>(n)];
      }
    }
  }
  EXPECT_EQ(total, 10);
  EXPECT_EQ(seen, std::vector<int>(10, 1));
}

TEST(RegressionLoader, BadBatchSizesAndIndicesAreRefused) {
  const RegressionDataset data = make_attention_retrieval(10, 1);
  EXPECT_THROW(RegressionLoader(data, 0, 1, true), Error);
  RegressionLoader loader(data, 4, 1, true);
  std::vector<float> x(4 * 128), y(4 * 4);
  try {
    loader.load(0, 3, x.data(), y.data());
    ADD_FAILURE() << "batch 3 of 3 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("an epoch has 3"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ember
