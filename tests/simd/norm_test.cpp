// simd/norm.h (layer normalization) against double-precision scalar references, for every
// instruction set this CPU runs, at rows lengths below, at and above every vector width.
// Inputs are chosen to break naive code: rows around 100 with spread 0.1 (the one-pass
// variance E[x^2] - mean^2 loses about 20% there), constant rows (variance 0: only eps
// keeps rstd finite) and rows of magnitude 1e3.
#include "simd/norm.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "simd_test_support.h"

namespace ember::simd {
namespace {

// The table under test: made for this instruction set only (see testing::made_for).
NormKernels kernels_under_test(Isa isa) {
  return testing::made_for<NormKernels, make_norm_kernels<ArchSse42>, make_norm_kernels<ArchAvx2>, make_norm_kernels<ArchAvx512>>(isa);
}

using testing::GuardedBuffer;
constexpr double u = testing::float_unit_roundoff;
constexpr float eps = 1e-5f;

enum class Rows { normal, around_100, constant, large };
constexpr Rows all_row_kinds[] = {Rows::normal, Rows::around_100, Rows::constant, Rows::large};

std::string rows_name(Rows kind) {
  switch (kind) {
    case Rows::normal: return "normal(0, 1)";
    case Rows::around_100: return "100 + normal(0, 0.1)";
    case Rows::constant: return "constant 3.25";
    case Rows::large: return "normal(0, 1e3)";
  }
  return "?";
}

std::vector<float> make_rows(Rows kind, std::size_t n, std::uint64_t seed) {
  std::vector<float> x = testing::normal_vector(n, seed);
  for (float& v : x) {
    switch (kind) {
      case Rows::normal: break;
      case Rows::around_100: v = 100.0f + 0.1f * v; break;
      case Rows::constant: v = 3.25f; break;
      case Rows::large: v *= 1e3f; break;
    }
  }
  return x;
}

struct RowStatistics {
  double mean, rstd;
};

RowStatistics reference_statistics(const float* x, std::int64_t cols) {
  double mean = 0.0;
  for (std::int64_t c = 0; c < cols; ++c) mean += x[c];
  mean /= static_cast<double>(cols);
  double variance = 0.0;
  for (std::int64_t c = 0; c < cols; ++c) variance += (x[c] - mean) * (x[c] - mean);
  variance /= static_cast<double>(cols);
  return {mean, 1.0 / std::sqrt(variance + static_cast<double>(eps))};
}

class NormTest : public ::testing::TestWithParam<Isa> {
 protected:
  NormKernels kernels() const { return kernels_under_test(GetParam()); }
};

TEST_P(NormTest, LayerNormForwardMatchesReference) {
  std::uint64_t seed = 10;
  for (Rows kind : all_row_kinds) {
    for (std::int64_t rows : {1, 3}) {
      for (std::int64_t cols : testing::tail_lengths()) {
        if (cols == 0) continue;
        const auto n = static_cast<std::size_t>(rows * cols);
        GuardedBuffer<float> in(n), out(n), mean(static_cast<std::size_t>(rows)), rstd(static_cast<std::size_t>(rows));
        GuardedBuffer<float> weight(static_cast<std::size_t>(cols)), bias(static_cast<std::size_t>(cols));
        in.assign(make_rows(kind, n, ++seed));
        weight.assign(testing::normal_vector(static_cast<std::size_t>(cols), ++seed));
        bias.assign(testing::normal_vector(static_cast<std::size_t>(cols), ++seed));
        for (float& y : out) y = std::numeric_limits<float>::quiet_NaN();
        kernels().layer_norm_forward(out.data(), mean.data(), rstd.data(), in.data(), weight.data(), bias.data(), rows, cols, eps);
        for (std::int64_t r = 0; r < rows; ++r) {
          const RowStatistics s = reference_statistics(in.data() + r * cols, cols);
          const std::string where = std::string(isa_name(GetParam())) + " " + rows_name(kind) + " rows " + std::to_string(rows) +
                                    " cols " + std::to_string(cols) + " row " + std::to_string(r);
          // The second pass corrects the first estimate of the mean to within a few u of
          // |mean| + spread, whatever the row length (measured: under 1 u).
          const double spread = 1.0 / s.rstd;
          ASSERT_LE(std::fabs(mean[static_cast<std::size_t>(r)] - s.mean), 4.0 * u * (std::fabs(s.mean) + spread))
              << where << ": mean " << mean[static_cast<std::size_t>(r)] << ", reference " << s.mean;
          // rstd from the variance about the mean: a few u (measured: under 4 u).
          ASSERT_LE(std::fabs(rstd[static_cast<std::size_t>(r)] - s.rstd), 16.0 * u * s.rstd)
              << where << ": rstd " << rstd[static_cast<std::size_t>(r)] << ", reference " << s.rstd;
          for (std::int64_t c = 0; c < cols; ++c) {
            const std::size_t i = static_cast<std::size_t>(r * cols + c);
            const double xhat = (in[i] - s.mean) * s.rstd;
            const double reference = xhat * weight[static_cast<std::size_t>(c)] + bias[static_cast<std::size_t>(c)];
            // x - mean inherits the mean's error (a few u of |mean| + spread, times rstd).
            const double xhat_scale = std::fabs(xhat) + 1.0 + std::fabs(s.mean) * s.rstd;
            const double bound = 8.0 * u * (std::fabs(weight[static_cast<std::size_t>(c)]) * xhat_scale + std::fabs(reference));
            ASSERT_LE(std::fabs(out[i] - reference), bound) << where << " col " << c << ": got " << out[i] << ", reference " << reference;
          }
        }
      }
    }
  }
}

TEST_P(NormTest, LayerNormForwardOfAConstantRowIsTheBias) {
  for (std::int64_t cols : {1, 7, 16, 33}) {
    GuardedBuffer<float> in(static_cast<std::size_t>(cols)), out(static_cast<std::size_t>(cols)), mean(1), rstd(1);
    GuardedBuffer<float> weight(static_cast<std::size_t>(cols)), bias(static_cast<std::size_t>(cols));
    for (float& x : in) x = -7.5f;
    weight.assign(testing::normal_vector(static_cast<std::size_t>(cols), 5));
    bias.assign(testing::normal_vector(static_cast<std::size_t>(cols), 6));
    kernels().layer_norm_forward(out.data(), mean.data(), rstd.data(), in.data(), weight.data(), bias.data(), 1, cols, eps);
    EXPECT_EQ(mean[0], -7.5f);
    EXPECT_FLOAT_EQ(rstd[0], 1.0f / std::sqrt(eps));
    for (std::size_t c = 0; c < static_cast<std::size_t>(cols); ++c) ASSERT_EQ(out[c], bias[c]) << "cols " << cols << " c " << c;
  }
}

// dx, dweight, dbias in double from the same (float) mean and rstd the kernel is handed.
struct BackwardReference {
  std::vector<double> in_grad, weight_grad, bias_grad;
  std::vector<double> in_grad_scale;  // per element: the size of the terms dx is made of
};

BackwardReference reference_backward(const std::vector<float>& dy, const std::vector<float>& x, const std::vector<float>& mean,
                                     const std::vector<float>& rstd, const std::vector<float>& weight,
                                     const std::vector<float>& weight_start, const std::vector<float>& bias_start,
                                     std::int64_t rows, std::int64_t cols) {
  BackwardReference ref;
  ref.in_grad.resize(x.size());
  ref.in_grad_scale.resize(x.size());
  ref.weight_grad.assign(weight_start.begin(), weight_start.end());
  ref.bias_grad.assign(bias_start.begin(), bias_start.end());
  for (std::int64_t r = 0; r < rows; ++r) {
    double sum_d = 0.0, sum_dx = 0.0, sum_abs_d = 0.0, sum_abs_dx = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) {
      const std::size_t i = static_cast<std::size_t>(r * cols + c);
      const double xhat = (x[i] - static_cast<double>(mean[static_cast<std::size_t>(r)])) * rstd[static_cast<std::size_t>(r)];
      const double d = static_cast<double>(dy[i]) * weight[static_cast<std::size_t>(c)];
      sum_d += d;
      sum_dx += d * xhat;
      sum_abs_d += std::fabs(d);
      sum_abs_dx += std::fabs(d * xhat);
      ref.bias_grad[static_cast<std::size_t>(c)] += dy[i];
      ref.weight_grad[static_cast<std::size_t>(c)] += dy[i] * xhat;
    }
    const double inverse = 1.0 / static_cast<double>(cols);
    for (std::int64_t c = 0; c < cols; ++c) {
      const std::size_t i = static_cast<std::size_t>(r * cols + c);
      const double s = rstd[static_cast<std::size_t>(r)];
      const double xhat = (x[i] - static_cast<double>(mean[static_cast<std::size_t>(r)])) * s;
      const double d = static_cast<double>(dy[i]) * weight[static_cast<std::size_t>(c)];
      ref.in_grad[i] = s * (d - sum_d * inverse - xhat * sum_dx * inverse);
      ref.in_grad_scale[i] = s * (std::fabs(d) + sum_abs_d * inverse + std::fabs(xhat) * (1.0 + sum_abs_dx * inverse));
    }
  }
  return ref;
}

enum class GradTarget { separate, aliased, none };

void check_backward(const NormKernels& kernels, Isa isa, Rows kind, std::int64_t rows, std::int64_t cols, GradTarget target,
                    std::uint64_t seed) {
  const auto n = static_cast<std::size_t>(rows * cols);
  const auto c_count = static_cast<std::size_t>(cols);
  const std::vector<float> x = make_rows(kind, n, seed);
  const std::vector<float> dy = testing::normal_vector(n, seed + 1);
  const std::vector<float> w = testing::normal_vector(c_count, seed + 2);
  const std::vector<float> weight_start = testing::normal_vector(c_count, seed + 3);
  const std::vector<float> bias_start = testing::normal_vector(c_count, seed + 4);
  std::vector<float> mean(static_cast<std::size_t>(rows)), rstd(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    const RowStatistics s = reference_statistics(x.data() + r * cols, cols);
    mean[static_cast<std::size_t>(r)] = static_cast<float>(s.mean);
    rstd[static_cast<std::size_t>(r)] = static_cast<float>(s.rstd);
  }
  GuardedBuffer<float> in(n), out_grad(n), in_grad(n), weight(c_count), weight_grad(c_count), bias_grad(c_count);
  GuardedBuffer<float> mean_buffer(static_cast<std::size_t>(rows)), rstd_buffer(static_cast<std::size_t>(rows));
  in.assign(x);
  out_grad.assign(dy);
  weight.assign(w);
  weight_grad.assign(weight_start);
  bias_grad.assign(bias_start);
  mean_buffer.assign(mean);
  rstd_buffer.assign(rstd);
  for (float& g : in_grad) g = std::numeric_limits<float>::quiet_NaN();
  float* dx = target == GradTarget::separate ? in_grad.data() : target == GradTarget::aliased ? out_grad.data() : nullptr;
  kernels.layer_norm_backward(dx, weight_grad.data(), bias_grad.data(), out_grad.data(), in.data(), mean_buffer.data(),
                              rstd_buffer.data(), weight.data(), rows, cols);

  const BackwardReference ref = reference_backward(dy, x, mean, rstd, w, weight_start, bias_start, rows, cols);
  const std::string where = std::string(isa_name(isa)) + " " + rows_name(kind) + " rows " + std::to_string(rows) + " cols " +
                            std::to_string(cols) + (target == GradTarget::aliased ? " (in_grad aliases out_grad)" : "");
  if (dx != nullptr) {
    for (std::size_t i = 0; i < n; ++i) {
      // Row sums in float with two accumulators per lane stay within a few u of the
      // sums of magnitudes for these lengths (measured: under 3 u).
      ASSERT_LE(std::fabs(dx[i] - ref.in_grad[i]), 16.0 * u * ref.in_grad_scale[i])
          << where << " in_grad[" << i << "]: got " << dx[i] << ", reference " << ref.in_grad[i];
    }
  }
  for (std::size_t c = 0; c < c_count; ++c) {
    double weight_scale = std::fabs(weight_start[c]), bias_scale = std::fabs(bias_start[c]);
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::size_t i = static_cast<std::size_t>(r) * c_count + c;
      bias_scale += std::fabs(dy[i]);
      weight_scale += std::fabs(dy[i] * (x[i] - static_cast<double>(mean[static_cast<std::size_t>(r)])) * rstd[static_cast<std::size_t>(r)]);
    }
    ASSERT_LE(std::fabs(bias_grad[c] - ref.bias_grad[c]), 8.0 * u * bias_scale)
        << where << " bias_grad[" << c << "]: got " << bias_grad[c] << ", reference " << ref.bias_grad[c];
    ASSERT_LE(std::fabs(weight_grad[c] - ref.weight_grad[c]), 16.0 * u * weight_scale)
        << where << " weight_grad[" << c << "]: got " << weight_grad[c] << ", reference " << ref.weight_grad[c];
  }
}

