// simd/elementwise.h against scalar references, for every instruction set this CPU runs,
// at every tail length. Most of these kernels round exactly once per element (or add in
// a documented order), so the references are exact: bit-for-bit float results, not
// tolerances.
#include "simd/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "simd_test_support.h"

namespace ember::simd {
namespace {

// The table under test: made for this instruction set only (see testing::made_for).
ElementwiseKernels kernels_under_test(Isa isa) {
  return testing::made_for<ElementwiseKernels, make_elementwise_kernels<ArchSse42>, make_elementwise_kernels<ArchAvx2>,
                           make_elementwise_kernels<ArchAvx512>>(isa);
}

using testing::GuardedBuffer;
using testing::same_bits;

constexpr float nan_value = std::numeric_limits<float>::quiet_NaN();

class ElementwiseTest : public ::testing::TestWithParam<Isa> {
 protected:
  ElementwiseKernels kernels() const { return kernels_under_test(GetParam()); }
};

// True when `got` is y + alpha * x either with the product rounded first or
// fused into one rounding (FMA); both are correct float evaluations.
bool is_axpy_result(float got, float y, float alpha, float x) {
  const float separate = y + alpha * x;
  const float fused = std::fma(alpha, x, y);
  return same_bits(got, separate) || same_bits(got, fused);
}

TEST_P(ElementwiseTest, AddMatchesReference) {
  std::uint64_t seed = 10;
  for (std::int64_t n : testing::tail_lengths()) {
    const auto size = static_cast<std::size_t>(n);
    GuardedBuffer<float> a(size), b(size), out(size);
    a.assign(testing::normal_vector(size, ++seed));
    b.assign(testing::normal_vector(size, ++seed, 100.0f));
    for (float& v : out) v = nan_value;
    kernels().add(out.data(), a.data(), b.data(), n);
    for (std::size_t i = 0; i < size; ++i) {
      ASSERT_TRUE(same_bits(out[i], a[i] + b[i])) << isa_name(GetParam()) << " n " << n << " i " << i << ": " << a[i]
                                                  << " + " << b[i] << " gave " << out[i];
    }
  }
}

TEST_P(ElementwiseTest, AddInPlaceOverEitherOperand) {
  std::uint64_t seed = 20;
  for (std::int64_t n : testing::tail_lengths()) {
    const auto size = static_cast<std::size_t>(n);
    const std::vector<float> a = testing::normal_vector(size, ++seed), b = testing::normal_vector(size, ++seed);
    GuardedBuffer<float> first(size), second(size);
    first.assign(a);
    second.assign(b);
    kernels().add(first.data(), first.data(), second.data(), n);  // out aliases a
    for (std::size_t i = 0; i < size; ++i) ASSERT_TRUE(same_bits(first[i], a[i] + b[i])) << "out == a, n " << n << " i " << i;
    first.assign(a);
    kernels().add(second.data(), first.data(), second.data(), n);  // out aliases b
    for (std::size_t i = 0; i < size; ++i) ASSERT_TRUE(same_bits(second[i], a[i] + b[i])) << "out == b, n " << n << " i " << i;
  }
}

TEST_P(ElementwiseTest, AxpyMatchesReference) {
  std::uint64_t seed = 30;
  for (float alpha : {0.0f, 1.0f, -0.37f, 1234.5f}) {
    for (std::int64_t n : testing::tail_lengths()) {
      const auto size = static_cast<std::size_t>(n);
      GuardedBuffer<float> x(size), y(size);
      x.assign(testing::normal_vector(size, ++seed));
      const std::vector<float> y_before = testing::normal_vector(size, ++seed, 10.0f);
      y.assign(y_before);
      kernels().axpy(y.data(), alpha, x.data(), n);
      for (std::size_t i = 0; i < size; ++i) {
        ASSERT_TRUE(is_axpy_result(y[i], y_before[i], alpha, x[i]))
            << isa_name(GetParam()) << " n " << n << " i " << i << ": " << y_before[i] << " + " << alpha << " * " << x[i]
            << " gave " << y[i] << ", expected " << y_before[i] + alpha * x[i] << " or " << std::fma(alpha, x[i], y_before[i]);
      }
    }
  }
}

TEST_P(ElementwiseTest, ScaleMatchesReferenceAndWorksInPlace) {
  std::uint64_t seed = 40;
  for (float alpha : {0.0f, -1.0f, 0.1f, 3e5f}) {
    for (std::int64_t n : testing::tail_lengths()) {
      const auto size = static_cast<std::size_t>(n);
      const std::vector<float> in_values = testing::normal_vector(size, ++seed);
      GuardedBuffer<float> in(size), out(size);
      in.assign(in_values);
      for (float& v : out) v = nan_value;
      kernels().scale(out.data(), alpha, in.data(), n);
      for (std::size_t i = 0; i < size; ++i) {
        ASSERT_TRUE(same_bits(out[i], alpha * in_values[i])) << isa_name(GetParam()) << " n " << n << " i " << i;
      }
      kernels().scale(in.data(), alpha, in.data(), n);
      for (std::size_t i = 0; i < size; ++i) {
        ASSERT_TRUE(same_bits(in[i], alpha * in_values[i])) << isa_name(GetParam()) << " in place, n " << n << " i " << i;
      }
    }
  }
}

TEST_P(ElementwiseTest, MaskedScaleMatchesReference) {
  std::uint64_t seed = 50;
  for (float scale : {2.0f, 1.0f / 0.9f}) {
    for (std::int64_t n : testing::tail_lengths()) {
      const auto size = static_cast<std::size_t>(n);
      GuardedBuffer<float> in(size), out(size);
      GuardedBuffer<std::uint8_t> mask(size);
      in.assign(testing::normal_vector(size, ++seed));
      Random random(++seed);
      for (std::uint8_t& m : mask) m = static_cast<std::uint8_t>(random.below(2));
      for (float& v : out) v = nan_value;
      kernels().masked_scale(out.data(), in.data(), mask.data(), scale, n);
      for (std::size_t i = 0; i < size; ++i) {
        // in * mask * scale, rounded once (the mask is 0 or 1).
        const float want = in[i] * static_cast<float>(mask[i]) * scale;
        ASSERT_EQ(out[i], want) << isa_name(GetParam()) << " n " << n << " i " << i << ": in " << in[i] << ", mask "
                                << int{mask[i]};
      }
    }
  }
}

TEST_P(ElementwiseTest, ColumnSumsAddRowsInOrder) {
  // The sums are defined as rows added in order in float, so they are exact to compare.
  std::uint64_t seed = 60;
  for (bool accumulate : {false, true}) {
    for (std::int64_t rows : {0, 1, 2, 7, 33}) {
      for (std::int64_t cols : testing::tail_lengths()) {
        for (std::int64_t pad : {0, 3}) {
          const std::int64_t ld = cols + pad;
          const auto in_size = static_cast<std::size_t>(rows == 0 ? 0 : (rows - 1) * ld + cols);
          GuardedBuffer<float> in(in_size), out(static_cast<std::size_t>(cols));
          const std::vector<float> values = testing::normal_vector(in_size, ++seed);
          for (std::size_t p = 0; p < in_size; ++p) in[p] = static_cast<std::int64_t>(p) % ld < cols ? values[p] : nan_value;
          const std::vector<float> out_before = testing::normal_vector(out.size(), ++seed, 10.0f);
          if (accumulate) {
            out.assign(out_before);
          } else {
            for (float& v : out) v = nan_value;
          }
          kernels().column_sums(out.data(), in.data(), rows, cols, ld, accumulate);
          for (std::int64_t j = 0; j < cols; ++j) {
            float want = accumulate ? out_before[static_cast<std::size_t>(j)] : 0.0f;
            for (std::int64_t r = 0; r < rows; ++r) want += in[static_cast<std::size_t>(r * ld + j)];
            ASSERT_TRUE(same_bits(out[static_cast<std::size_t>(j)], want))
                << isa_name(GetParam()) << (accumulate ? " accumulate" : "") << " rows " << rows << " cols " << cols
                << " ld " << ld << " col " << j << ": " << out[static_cast<std::size_t>(j)] << " vs " << want;
          }
        }
      }
    }
  }
}

TEST_P(ElementwiseTest, TransposeAddRowTransposesAndAddsTheBiasOnce) {
  std::uint64_t seed = 65;
  for (bool with_bias : {false, true}) {
    for (std::int64_t rows : {1, 7, 8, 9, 128}) {
      for (std::int64_t cols : {1, 3, 8, 16, 17, 33}) {
        const auto size = static_cast<std::size_t>(rows * cols);
        GuardedBuffer<float> in(size), out(size), bias(static_cast<std::size_t>(rows));
        in.assign(testing::normal_vector(size, ++seed));
        bias.assign(testing::normal_vector(bias.size(), ++seed, 10.0f));
        for (float& v : out) v = nan_value;
        kernels().transpose_add_row(out.data(), in.data(), rows, cols, with_bias ? bias.data() : nullptr);
        for (std::int64_t r = 0; r < rows; ++r) {
          for (std::int64_t c = 0; c < cols; ++c) {
            const float x = in[static_cast<std::size_t>(r * cols + c)];
            const float want = with_bias ? x + bias[static_cast<std::size_t>(r)] : x;
            ASSERT_TRUE(same_bits(out[static_cast<std::size_t>(c * rows + r)], want))
                << isa_name(GetParam()) << (with_bias ? " bias" : "") << " rows " << rows << " cols " << cols << " at "
                << r << "," << c;
          }
        }
      }
    }
  }
}

TEST_P(ElementwiseTest, SumLanesAddsLanesInOrder) {
  std::uint64_t seed = 70;
  for (std::int64_t count : {1, 2, 3, 8}) {
    for (std::int64_t n : testing::tail_lengths()) {
      const auto size = static_cast<std::size_t>(n);
      std::vector<std::unique_ptr<GuardedBuffer<float>>> lanes;
      std::vector<const float*> pointers;
      for (std::int64_t l = 0; l < count; ++l) {
        lanes.push_back(std::make_unique<GuardedBuffer<float>>(size));
        // Magnitudes differ by lane, so a different order of addition rounds differently.
        lanes.back()->assign(testing::normal_vector(size, ++seed, l % 2 == 0 ? 1.0f : 1000.0f));
        pointers.push_back(lanes.back()->data());
      }
      std::vector<float> want(size);
      for (std::size_t i = 0; i < size; ++i) {
        float sum = pointers[0][i];
        for (std::int64_t l = 1; l < count; ++l) sum += pointers[static_cast<std::size_t>(l)][i];
        want[i] = sum;
      }
      GuardedBuffer<float> out(size);
      for (float& v : out) v = nan_value;
      kernels().sum_lanes(out.data(), pointers.data(), count, n);
      for (std::size_t i = 0; i < size; ++i) {
        ASSERT_TRUE(same_bits(out[i], want[i])) << isa_name(GetParam()) << " count " << count << " n " << n << " i " << i;
      }
      // The executor sums into lane 0 itself.
      kernels().sum_lanes(lanes[0]->data(), pointers.data(), count, n);
      for (std::size_t i = 0; i < size; ++i) {
        ASSERT_TRUE(same_bits((*lanes[0])[i], want[i])) << isa_name(GetParam()) << " into lane 0, count " << count << " n "
                                                        << n << " i " << i;
      }
    }
  }
}

TEST_P(ElementwiseTest, SumSquaresIsExactWhenTheSumIsRepresentable) {
  // Values k / 64 with |k| <= 4096: every square and every partial sum is a multiple of
  // 2^-12 below 2^30, exact in double whatever the order of addition.
  std::uint64_t seed = 80;
  for (std::int64_t n : testing::tail_lengths()) {
    const auto size = static_cast<std::size_t>(n);
    GuardedBuffer<float> in(size);
    Random random(++seed);
    std::int64_t exact_sum_of_k_squared = 0;
    for (float& x : in) {
      const std::int64_t k = static_cast<std::int64_t>(random.below(8193)) - 4096;
      x = static_cast<float>(k) / 64.0f;
      exact_sum_of_k_squared += k * k;
    }
    const double want = static_cast<double>(exact_sum_of_k_squared) / 4096.0;
    EXPECT_EQ(kernels().sum_squares(in.data(), n), want) << isa_name(GetParam()) << " n " << n;
  }
}

TEST_P(ElementwiseTest, SumSquaresAccumulatesInDouble) {
  // Squares of 1e20 overflow float and squares of 1e-25 underflow it; in double both are
  // fine, and the result is accurate to double rounding over n terms.
  std::uint64_t seed = 90;
  for (float magnitude : {1.0f, 1e20f, 1e-25f}) {
    for (std::int64_t n : testing::tail_lengths()) {
      const auto size = static_cast<std::size_t>(n);
      GuardedBuffer<float> in(size);
      in.assign(testing::normal_vector(size, ++seed, magnitude));
      long double want = 0.0L;
      for (float x : in) want += static_cast<long double>(x) * static_cast<long double>(x);
      const double got = kernels().sum_squares(in.data(), n);
      ASSERT_TRUE(std::isfinite(got)) << isa_name(GetParam()) << " magnitude " << magnitude << " n " << n;
      EXPECT_NEAR(got, static_cast<double>(want), static_cast<double>(want) * (static_cast<double>(n) + 1) * 0x1p-53)
          << isa_name(GetParam()) << " magnitude " << magnitude << " n " << n;
      if (n > 0) {
        EXPECT_GT(got, 0.0) << isa_name(GetParam()) << " magnitude " << magnitude << " n " << n;
      }
    }
  }
}

TEST_P(ElementwiseTest, U8ToFloatMatchesReference) {
  for (auto [scale, shift] : {std::pair{1.0f / 255.0f, 0.0f}, std::pair{1.0f / (255.0f * 0.3081f), -0.1307f / 0.3081f},
                              std::pair{2.0f, -1.0f}}) {
    for (std::int64_t n : {0, 1, 7, 15, 16, 17, 256, 1000}) {
      const auto size = static_cast<std::size_t>(n);
      GuardedBuffer<std::uint8_t> in(size);
      GuardedBuffer<float> out(size);
      for (std::size_t i = 0; i < size; ++i) in[i] = static_cast<std::uint8_t>((i * 97 + 13) % 256);
      for (float& v : out) v = nan_value;
      kernels().u8_to_float(out.data(), in.data(), scale, shift, n);
      for (std::size_t i = 0; i < size; ++i) {
        const float x = static_cast<float>(in[i]);
        ASSERT_TRUE(same_bits(out[i], x * scale + shift) || same_bits(out[i], std::fma(x, scale, shift)))
            << isa_name(GetParam()) << " n " << n << " i " << i << ": u8 " << int{in[i]} << " gave " << out[i]
            << ", expected " << x * scale + shift;
      }
    }
  }
}

TEST_P(ElementwiseTest, AllFiniteAcceptsEveryFiniteValue) {
  const float extremes[] = {0.0f,
                            -0.0f,
                            std::numeric_limits<float>::max(),
                            -std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::min(),
                            std::numeric_limits<float>::denorm_min(),
                            -std::numeric_limits<float>::denorm_min(),
                            1.0f};
  for (std::int64_t n = 0; n <= 40; ++n) {
    for (float value : extremes) {
      GuardedBuffer<float> in(static_cast<std::size_t>(n));
      for (float& x : in) x = value;
      EXPECT_TRUE(kernels().all_finite(in.data(), n)) << isa_name(GetParam()) << " n " << n << " all " << value;
    }
  }
  GuardedBuffer<float> in(1000);
  in.assign(testing::normal_vector(1000, 5, 1e30f));
  EXPECT_TRUE(kernels().all_finite(in.data(), 1000)) << isa_name(GetParam());
}

TEST_P(ElementwiseTest, AllFiniteFindsNanOrInfinityAtEveryPosition) {
  const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()};
  std::vector<std::int64_t> lengths;
  for (std::int64_t n = 1; n <= 40; ++n) lengths.push_back(n);
  lengths.push_back(1000);
  lengths.push_back(1003);
  for (std::int64_t n : lengths) {
    const auto size = static_cast<std::size_t>(n);
    GuardedBuffer<float> in(size);
    const std::vector<float> finite = testing::normal_vector(size, static_cast<std::uint64_t>(n), 1e30f);
    for (std::size_t position = 0; position < size; ++position) {
      for (float bad : bad_values) {
        in.assign(finite);
        in[position] = bad;
        ASSERT_FALSE(kernels().all_finite(in.data(), n))
            << isa_name(GetParam()) << " n " << n << ": " << bad << " at position " << position << " not found";
      }
    }
    // Only the first n floats count: a NaN right after a shorter span is outside it.
    in.assign(finite);
    EXPECT_TRUE(kernels().all_finite(in.data(), n)) << isa_name(GetParam()) << " n " << n;
    in[size - 1] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_TRUE(kernels().all_finite(in.data(), n - 1)) << isa_name(GetParam()) << " n " << n - 1 << " with NaN at n";
  }
}

// The reference: the first position whose float is NaN or infinite.
std::int64_t reference_first_non_finite(const float* in, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(in[i])) return i;
  }
  return -1;
}

