// simd/softmax.h against double-precision scalar references, for every instruction set
// this CPU runs. Inputs are chosen to break naive code (XNNPACK's testers do the same):
// logits in [90, 100] overflow exp without the max subtraction, logits of +-1e4 overflow
// or underflow it entirely, and the row lengths sit below, at and above every vector
// width. The vectorized exp is measured in ulps against std::exp.
#include "simd/softmax.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "simd_test_support.h"

namespace ember::simd {
namespace {

// The table under test: made for this instruction set only (see testing::made_for).
SoftmaxKernels kernels_under_test(Isa isa) {
  return testing::made_for<SoftmaxKernels, make_softmax_kernels<ArchSse42>, make_softmax_kernels<ArchAvx2>,
                           make_softmax_kernels<ArchAvx512>>(isa);
}

using testing::float_unit_roundoff;
using testing::GuardedBuffer;

constexpr double u = float_unit_roundoff;
const std::vector<std::int64_t> awkward_cols = {1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1000};
constexpr std::int64_t row_count = 3;

enum class Logits { normal, shifted_90_100, all_equal, plus_1e4, minus_1e4, mixed_1e4, one_hot_1e4 };
constexpr Logits all_logit_kinds[] = {Logits::normal,    Logits::shifted_90_100, Logits::all_equal,  Logits::plus_1e4,
                                      Logits::minus_1e4, Logits::mixed_1e4,      Logits::one_hot_1e4};
constexpr Logits huge_logit_kinds[] = {Logits::plus_1e4, Logits::minus_1e4, Logits::mixed_1e4, Logits::one_hot_1e4};

std::string logits_name(Logits kind) {
  switch (kind) {
    case Logits::normal: return "normal(0, 3)";
    case Logits::shifted_90_100: return "uniform[90, 100]";
    case Logits::all_equal: return "all equal";
    case Logits::plus_1e4: return "1e4 + uniform[-10, 10]";
    case Logits::minus_1e4: return "-1e4 + uniform[-10, 10]";
    case Logits::mixed_1e4: return "+-1e4 + uniform[-5, 5]";
    case Logits::one_hot_1e4: return "one 1e4, others -1e4";
  }
  return "?";
}

// rows x cols logits of one kind.
std::vector<float> make_logits(Logits kind, std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  const auto n = static_cast<std::size_t>(rows * cols);
  Random random(seed);
  std::vector<float> x(n);
  for (std::size_t p = 0; p < n; ++p) {
    switch (kind) {
      case Logits::normal: x[p] = 3.0f * random.normal(); break;
      case Logits::shifted_90_100: x[p] = random.uniform(90.0f, 100.0f); break;
      case Logits::all_equal: x[p] = 2.5f; break;
      case Logits::plus_1e4: x[p] = 1e4f + random.uniform(-10.0f, 10.0f); break;
      case Logits::minus_1e4: x[p] = -1e4f + random.uniform(-10.0f, 10.0f); break;
      case Logits::mixed_1e4: x[p] = (random.below(2) == 0 ? 1e4f : -1e4f) + random.uniform(-5.0f, 5.0f); break;
      case Logits::one_hot_1e4: x[p] = -1e4f; break;
    }
  }
  if (kind == Logits::one_hot_1e4) {
    for (std::int64_t r = 0; r < rows; ++r) x[static_cast<std::size_t>(r * cols + (r * 7) % cols)] = 1e4f;
  }
  return x;
}

// One row's reference: softmax p, log_softmax, and the p-weighted mean of |x - max|,
// which bounds the relative error the rounding of x - max puts into the sum of exps.
struct RowReference {
  std::vector<double> softmax, log_softmax;
  double weighted_shift = 0.0;
  double max = 0.0;
};

RowReference reference_row(const float* x, std::int64_t cols) {
  RowReference ref;
  double max = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < cols; ++j) max = std::max(max, static_cast<double>(x[j]));
  double sum = 0.0;
  for (std::int64_t j = 0; j < cols; ++j) sum += std::exp(x[j] - max);
  const double log_sum = std::log(sum);
  ref.max = max;
  for (std::int64_t j = 0; j < cols; ++j) {
    ref.softmax.push_back(std::exp(x[j] - max) / sum);
    ref.log_softmax.push_back((x[j] - max) - log_sum);
    ref.weighted_shift += ref.softmax.back() * std::abs(x[j] - max);
  }
  return ref;
}

std::string where(Isa isa, Logits kind, std::int64_t cols, std::int64_t r, std::int64_t j) {
  std::ostringstream s;
  s << isa_name(isa) << ", logits " << logits_name(kind) << ", cols " << cols << ", row " << r << ", col " << j;
  return s.str();
}

class SoftmaxTest : public ::testing::TestWithParam<Isa> {
 protected:
  SoftmaxKernels kernels() const { return kernels_under_test(GetParam()); }
};

// Forward (softmax or log_softmax) over every logit kind and awkward width.
void check_forward(Isa isa, bool log_softmax, const Logits* kinds, std::size_t kind_count) {
  const SoftmaxKernels k = kernels_under_test(isa);
  std::uint64_t seed = log_softmax ? 500 : 100;
  for (std::size_t kind_index = 0; kind_index < kind_count; ++kind_index) {
    const Logits kind = kinds[kind_index];
    for (std::int64_t cols : awkward_cols) {
      const auto n = static_cast<std::size_t>(row_count * cols);
      GuardedBuffer<float> in(n), out(n);
      in.assign(make_logits(kind, row_count, cols, ++seed));
      for (float& y : out) y = std::numeric_limits<float>::quiet_NaN();
      (log_softmax ? k.log_softmax_forward : k.softmax_forward)(out.data(), in.data(), row_count, cols);
      for (std::int64_t r = 0; r < row_count; ++r) {
        const RowReference ref = reference_row(in.data() + r * cols, cols);
        for (std::int64_t j = 0; j < cols; ++j) {
          const float got = out[static_cast<std::size_t>(r * cols + j)];
          ASSERT_TRUE(std::isfinite(got)) << where(isa, kind, cols, r, j) << ": " << got;
          const double shift = std::abs(in[static_cast<std::size_t>(r * cols + j)] - ref.max);
          // 1e-5: the float sum of up to 1000 exps and the exp error (<= 2 ulp); the
          // shift terms: the rounding of x - max, amplified by exp.
          if (log_softmax) {
            const double want = ref.log_softmax[static_cast<std::size_t>(j)];
            const double tolerance = 1e-5 + 2 * u * (shift + ref.weighted_shift + std::abs(want));
            ASSERT_NEAR(got, want, tolerance) << where(isa, kind, cols, r, j);
          } else {
            const double want = ref.softmax[static_cast<std::size_t>(j)];
            const double tolerance = want * (1e-5 + 2 * u * (shift + ref.weighted_shift)) + 1e-30;
            ASSERT_NEAR(got, want, tolerance) << where(isa, kind, cols, r, j);
          }
        }
      }
    }
  }
}

TEST_P(SoftmaxTest, SoftmaxForwardMatchesReference) {
  check_forward(GetParam(), false, all_logit_kinds, std::size(all_logit_kinds));
}

TEST_P(SoftmaxTest, LogSoftmaxForwardMatchesReference) {
  check_forward(GetParam(), true, all_logit_kinds, std::size(all_logit_kinds));
}

TEST_P(SoftmaxTest, HugeLogitsGiveFiniteRowsThatSumToOne) {
  const SoftmaxKernels k = kernels();
  std::uint64_t seed = 900;
  for (Logits kind : huge_logit_kinds) {
    for (std::int64_t cols : awkward_cols) {
      const auto n = static_cast<std::size_t>(row_count * cols);
      GuardedBuffer<float> in(n), out(n), log_out(n);
      in.assign(make_logits(kind, row_count, cols, ++seed));
      k.softmax_forward(out.data(), in.data(), row_count, cols);
      k.log_softmax_forward(log_out.data(), in.data(), row_count, cols);
      for (std::int64_t r = 0; r < row_count; ++r) {
        double sum = 0.0, log_sum = 0.0;
        for (std::int64_t j = 0; j < cols; ++j) {
          const auto p = static_cast<std::size_t>(r * cols + j);
          ASSERT_TRUE(std::isfinite(out[p]) && std::isfinite(log_out[p]))
              << where(GetParam(), kind, cols, r, j) << ": softmax " << out[p] << ", log_softmax " << log_out[p];
          ASSERT_GE(out[p], 0.0f) << where(GetParam(), kind, cols, r, j);
          ASSERT_LE(log_out[p], 0.0f) << where(GetParam(), kind, cols, r, j);
          sum += out[p];
          log_sum += std::exp(static_cast<double>(log_out[p]));
        }
        EXPECT_NEAR(sum, 1.0, 1e-5) << where(GetParam(), kind, cols, r, -1);
        EXPECT_NEAR(log_sum, 1.0, 1e-5) << where(GetParam(), kind, cols, r, -1);
      }
    }
  }
  // The reference comparison of the same kinds.
  check_forward(GetParam(), false, huge_logit_kinds, std::size(huge_logit_kinds));
  check_forward(GetParam(), true, huge_logit_kinds, std::size(huge_logit_kinds));
}

TEST_P(SoftmaxTest, SoftmaxBackwardMatchesReference) {
  // dx = y * (dy - sum(dy * y)), y a softmax output (the reference's, rounded to float).
  const SoftmaxKernels k = kernels();
  std::uint64_t seed = 1300;
  for (Logits kind : all_logit_kinds) {
    for (std::int64_t cols : awkward_cols) {
      const auto n = static_cast<std::size_t>(row_count * cols);
      GuardedBuffer<float> y(n), dy(n), dx(n);
      const std::vector<float> x = make_logits(kind, row_count, cols, ++seed);
      for (std::int64_t r = 0; r < row_count; ++r) {
        const RowReference ref = reference_row(x.data() + r * cols, cols);
        for (std::int64_t j = 0; j < cols; ++j) {
          y[static_cast<std::size_t>(r * cols + j)] = static_cast<float>(ref.softmax[static_cast<std::size_t>(j)]);
        }
      }
      dy.assign(testing::normal_vector(n, ++seed));
      for (float& v : dx) v = std::numeric_limits<float>::quiet_NaN();
      k.softmax_backward(dx.data(), dy.data(), y.data(), row_count, cols);
      for (std::int64_t r = 0; r < row_count; ++r) {
        const float* yr = y.data() + r * cols;
        const float* dyr = dy.data() + r * cols;
        double inner = 0.0, inner_size = 0.0;
        for (std::int64_t j = 0; j < cols; ++j) {
          inner += static_cast<double>(dyr[j]) * yr[j];
          inner_size += std::abs(static_cast<double>(dyr[j]) * yr[j]);
        }
        for (std::int64_t j = 0; j < cols; ++j) {
          const double want = yr[j] * (dyr[j] - inner);
          const double tolerance = std::abs(yr[j]) * (2 * u * std::abs(dyr[j]) + 1e-5 * inner_size) + 1e-30;
          ASSERT_NEAR(dx[static_cast<std::size_t>(r * cols + j)], want, tolerance) << where(GetParam(), kind, cols, r, j);
        }
      }
    }
  }
}

TEST_P(SoftmaxTest, LogSoftmaxBackwardMatchesReference) {
  // dx = dy - exp(y) * sum(dy), y a log_softmax output (the reference's, rounded).
  const SoftmaxKernels k = kernels();
  std::uint64_t seed = 1700;
  for (Logits kind : all_logit_kinds) {
    for (std::int64_t cols : awkward_cols) {
      const auto n = static_cast<std::size_t>(row_count * cols);
      GuardedBuffer<float> y(n), dy(n), dx(n);
      const std::vector<float> x = make_logits(kind, row_count, cols, ++seed);
      for (std::int64_t r = 0; r < row_count; ++r) {
        const RowReference ref = reference_row(x.data() + r * cols, cols);
        for (std::int64_t j = 0; j < cols; ++j) {
          y[static_cast<std::size_t>(r * cols + j)] = static_cast<float>(ref.log_softmax[static_cast<std::size_t>(j)]);
        }
      }
      dy.assign(testing::normal_vector(n, ++seed));
      for (float& v : dx) v = std::numeric_limits<float>::quiet_NaN();
      k.log_softmax_backward(dx.data(), dy.data(), y.data(), row_count, cols);
      for (std::int64_t r = 0; r < row_count; ++r) {
        const float* yr = y.data() + r * cols;
        const float* dyr = dy.data() + r * cols;
        double total = 0.0, total_size = 0.0;
        for (std::int64_t j = 0; j < cols; ++j) {
          total += dyr[j];
          total_size += std::abs(dyr[j]);
        }
        for (std::int64_t j = 0; j < cols; ++j) {
          const double e = std::exp(static_cast<double>(yr[j]));
          const double want = dyr[j] - e * total;
          const double tolerance = 2 * u * std::abs(dyr[j]) + e * (8 * u * std::abs(total) + 1e-5 * total_size) + 1e-30;
          ASSERT_NEAR(dx[static_cast<std::size_t>(r * cols + j)], want, tolerance) << where(GetParam(), kind, cols, r, j);
        }
      }
    }
  }
}

TEST_P(SoftmaxTest, RowsAreIndependent) {
  // A row's result does not depend on its neighbours: row 1 alone equals row 1 of three.
  const SoftmaxKernels k = kernels();
  for (std::int64_t cols : awkward_cols) {
    const std::vector<float> x = make_logits(Logits::normal, row_count, cols, 77 + static_cast<std::uint64_t>(cols));
    std::vector<float> all(x.size()), one(static_cast<std::size_t>(cols));
    for (bool log_softmax : {false, true}) {
      (log_softmax ? k.log_softmax_forward : k.softmax_forward)(all.data(), x.data(), row_count, cols);
      (log_softmax ? k.log_softmax_forward : k.softmax_forward)(one.data(), x.data() + cols, 1, cols);
      for (std::int64_t j = 0; j < cols; ++j) {
        ASSERT_TRUE(testing::same_bits(one[static_cast<std::size_t>(j)], all[static_cast<std::size_t>(cols + j)]))
            << isa_name(GetParam()) << (log_softmax ? " log_softmax" : " softmax") << " cols " << cols << " col " << j;
      }
    }
  }
}

// The largest ulp distance between the kernel's exp and `reference` over x in [lo, hi].
struct ExpError {
  std::int64_t max_ulps = 0;
  float worst_x = 0.0f;
};

TEST_P(SoftmaxTest, ExpIsWithinTwoUlpOfStdExp) {
  // 2^21 points over [-87, 88]: every float exp there is a normal number.
  constexpr std::int64_t points = 1 << 21;
  constexpr double lo = -87.0, hi = 88.0;
  std::vector<float> x(static_cast<std::size_t>(points)), y(static_cast<std::size_t>(points));
  for (std::int64_t i = 0; i < points; ++i) x[static_cast<std::size_t>(i)] = static_cast<float>(lo + (hi - lo) * i / (points - 1));
  kernels().exp(y.data(), x.data(), points);
  ExpError vs_std, vs_rounded;
  double max_exact_ulps = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::int64_t d = testing::ulp_distance(y[i], std::exp(x[i]));
    if (d > vs_std.max_ulps) vs_std = {d, x[i]};
    const double exact = std::exp(static_cast<double>(x[i]));
    const std::int64_t r = testing::ulp_distance(y[i], static_cast<float>(exact));
    if (r > vs_rounded.max_ulps) vs_rounded = {r, x[i]};
    // Error in ulps of the exact value: exact = m * 2^e with m in [0.5, 1), ulp = 2^(e - 24).
    int exponent = 0;
    std::frexp(exact, &exponent);
    max_exact_ulps = std::max(max_exact_ulps, std::abs(y[i] - exact) / std::ldexp(1.0, exponent - 24));
  }
  const std::string isa(isa_name(GetParam()));
  RecordProperty("exp_max_ulp_vs_std_exp", static_cast<int>(vs_std.max_ulps));
  RecordProperty("exp_max_ulp_vs_correctly_rounded", static_cast<int>(vs_rounded.max_ulps));
  RecordProperty("exp_max_error_in_exact_ulps", std::to_string(max_exact_ulps));
  std::cout << "[ exp " << isa << " ] over " << points << " points in [-87, 88]: max " << vs_std.max_ulps
            << " ulp vs std::exp (at x = " << vs_std.worst_x << "), max " << vs_rounded.max_ulps
            << " ulp vs correctly rounded exp (at x = " << vs_rounded.worst_x << "), max error " << max_exact_ulps
            << " ulp of the exact value\n";
  EXPECT_LE(vs_std.max_ulps, 2) << isa << ": worst at x = " << vs_std.worst_x << " (" << std::hexfloat << vs_std.worst_x
                                << std::defaultfloat << ")";
}