TEST_P(NormTest, LayerNormBackwardMatchesReference) {
  std::uint64_t seed = 1000;
  for (Rows kind : all_row_kinds) {
    for (std::int64_t rows : {1, 3}) {
      for (std::int64_t cols : testing::tail_lengths()) {
        if (cols == 0) continue;
        check_backward(kernels(), GetParam(), kind, rows, cols, GradTarget::separate, seed += 10);
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST_P(NormTest, LayerNormBackwardInPlaceOverOutGrad) {
  std::uint64_t seed = 5000;
  for (std::int64_t cols : testing::tail_lengths()) {
    if (cols == 0) continue;
    check_backward(kernels(), GetParam(), Rows::normal, 3, cols, GradTarget::aliased, seed += 10);
    if (HasFatalFailure()) return;
  }
}

TEST_P(NormTest, LayerNormBackwardWithoutInputGradient) {
  std::uint64_t seed = 9000;
  for (std::int64_t cols : {1, 7, 17, 1000}) {
    check_backward(kernels(), GetParam(), Rows::normal, 2, cols, GradTarget::none, seed += 10);
    if (HasFatalFailure()) return;
  }
}

TEST_P(NormTest, ZeroRowsTouchNothing) {
  GuardedBuffer<float> none(0);
  kernels().layer_norm_forward(none.data(), none.data(), none.data(), none.data(), none.data(), none.data(), 0, 5, eps);
  kernels().layer_norm_backward(none.data(), none.data(), none.data(), none.data(), none.data(), none.data(), none.data(),
                                none.data(), 0, 5);
}

TEST_P(NormTest, KernelsForIsaReturnsThisIsasTable) {
  // The entry point the library uses (norm_kernels() is norm_kernels_for(selected_isa())).
  const Isa isa = GetParam();
  testing::expect_kernels_for_is_safe(isa, "norm", [isa] {
    const NormKernels& table = norm_kernels_for(isa);
    const NormKernels made = kernels_under_test(isa);
    return table.layer_norm_forward == made.layer_norm_forward && table.layer_norm_backward == made.layer_norm_backward;
  });
}

INSTANTIATE_TEST_SUITE_P(Isas, NormTest, testing::all_available_isas(), testing::IsaName());

}  // namespace
}  // namespace ember::simd