// 1, 7, 17, one vector and a block of four vectors (4, 8, 16 and 16, 32, 64 floats
// across the instruction sets) and one either side, and large spans with a tail.
std::vector<std::int64_t> first_non_finite_lengths() {
  std::vector<std::int64_t> lengths = {1, 2, 7, 17, 1000, 4099};
  for (std::int64_t width : {4, 8, 16}) {
    for (std::int64_t n : {width, 4 * width}) {
      lengths.push_back(n - 1);
      lengths.push_back(n);
      lengths.push_back(n + 1);
    }
  }
  return lengths;
}

TEST_P(ElementwiseTest, FirstNonFiniteIsMinusOneForFiniteValues) {
  const float extremes[] = {0.0f, -0.0f, std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(), 1.0f};
  EXPECT_EQ(kernels().first_non_finite(nullptr, 0), -1);
  for (std::int64_t n : first_non_finite_lengths()) {
    GuardedBuffer<float> in(static_cast<std::size_t>(n));
    for (float value : extremes) {
      for (float& x : in) x = value;
      EXPECT_EQ(kernels().first_non_finite(in.data(), n), -1) << isa_name(GetParam()) << " n " << n << " all " << value;
    }
    in.assign(testing::normal_vector(static_cast<std::size_t>(n), static_cast<std::uint64_t>(n), 1e30f));
    EXPECT_EQ(kernels().first_non_finite(in.data(), n), -1) << isa_name(GetParam()) << " n " << n;
  }
}

