#include "engine/clip.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/error.h"
#include "engine/random.h"

namespace ember {
namespace {

std::vector<float> random_vector(std::size_t n, std::uint64_t seed, float scale) {
  Random random(seed);
  std::vector<float> v(n);
  for (float& x : v) x = scale * random.normal();
  return v;
}

double reference_norm(const std::vector<float>& v) {
  double sum = 0.0;
  for (float x : v) sum += static_cast<double>(x) * x;
  return std::sqrt(sum);
}

TEST(ClipGradNorm, ScalesLikePyTorchWhenAboveTheLimit) {
  for (std::size_t n : {1, 7, 15, 16, 17, 33, 1000, 100003}) {
    std::vector<float> gradients = random_vector(n, n, 3.0f);
    const std::vector<float> original = gradients;
    const double expected_norm = reference_norm(original);
    const float max_norm = static_cast<float>(expected_norm / 4.0);
    const double norm = clip_grad_norm(gradients, max_norm);
    EXPECT_NEAR(norm, expected_norm, 1e-12 * expected_norm) << n;
    const float coefficient = max_norm / (static_cast<float>(expected_norm) + 1e-6f);
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_FLOAT_EQ(gradients[i], original[i] * coefficient) << n << " element " << i;
    }
    EXPECT_NEAR(reference_norm(gradients), max_norm, 1e-5 * max_norm) << n;
  }
}

TEST(ClipGradNorm, LeavesSmallGradientsAlone) {
  std::vector<float> gradients = random_vector(17, 3, 0.01f);
  const std::vector<float> original = gradients;
  const double norm = clip_grad_norm(gradients, 10.0f);
  EXPECT_NEAR(norm, reference_norm(original), 1e-12);
  EXPECT_EQ(gradients, original);
  std::vector<float> empty;
  EXPECT_EQ(clip_grad_norm(empty, 1.0f), 0.0);
}

TEST(ClipGradNorm, NonFiniteNormLeavesGradientsForTheCallerToReject) {
  std::vector<float> gradients = random_vector(9, 4, 1.0f);
  gradients[8] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> original = gradients;
  const double norm = clip_grad_norm(gradients, 0.1f);
  EXPECT_FALSE(is_finite(norm));
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(gradients[i], original[i]);
}

TEST(ClipGradNorm, MaxNormMustBePositive) {
  std::vector<float> gradients(3, 1.0f);
  try {
    clip_grad_norm(gradients, -1.5f);
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "gradient clipping: max_norm must be positive and finite, found -1.5");
  }
}

TEST(IsFinite, FindsNanAndInfinityAnywhere) {
  EXPECT_TRUE(is_finite(std::span<const float>{}));
  for (std::size_t n : {1, 7, 8, 15, 16, 17, 31, 33, 1000}) {
    std::vector<float> values = random_vector(n, n + 1, 1.0f);
    values[0] = std::numeric_limits<float>::max();  // huge but finite: still finite
    EXPECT_TRUE(is_finite(values)) << n;
    for (std::size_t position : {std::size_t{0}, n / 2, n - 1}) {
      for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()}) {
        std::vector<float> broken = values;
        broken[position] = bad;
        EXPECT_FALSE(is_finite(broken)) << n << " at " << position << " value " << bad;
      }
    }
  }
  EXPECT_TRUE(is_finite(2.5));
  EXPECT_FALSE(is_finite(std::numeric_limits<double>::quiet_NaN()));
  EXPECT_FALSE(is_finite(-std::numeric_limits<double>::infinity()));
}

}  // namespace
}  // namespace ember