TEST_P(SoftmaxTest, ExpHandlesEveryTailLength) {
  std::uint64_t seed = 3000;
  for (std::int64_t n : testing::tail_lengths()) {
    GuardedBuffer<float> in(static_cast<std::size_t>(n)), out(static_cast<std::size_t>(n));
    in.assign(testing::uniform_vector(in.size(), ++seed, -80.0f, 80.0f));
    for (float& v : out) v = std::numeric_limits<float>::quiet_NaN();
    kernels().exp(out.data(), in.data(), n);
    for (std::size_t i = 0; i < in.size(); ++i) {
      ASSERT_LE(testing::ulp_distance(out[i], std::exp(in[i])), 2)
          << isa_name(GetParam()) << " n " << n << " i " << i << ": exp(" << in[i] << ") = " << out[i] << ", std::exp "
          << std::exp(in[i]);
    }
  }
}

TEST_P(SoftmaxTest, ExpExactPoints) {
  // exp(0) = 1 exactly; the softmax of a row's max element relies on it.
  const float in[] = {0.0f, -0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  float out[std::size(in)];
  kernels().exp(out, in, static_cast<std::int64_t>(std::size(in)));
  for (float v : out) EXPECT_EQ(v, 1.0f) << isa_name(GetParam());
}

TEST_P(SoftmaxTest, KernelsForIsaReturnsThisIsasTable) {
  // The entry point the library uses (softmax_kernels() is softmax_kernels_for(selected_isa())).
  const Isa isa = GetParam();
  testing::expect_kernels_for_is_safe(isa, "softmax", [isa] {
    const SoftmaxKernels& table = softmax_kernels_for(isa);
    const SoftmaxKernels made = kernels_under_test(isa);
    return table.softmax_forward == made.softmax_forward && table.softmax_backward == made.softmax_backward && table.log_softmax_forward == made.log_softmax_forward && table.log_softmax_backward == made.log_softmax_backward && table.exp == made.exp;
  });
}

INSTANTIATE_TEST_SUITE_P(Isas, SoftmaxTest, testing::all_available_isas(), testing::IsaName());

}  // namespace
}  // namespace ember::simd
