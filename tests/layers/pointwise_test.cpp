// ReLU, Softmax, Dropout, Flatten and Add: references and gradient checks.
#include <gtest/gtest.h>

#include <cmath>

#include <oneapi/dnnl/dnnl.hpp>

#include "layers/add.h"
#include "layers/dropout.h"
#include "layers/flatten.h"
#include "layers/relu.h"
#include "layers/softmax.h"
#include "support/layer_harness.h"
#include "support/expect_error.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

// Values at least 0.05 away from zero, so a finite-difference step never crosses the kink.
void keep_away_from_zero(std::vector<float>& x) {
  for (float& v : x) v = v >= 0.0f ? v + 0.05f : v - 0.05f;
}

TEST(Relu, ForwardAndGradients) {
  const Relu layer;
  for (const Shape& shape : {Shape{1, 7}, Shape{3, 5, 7, 3}}) {
    LayerHarness harness(layer, {HarnessInput{shape}});
    keep_away_from_zero(harness.inputs[0]);
    const std::vector<float> y = harness.forward();
    std::vector<double> reference;
    for (float v : harness.inputs[0]) reference.push_back(std::max(0.0f, v));
    testing::expect_close(y, reference, 0.0, "relu output");
    testing::expect_gradients_match_finite_differences(harness);
  }
}

TEST(Relu, WorksOnABlockedLayout) {
  const Relu layer;
  LayerHarness harness(layer, {HarnessInput{Shape{2, 17, 3, 3}, dnnl::memory::format_tag::nChw16c}});
  keep_away_from_zero(harness.inputs[0]);
  const std::vector<float> y = harness.forward();
  for (std::size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], std::max(0.0f, harness.inputs[0][i])) << i;
  testing::expect_gradients_match_finite_differences(harness);
}

TEST(Softmax, ForwardAndGradients) {
  const Softmax layer;
  for (const Shape& shape : {Shape{1, 1}, Shape{3, 10}, Shape{2, 5, 17}}) {
    LayerHarness harness(layer, {HarnessInput{shape}});
    const std::vector<float> y = harness.forward();
    const std::int64_t cols = shape[shape.rank() - 1];
    std::vector<double> reference(y.size());
    for (std::int64_t r = 0; r < shape.elements() / cols; ++r) {
      double sum = 0.0;
      for (std::int64_t c = 0; c < cols; ++c) sum += std::exp(static_cast<double>(harness.inputs[0][static_cast<std::size_t>(r * cols + c)]));
      for (std::int64_t c = 0; c < cols; ++c) {
        reference[static_cast<std::size_t>(r * cols + c)] = std::exp(static_cast<double>(harness.inputs[0][static_cast<std::size_t>(r * cols + c)])) / sum;
      }
    }
    testing::expect_close(y, reference, 1e-6, "softmax output");
    testing::expect_gradients_match_finite_differences(harness);
  }
}

TEST(Softmax, HugeLogitsStayFinite) {
  const Softmax layer;
  LayerHarness harness(layer, {HarnessInput{Shape{1, 4}}});
  harness.inputs[0] = {1e4f, -1e4f, 1e4f - 1.0f, 0.0f};
  const std::vector<float> y = harness.forward();
  const double e = std::exp(-1.0);
  testing::expect_close(y, {1.0 / (1.0 + e), 0.0, e / (1.0 + e), 0.0}, 1e-6, "softmax of huge logits");
}

TEST(Dropout, TrainingZeroesAboutPAndScalesTheRest) {
  const double p = 0.3;
  const Dropout layer(p);
  LayerHarness harness(layer, {HarnessInput{Shape{8, 1000}}});
  const std::vector<float> y = harness.forward(7);
  std::size_t zeros = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    if (y[i] == 0.0f) {
      ++zeros;
    } else {
      ASSERT_FLOAT_EQ(y[i], harness.inputs[0][i] / static_cast<float>(1.0 - p)) << i;
    }
  }
  // 8000 Bernoulli(0.3) draws: the standard deviation of the fraction is 0.005.
  EXPECT_NEAR(static_cast<double>(zeros) / static_cast<double>(y.size()), p, 0.025);
  EXPECT_EQ(harness.forward(7), y) << "the same key must give the same mask";
  EXPECT_NE(harness.forward(8), y) << "another key must give another mask";
  testing::expect_gradients_match_finite_differences(harness);
}

TEST(Dropout, MaskOfASampleDoesNotDependOnTheMicroBatch) {
  const Dropout layer(0.5);
  LayerHarness whole(layer, {HarnessInput{Shape{4, 64}}});
  const std::vector<float> all = whole.forward(11);
  // The second half of the batch run alone, as samples 2 and 3, gets the same mask.
  LayerHarness half(layer, {HarnessInput{Shape{2, 64}}});
  half.inputs[0].assign(whole.inputs[0].begin() + 128, whole.inputs[0].end());
  half.first_sample = 2;
  const std::vector<float> second = half.forward(11);
  EXPECT_EQ(second, std::vector<float>(all.begin() + 128, all.end()));
}

TEST(Dropout, InferenceIsTheIdentity) {
  const Dropout layer(0.5);
  LayerHarness harness(layer, {HarnessInput{Shape{3, 33}}}, Mode::inference);
  EXPECT_EQ(harness.forward(), harness.inputs[0]);
}

TEST(Dropout, ProbabilityOutsideZeroToOneIsRefused) {
  EXPECT_TRUE(testing::throws_error_with([] { Dropout(1.0); }, {"dropout", "\"p\"", "[0, 1)", "found 1"}));
  EXPECT_TRUE(testing::throws_error_with([] { Dropout(-0.1); }, {"dropout", "\"p\"", "[0, 1)", "found -0.1"}));
}

TEST(Flatten, KeepsRowMajorOrder) {
  const Flatten layer;
  LayerHarness harness(layer, {HarnessInput{Shape{2, 3, 5, 7}}});
  EXPECT_EQ(harness.output_shape(), (Shape{2, 105}));
  EXPECT_EQ(harness.forward(), harness.inputs[0]);
  testing::expect_gradients_match_finite_differences(harness);
}

TEST(Add, SumsAndPassesTheGradientToBoth) {
  const Add layer;
  LayerHarness harness(layer, {HarnessInput{Shape{3, 5, 7}}, HarnessInput{Shape{3, 5, 7}}});
  const std::vector<float> y = harness.forward();
  std::vector<double> reference;
  for (std::size_t i = 0; i < y.size(); ++i) reference.push_back(static_cast<double>(harness.inputs[0][i]) + harness.inputs[1][i]);
  testing::expect_close(y, reference, 1e-7, "sum");
  testing::expect_gradients_match_finite_differences(harness);
}

TEST(Add, DifferentShapesAreRefused) {
  const Add layer;
  const std::vector<Shape> shapes{Shape{2, 4}, Shape{2, 5}};
  try {
    (void)layer.output_shape(shapes);
    FAIL() << "(2, 4) + (2, 5) was accepted";
  } catch (const std::exception& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("(2, 4)"), std::string::npos) << message;
    EXPECT_NE(message.find("(2, 5)"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace ember
