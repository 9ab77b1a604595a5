#include "engine/loss.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/error.h"
#include "engine/random.h"

namespace ember {
namespace {

template <class Function>
std::string error_message(Function&& function) {
  try {
    function();
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

std::vector<float> random_values(std::size_t count, std::uint64_t seed, float scale) {
  Random random(seed);
  std::vector<float> values(count);
  for (float& v : values) v = scale * random.normal();
  return values;
}

std::vector<std::int32_t> random_labels(std::size_t count, std::int64_t classes, std::uint64_t seed) {
  Random random(seed);
  std::vector<std::int32_t> labels(count);
  for (auto& l : labels) l = static_cast<std::int32_t>(random.below(static_cast<std::uint64_t>(classes)));
  return labels;
}

struct Reference {
  double loss_sum = 0.0;
  std::int64_t correct = 0;
  std::vector<double> gradient;
};

// PyTorch's cross_entropy(label_smoothing=epsilon, reduction='sum') in double, and the
// gradient of grad_scale times it.
Reference reference_cross_entropy(const std::vector<float>& logits, const std::vector<std::int32_t>& labels,
                                  std::int64_t rows, std::int64_t classes, double epsilon, double grad_scale) {
  Reference out;
  out.gradient.resize(static_cast<std::size_t>(rows * classes));
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* x = logits.data() + r * classes;
    double max = x[0];
    std::int64_t best = 0;
    for (std::int64_t c = 1; c < classes; ++c) {
      if (x[c] > max) {
        max = x[c];
        best = c;
      }
    }
    double sum = 0.0;
    for (std::int64_t c = 0; c < classes; ++c) sum += std::exp(x[c] - max);
    const double log_sum = max + std::log(sum);
    const std::int32_t y = labels[static_cast<std::size_t>(r)];
    double smooth = 0.0;
    for (std::int64_t c = 0; c < classes; ++c) smooth += -(x[c] - log_sum);
    out.loss_sum += (1.0 - epsilon) * -(x[y] - log_sum) + epsilon * smooth / static_cast<double>(classes);
    if (best == y) ++out.correct;
    for (std::int64_t c = 0; c < classes; ++c) {
      const double p = std::exp(x[c] - log_sum);
      const double q = (c == y ? 1.0 - epsilon : 0.0) + epsilon / static_cast<double>(classes);
      out.gradient[static_cast<std::size_t>(r * classes + c)] = grad_scale * (p - q);
    }
  }
  return out;
}

void expect_close(double actual, double expected, double relative, const std::string& what) {
  EXPECT_LE(std::abs(actual - expected), relative * std::max(1.0, std::abs(expected)))
      << what << ": " << actual << " vs " << expected;
}

TEST(CrossEntropyLoss, MatchesDoubleReferenceOnAwkwardClassCounts) {
  for (std::int64_t classes : {1, 2, 7, 10, 17, 33, 1000}) {
    for (float epsilon : {0.0f, 0.1f}) {
      const std::int64_t rows = 9;
      const auto logits = random_values(static_cast<std::size_t>(rows * classes), 11 + classes, 3.0f);
      const auto labels = random_labels(static_cast<std::size_t>(rows), classes, 5 + classes);
      const CrossEntropyLoss loss(epsilon);
      std::vector<float> gradient(logits.size(), -7.0f);
      const float grad_scale = 1.0f / static_cast<float>(rows);
      const LossResult result =
          loss.compute(Tensor{const_cast<float*>(logits.data()), Shape{rows, classes}}, Targets{labels}, grad_scale,
                       gradient.data());
      const Reference reference = reference_cross_entropy(logits, labels, rows, classes, epsilon, grad_scale);
      const std::string what = "classes " + std::to_string(classes) + " epsilon " + std::to_string(epsilon);
      expect_close(result.loss_sum, reference.loss_sum, 2e-6, what);
      EXPECT_EQ(result.correct, reference.correct) << what;
      for (std::size_t i = 0; i < gradient.size(); ++i) {
        ASSERT_NEAR(gradient[i], reference.gradient[i], 2e-7) << what << " element " << i;
      }
      // Loss only: the same loss and count, nothing written.
      const LossResult loss_only = loss.compute(Tensor{const_cast<float*>(logits.data()), Shape{rows, classes}},
                                                Targets{labels}, grad_scale, nullptr);
      EXPECT_EQ(loss_only.loss_sum, result.loss_sum) << what;
      EXPECT_EQ(loss_only.correct, result.correct) << what;
    }
  }
}

// The golden is torch 1.13's value (Debian python3-torch, float64 inputs):
//   import torch, torch.nn.functional as F
//   x = torch.tensor([[1., 2, 3], [.5, -1, 4]], dtype=torch.float64)
//   print(F.cross_entropy(x, torch.tensor([0, 2]), label_smoothing=0.2, reduction='sum').item())
TEST(CrossEntropyLoss, LabelSmoothingMatchesPyTorch) {
  std::vector<float> logits = {1.0f, 2.0f, 3.0f, 0.5f, -1.0f, 4.0f};
  std::vector<std::int32_t> labels = {0, 2};
  const CrossEntropyLoss loss(0.2f);
  const LossResult result = loss.compute(Tensor{logits.data(), Shape{2, 3}}, Targets{labels}, 1.0f, nullptr);
  EXPECT_NEAR(result.loss_sum, 2.8105421962358266, 1e-6);
  EXPECT_EQ(result.correct, 1);
  EXPECT_FLOAT_EQ(loss.label_smoothing(), 0.2f);
}

// Central differences of the loss sum, in double, against the analytic gradient.
TEST(CrossEntropyLoss, GradientMatchesFiniteDifferences) {
  for (float epsilon : {0.0f, 0.3f}) {
    const std::int64_t rows = 4, classes = 6;
    auto logits = random_values(static_cast<std::size_t>(rows * classes), 99, 2.0f);
    const auto labels = random_labels(static_cast<std::size_t>(rows), classes, 3);
    const CrossEntropyLoss loss(epsilon);
    const float grad_scale = 0.25f;
    std::vector<float> gradient(logits.size());
    loss.compute(Tensor{logits.data(), Shape{rows, classes}}, Targets{labels}, grad_scale, gradient.data());
    const float h = 1e-2f;
    for (std::size_t i = 0; i < logits.size(); ++i) {
      const float saved = logits[i];
      logits[i] = saved + h;
      const double plus = loss.compute(Tensor{logits.data(), Shape{rows, classes}}, Targets{labels}, 1.0f, nullptr).loss_sum;
      logits[i] = saved - h;
      const double minus = loss.compute(Tensor{logits.data(), Shape{rows, classes}}, Targets{labels}, 1.0f, nullptr).loss_sum;
      logits[i] = saved;
      const double numeric = grad_scale * (plus - minus) / (2.0 * h);
      EXPECT_NEAR(gradient[i], numeric, 2e-4) << "epsilon " << epsilon << " element " << i;
    }
  }
}

TEST(CrossEntropyLoss, MicroBatchSumsEqualTheFullBatch) {
  const std::int64_t rows = 12, classes = 10;
  const auto logits = random_values(static_cast<std::size_t>(rows * classes), 7, 2.0f);
  const auto labels = random_labels(static_cast<std::size_t>(rows), classes, 8);
  const CrossEntropyLoss loss(0.1f);
  const float grad_scale = 1.0f / static_cast<float>(rows);
  std::vector<float> full_gradient(logits.size());
  const LossResult full = loss.compute(Tensor{const_cast<float*>(logits.data()), Shape{rows, classes}}, Targets{labels},
                                       grad_scale, full_gradient.data());

  std::vector<float> parts_gradient(logits.size());
  double loss_sum = 0.0;
  std::int64_t correct = 0;
  std::int64_t first = 0;
  for (std::int64_t count : {5, 4, 3}) {
    const Targets part{std::span<const std::int32_t>(labels).subspan(static_cast<std::size_t>(first),
                                                                     static_cast<std::size_t>(count))};
    const LossResult r = loss.compute(Tensor{const_cast<float*>(logits.data()) + first * classes, Shape{count, classes}},
                                      part, grad_scale, parts_gradient.data() + first * classes);
    loss_sum += r.loss_sum;
    correct += r.correct;
    first += count;
  }
  EXPECT_NEAR(loss_sum, full.loss_sum, 1e-13 * full.loss_sum);
  EXPECT_EQ(correct, full.correct);
  // Each row is computed the same way wherever it falls: gradients are bitwise equal.
  EXPECT_EQ(std::memcmp(parts_gradient.data(), full_gradient.data(), full_gradient.size() * sizeof(float)), 0);
}

TEST(CrossEntropyLoss, HugeLogitsStayFinite) {
  std::vector<float> logits = {1e4f, -1e4f, 0.0f, 5e3f, -3e4f, 2e4f, 2e4f, 1e4f};
  std::vector<std::int32_t> labels = {1, 0};
  const CrossEntropyLoss loss(0.1f);
  std::vector<float> gradient(logits.size());
  const LossResult result = loss.compute(Tensor{logits.data(), Shape{2, 4}}, Targets{labels}, 0.5f, gradient.data());
  ASSERT_TRUE(std::isfinite(result.loss_sum));
  const Reference reference = reference_cross_entropy(logits, labels, 2, 4, 0.1, 0.5);
  expect_close(result.loss_sum, reference.loss_sum, 1e-6, "huge logits");
  for (std::size_t i = 0; i < gradient.size(); ++i) {
    ASSERT_TRUE(std::isfinite(gradient[i])) << i;
    EXPECT_NEAR(gradient[i], reference.gradient[i], 1e-6) << i;
  }
  // Row 1 has a tie at the maximum: argmax takes the first (index 1 of the row).
  EXPECT_EQ(result.correct, 0);
}

TEST(CrossEntropyLoss, CountsTopOneHits) {
  std::vector<float> logits = {0.1f, 0.9f, 0.0f, 3.0f, 1.0f, 2.0f, 5.0f, 5.0f, 1.0f};
  std::vector<std::int32_t> labels = {1, 2, 0};
  const LossResult result = CrossEntropyLoss().compute(Tensor{logits.data(), Shape{3, 3}}, Targets{labels}, 1.0f, nullptr);
  EXPECT_EQ(result.correct, 2);  // row 0 hits, row 1 misses, row 2 ties and takes index 0
}

TEST(CrossEntropyLoss, BadLabelsNameRowLabelAndClassCount) {
  std::vector<float> logits(30, 0.0f);
  std::vector<float> gradient(30, 1.5f);
  const CrossEntropyLoss loss;
  std::vector<std::int32_t> labels = {0, 9, 10};
  EXPECT_EQ(error_message([&] { loss.compute(Tensor{logits.data(), Shape{3, 10}}, Targets{labels}, 1.0f, gradient.data()); }),
            "cross_entropy: label 10 of row 2 is outside [0, 10): the predictions have 10 classes");
  // Nothing was written before the check failed.
  for (float g : gradient) EXPECT_EQ(g, 1.5f);
  labels = {-1, 0, 0};
  EXPECT_EQ(error_message([&] { loss.compute(Tensor{logits.data(), Shape{3, 10}}, Targets{labels}, 1.0f, nullptr); }),
            "cross_entropy: label -1 of row 0 is outside [0, 10): the predictions have 10 classes");
  labels = {0, 1};
  EXPECT_EQ(error_message([&] { loss.compute(Tensor{logits.data(), Shape{3, 10}}, Targets{labels}, 1.0f, nullptr); }),
            "cross_entropy: 3 rows of predictions but 2 labels");
  EXPECT_EQ(error_message([&] { loss.compute(Tensor{logits.data(), Shape{3, 2, 5}}, Targets{labels}, 1.0f, nullptr); }),
            "cross_entropy: predictions must be (rows, classes), found shape (3, 2, 5)");
  EXPECT_EQ(error_message([] { CrossEntropyLoss bad(1.5f); }),
            "cross_entropy: label smoothing must be in [0, 1], found 1.5");
}

TEST(MeanSquaredErrorLoss, MatchesPyTorchMeanOverEveryElement) {
  // Shape (5, 3, 2): E = 6 elements per row; the batch mean is the mean over all 30.
  const std::int64_t rows = 5, row_elements = 6;
  const auto predictions = random_values(30, 21, 1.0f);
  const auto targets = random_values(30, 22, 1.0f);
  const MeanSquaredErrorLoss loss;
  std::vector<float> gradient(30);
  const float grad_scale = 1.0f / static_cast<float>(rows);
  const LossResult result = loss.compute(Tensor{const_cast<float*>(predictions.data()), Shape{rows, 3, 2}},
                                         Targets{{}, targets.data()}, grad_scale, gradient.data());
  double squares = 0.0;
  for (std::size_t i = 0; i < 30; ++i) {
    const double d = static_cast<double>(predictions[i]) - targets[i];
    squares += d * d;
    // PyTorch's mse_loss(reduction='mean') gradient: 2 (y - t) / numel.
    EXPECT_NEAR(gradient[i], 2.0 * d / 30.0, 1e-7) << i;
  }
  EXPECT_NEAR(result.loss_sum / static_cast<double>(rows), squares / 30.0, 1e-12);
  EXPECT_NEAR(result.loss_sum, squares / static_cast<double>(row_elements), 1e-12);
  EXPECT_EQ(result.correct, 0);
}

TEST(MeanSquaredErrorLoss, GradientMatchesFiniteDifferences) {
  auto predictions = random_values(12, 31, 1.0f);
  const auto targets = random_values(12, 32, 1.0f);
  const MeanSquaredErrorLoss loss;
  std::vector<float> gradient(12);
  loss.compute(Tensor{predictions.data(), Shape{3, 4}}, Targets{{}, targets.data()}, 1.0f / 3.0f, gradient.data());
  const float h = 1e-2f;
  for (std::size_t i = 0; i < predictions.size(); ++i) {
    const float saved = predictions[i];
    predictions[i] = saved + h;
    const double plus = loss.compute(Tensor{predictions.data(), Shape{3, 4}}, Targets{{}, targets.data()}, 1.0f, nullptr).loss_sum;
    predictions[i] = saved - h;
    const double minus = loss.compute(Tensor{predictions.data(), Shape{3, 4}}, Targets{{}, targets.data()}, 1.0f, nullptr).loss_sum;
    predictions[i] = saved;
    EXPECT_NEAR(gradient[i], (plus - minus) / (2.0 * h) / 3.0, 1e-5) << i;
  }
}

TEST(MeanSquaredErrorLoss, MicroBatchSumsEqualTheFullBatch) {
  const std::int64_t rows = 7, row_elements = 5;
  const auto predictions = random_values(35, 41, 1.0f);
  const auto targets = random_values(35, 42, 1.0f);
  const MeanSquaredErrorLoss loss;
  const float grad_scale = 1.0f / static_cast<float>(rows);
  std::vector<float> full_gradient(35), parts_gradient(35);
  const LossResult full = loss.compute(Tensor{const_cast<float*>(predictions.data()), Shape{rows, row_elements}},
                                       Targets{{}, targets.data()}, grad_scale, full_gradient.data());
  double loss_sum = 0.0;
  std::int64_t first = 0;
  for (std::int64_t count : {3, 3, 1}) {
    loss_sum += loss.compute(Tensor{const_cast<float*>(predictions.data()) + first * row_elements, Shape{count, row_elements}},
                             Targets{{}, targets.data() + first * row_elements}, grad_scale,
                             parts_gradient.data() + first * row_elements)
                    .loss_sum;
    first += count;
  }
  EXPECT_NEAR(loss_sum, full.loss_sum, 1e-13 * full.loss_sum);
  EXPECT_EQ(std::memcmp(parts_gradient.data(), full_gradient.data(), full_gradient.size() * sizeof(float)), 0);
}

TEST(MeanSquaredErrorLoss, NeedsTargetValues) {
  std::vector<float> predictions(6, 0.0f);
  EXPECT_EQ(error_message([&] {
              MeanSquaredErrorLoss().compute(Tensor{predictions.data(), Shape{2, 3}}, Targets{}, 1.0f, nullptr);
            }),
            "mse: needs target values with the predictions' shape (2, 3), found none");
}

TEST(MakeLoss, NamesTheValidLosses) {
  EXPECT_EQ(make_loss("cross_entropy", 0.1f)->name(), "cross_entropy");
  EXPECT_TRUE(make_loss("cross_entropy")->uses_labels());
  EXPECT_EQ(make_loss("mse")->name(), "mse");
  EXPECT_FALSE(make_loss("mse")->uses_labels());
  EXPECT_EQ(error_message([] { make_loss("hinge"); }), "unknown loss 'hinge'; valid losses: cross_entropy, mse");
}

}  // namespace
}  // namespace ember