TEST_P(ElementwiseTest, FirstNonFiniteFindsTheFirstNanOrInfinityAtEveryPosition) {
  const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::signaling_NaN(), std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()};
  for (std::int64_t n : first_non_finite_lengths()) {
    const auto size = static_cast<std::size_t>(n);
    GuardedBuffer<float> in(size);
    const std::vector<float> finite = testing::normal_vector(size, static_cast<std::uint64_t>(n) + 1, 1e30f);
    for (std::size_t position = 0; position < size; ++position) {
      for (float bad : bad_values) {
        in.assign(finite);
        in[position] = bad;
        // A second bad value later (in the same block or past it) must not win.
        const std::size_t later = std::min(size - 1, position + 1 + position % 37);
        if (later != position) in[later] = std::numeric_limits<float>::infinity();
        const std::int64_t expected = reference_first_non_finite(in.data(), n);
        ASSERT_EQ(expected, static_cast<std::int64_t>(position));
        ASSERT_EQ(kernels().first_non_finite(in.data(), n), expected)
            << isa_name(GetParam()) << " n " << n << ": " << bad << " at position " << position;
      }
    }
    // Only the first n floats count: a NaN in the last one is outside a span of n - 1.
    in.assign(finite);
    in[size - 1] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_EQ(kernels().first_non_finite(in.data(), n - 1), -1) << isa_name(GetParam()) << " n " << n - 1 << " with NaN at n";
  }
}

TEST_P(ElementwiseTest, KernelsForIsaReturnsThisIsasTable) {
  // The entry point the library uses (elementwise_kernels() is elementwise_kernels_for(selected_isa())).
  const Isa isa = GetParam();
  testing::expect_kernels_for_is_safe(isa, "elementwise", [isa] {
    const ElementwiseKernels& table = elementwise_kernels_for(isa);
    const ElementwiseKernels made = kernels_under_test(isa);
    return table.add == made.add && table.axpy == made.axpy && table.scale == made.scale && table.masked_scale == made.masked_scale && table.column_sums == made.column_sums && table.transpose_add_row == made.transpose_add_row && table.sum_lanes == made.sum_lanes && table.sum_squares == made.sum_squares && table.u8_to_float == made.u8_to_float && table.all_finite == made.all_finite && table.first_non_finite == made.first_non_finite;
  });
}

INSTANTIATE_TEST_SUITE_P(Isas, ElementwiseTest, testing::all_available_isas(), testing::IsaName());

}  // namespace
}  // namespace ember::simd
