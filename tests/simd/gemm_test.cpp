// simd/gemm.h against a double-precision scalar reference, for every instruction set
// this CPU runs:
//   C (M x N) = op(A) (M x K) * op(B) (K x N)  [+ C]  [+ bias (N)]  [then relu / gelu]
// Every operand sits at the end of a guarded buffer (a read past it faults), the
// padding of each leading dimension holds NaN (a kernel that reads it poisons C), and
// the padding of C holds a sentinel that must come back bit for bit. The scratch is
// exactly what gemm_scratch_floats asked for, NaN-filled, with a guard page after it.
#include "simd/gemm.h"
#include "simd/gemm_plan.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "simd_test_support.h"

namespace ember::simd {
namespace {

// A PartRunner that starts one thread per part, last part first, and joins them: parts
// run at once, in another order than their numbers, off the calling thread.
class ThreadPerPartRunner final : public PartRunner {
 public:
  void run(int parts, Body body, void* context) const override {
    std::vector<std::thread> threads;
    for (int part = parts - 1; part >= 0; --part) {
      threads.emplace_back([=, this] {
        body(context, part);
        parts_run.fetch_add(1);
      });
    }
    for (std::thread& thread : threads) thread.join();
  }
  int threads() const override { return 4; }
  mutable std::atomic<int> parts_run{0};
};

// The table under test: made for this instruction set only (see testing::made_for).
GemmKernels kernels_under_test(Isa isa) {
  return testing::made_for<GemmKernels, make_gemm_kernels<ArchSse42>, make_gemm_kernels<ArchAvx2>,
                           make_gemm_kernels<ArchAvx512>>(isa);
}

using testing::GuardedBuffer;

constexpr float nan_value = std::numeric_limits<float>::quiet_NaN();
constexpr float sentinel = -12345.5f;
// Floats in front of C, which must keep the sentinel too.
constexpr std::int64_t c_front = 16;

struct GemmCase {
  Transpose trans_a = Transpose::no;
  Transpose trans_b = Transpose::no;
  std::int64_t M = 0, N = 0, K = 0;
  std::int64_t pad_a = 0, pad_b = 0, pad_c = 0;  // leading dimension minus row length
  bool accumulate = false;
  bool bias = false;
  Activation activation = Activation::none;
  int threads = 1;
};

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::none: return "";
    case Activation::relu: return " relu";
    case Activation::gelu: return " gelu";
    case Activation::gelu_tanh: return " gelu_tanh";
  }
  return " ?";
}

std::string describe(const GemmCase& c) {
  std::ostringstream s;
  s << "gemm(" << (c.trans_a == Transpose::yes ? "A^T" : "A") << ", " << (c.trans_b == Transpose::yes ? "B^T" : "B")
    << ") M=" << c.M << " N=" << c.N << " K=" << c.K << " pads " << c.pad_a << "/" << c.pad_b << "/" << c.pad_c
    << (c.accumulate ? " accumulate" : "") << (c.bias ? " bias" : "") << activation_name(c.activation) << " threads "
    << c.threads;
  return s.str();
}

// A stored matrix: `rows` rows of `cols` used floats, row stride `ld`. Only the floats up
// to the last used one are allocated, as BLAS requires, so the guard page follows it.
struct Stored {
  std::int64_t rows, cols, ld;
  std::int64_t floats() const { return rows == 0 ? 0 : (rows - 1) * ld + cols; }
};

// The activations in double: GELU as torch.nn.GELU (erf) and its tanh approximation.
double activate(Activation a, double x) {
  switch (a) {
    case Activation::none: return x;
    case Activation::relu: return std::max(x, 0.0);
    case Activation::gelu: return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
    case Activation::gelu_tanh: return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  }
  return x;
}

// C (M x N) in double, from the operands as the kernel sees them, before the activation.
std::vector<double> reference_gemm(const GemmCase& c, const float* A, std::int64_t lda, const float* B, std::int64_t ldb,
                                   const std::vector<float>& c_before, std::int64_t ldc, const float* bias,
                                   std::vector<double>& magnitude) {
  std::vector<double> out(static_cast<std::size_t>(c.M * c.N));
  magnitude.assign(out.size(), 0.0);
  for (std::int64_t i = 0; i < c.M; ++i) {
    for (std::int64_t j = 0; j < c.N; ++j) {
      double sum = 0.0, size = 0.0;
      for (std::int64_t k = 0; k < c.K; ++k) {
        const double a = c.trans_a == Transpose::yes ? A[k * lda + i] : A[i * lda + k];
        const double b = c.trans_b == Transpose::yes ? B[j * ldb + k] : B[k * ldb + j];
        sum += a * b;
        size += std::abs(a * b);
      }
      if (c.accumulate) {
        sum += c_before[static_cast<std::size_t>(c_front + i * ldc + j)];
        size += std::abs(c_before[static_cast<std::size_t>(c_front + i * ldc + j)]);
      }
      if (bias != nullptr) {
        sum += bias[j];
        size += std::abs(bias[j]);
      }
      out[static_cast<std::size_t>(i * c.N + j)] = sum;
      magnitude[static_cast<std::size_t>(i * c.N + j)] = size;
    }
  }
  return out;
}

::testing::AssertionResult check_gemm(Isa isa, const GemmKernels& kernels, const GemmCase& c, std::uint64_t seed) {
  const Stored a_shape = c.trans_a == Transpose::yes ? Stored{c.K, c.M, c.M + c.pad_a} : Stored{c.M, c.K, c.K + c.pad_a};
  const Stored b_shape = c.trans_b == Transpose::yes ? Stored{c.N, c.K, c.K + c.pad_b} : Stored{c.K, c.N, c.N + c.pad_b};
  const std::int64_t ldc = c.N + c.pad_c;
  // The kernel may not use a leading dimension of 0 even for an empty row.
  const std::int64_t lda = std::max<std::int64_t>(a_shape.ld, 1);
  const std::int64_t ldb = std::max<std::int64_t>(b_shape.ld, 1);

  auto fill = [](GuardedBuffer<float>& buffer, const Stored& shape, std::int64_t ld, std::uint64_t s) {
    const std::vector<float> values = testing::uniform_vector(buffer.size(), s);
    for (std::size_t p = 0; p < buffer.size(); ++p) {
      const bool used = static_cast<std::int64_t>(p) % ld < shape.cols;
      buffer[p] = used ? values[p] : nan_value;
    }
  };
  GuardedBuffer<float> A(static_cast<std::size_t>(Stored{a_shape.rows, a_shape.cols, lda}.floats()));
  GuardedBuffer<float> B(static_cast<std::size_t>(Stored{b_shape.rows, b_shape.cols, ldb}.floats()));
  fill(A, a_shape, lda, seed);
  fill(B, b_shape, ldb, seed + 1);
  GuardedBuffer<float> bias(static_cast<std::size_t>(c.N));
  bias.assign(testing::uniform_vector(bias.size(), seed + 2));

  // C: a sentinel front, then M rows of ldc floats; used entries start as NaN (an
  // overwriting gemm must not read them) or as values to accumulate onto.
  GuardedBuffer<float> C(static_cast<std::size_t>(c_front + c.M * ldc));
  const std::vector<float> start_values = testing::uniform_vector(C.size(), seed + 3);
  for (std::size_t p = 0; p < C.size(); ++p) {
    const std::int64_t q = static_cast<std::int64_t>(p) - c_front;
    const bool used = q >= 0 && q % ldc < c.N;
    C[p] = !used ? sentinel : (c.accumulate ? start_values[p] : nan_value);
  }
  const std::vector<float> c_before = C.to_vector();

  GemmEpilogue epilogue;
  epilogue.accumulate = c.accumulate;
  epilogue.bias = c.bias ? bias.data() : nullptr;
  epilogue.activation = c.activation;
  GuardedBuffer<float> scratch(kernels.scratch_floats(c.trans_a, c.trans_b, c.M, c.N, c.K, c.threads));
  for (float& x : scratch) x = nan_value;
  kernels.gemm(c.trans_a, c.trans_b, c.M, c.N, c.K, A.data(), lda, B.data(), ldb, C.data() + c_front, ldc, epilogue,
               scratch.data(), c.threads, nullptr);

  std::vector<double> magnitude;
  const std::vector<double> expected =
      reference_gemm(c, A.data(), lda, B.data(), ldb, c_before, ldc, epilogue.bias, magnitude);
  for (std::size_t p = 0; p < C.size(); ++p) {
    const std::int64_t q = static_cast<std::int64_t>(p) - c_front;
    const bool used = q >= 0 && q % ldc < c.N;
    if (!used) {
      if (!testing::same_bits(C[p], sentinel)) {
        return ::testing::AssertionFailure() << isa_name(isa) << " " << describe(c) << ": wrote " << C[p]
                                             << " outside C at float offset " << q << " from C (ldc " << ldc << ")";
      }
      continue;
    }
    const std::int64_t i = q / ldc, j = q % ldc;
    const double sum = expected[static_cast<std::size_t>(i * c.N + j)];
    const double want = activate(c.activation, sum);
    // Float accumulation over K: error bounded by a small multiple of eps * sum |a_ik b_kj|;
    // GELU's slope stays below 1.13, and its float evaluation adds a few ulp of its value.
    const double tolerance = 1.2 * (1e-5 * magnitude[static_cast<std::size_t>(i * c.N + j)] + 1e-6) + 4e-6 * std::abs(want);
    if (!(std::abs(static_cast<double>(C[p]) - want) <= tolerance)) {
      return ::testing::AssertionFailure() << isa_name(isa) << " " << describe(c) << ": C[" << i << "][" << j
                                           << "] = " << C[p] << ", reference " << want << ", tolerance " << tolerance;
    }
  }
  return ::testing::AssertionSuccess();
}

constexpr Transpose transposes[] = {Transpose::no, Transpose::yes};
const std::vector<std::int64_t> awkward_sizes = {1, 2, 3, 7, 15, 16, 17, 33, 65, 130};

// Runs every case; reports at most a few failures so a broken kernel stays readable.
void check_all(Isa isa, const std::vector<GemmCase>& cases) {
  const GemmKernels kernels = kernels_under_test(isa);
  int failures = 0;
  std::uint64_t seed = 1;
  for (const GemmCase& c : cases) {
    const ::testing::AssertionResult result = check_gemm(isa, kernels, c, seed);
    seed += 7;
    EXPECT_TRUE(result);
    if (!result && ++failures == 5) {
      ADD_FAILURE() << "stopping after 5 failing cases of " << cases.size();
      return;
    }
  }
}

class GemmTest : public ::testing::TestWithParam<Isa> {};

TEST_P(GemmTest, AllTransposesOverAwkwardSizes) {
  std::vector<GemmCase> cases;
  for (Transpose ta : transposes) {
    for (Transpose tb : transposes) {
      for (std::int64_t M : awkward_sizes) {
        for (std::int64_t N : awkward_sizes) {
          for (std::int64_t K : awkward_sizes) {
            GemmCase c;
            c.trans_a = ta;
            c.trans_b = tb;
            c.M = M;
            c.N = N;
            c.K = K;
            // Tight and padded leading dimensions, varied across the cases.
            c.pad_a = (M + K) % 3 == 0 ? 0 : 3;
            c.pad_b = (N + K) % 2 == 0 ? 0 : 5;
            c.pad_c = (M + N) % 3 == 1 ? 0 : 2;
            cases.push_back(c);
          }
        }
      }
    }
  }
  check_all(GetParam(), cases);
}

TEST_P(GemmTest, LeadingDimensionsLargerThanRowsAreRespected) {
  std::vector<GemmCase> cases;
  for (Transpose ta : transposes) {
    for (Transpose tb : transposes) {
      for (std::int64_t M : {1, 7, 17, 33}) {
        for (std::int64_t N : {1, 3, 16, 17, 65}) {
          for (std::int64_t K : {1, 15, 17, 33}) {
            for (std::int64_t pad : {1, 37}) {
              GemmCase c;
              c.trans_a = ta;
              c.trans_b = tb;
              c.M = M;
              c.N = N;
              c.K = K;
              c.pad_a = pad;
              c.pad_b = pad + 2;
              c.pad_c = pad + 1;
              c.accumulate = (M + N) % 2 == 0;
              cases.push_back(c);
            }
          }
        }
      }
    }
  }
  check_all(GetParam(), cases);
}

TEST_P(GemmTest, EpiloguesAccumulateBiasAndActivations) {
  std::vector<GemmCase> cases;
  for (Transpose ta : transposes) {
    for (Transpose tb : transposes) {
      for (int epilogue = 0; epilogue < 16; ++epilogue) {
        for (std::int64_t M : {1, 3, 16, 17}) {
          for (std::int64_t N : {1, 7, 16, 17, 33}) {
            for (std::int64_t K : {1, 2, 17, 65}) {
              GemmCase c;
              c.trans_a = ta;
              c.trans_b = tb;
              c.M = M;
              c.N = N;
              c.K = K;
              c.pad_a = 1;
              c.pad_c = 3;
              c.accumulate = (epilogue & 1) != 0;
              c.bias = (epilogue & 2) != 0;
              c.activation = static_cast<Activation>(epilogue >> 2);
              cases.push_back(c);
            }
          }
        }
      }
    }
  }
  check_all(GetParam(), cases);
}

// One row of C (a GEMV, and the backward's batch-1 products): its tiles span several B
// slivers side by side, the last sliver narrower; against the double reference, with
// threads splitting the columns where the shape is large enough (K = 7500, N = 300).
TEST_P(GemmTest, OneRowTilesSpanSlivers) {
  std::vector<GemmCase> cases;
  for (Transpose ta : transposes) {
    for (Transpose tb : transposes) {
      for (std::int64_t N : {47, 147, 300}) {
        for (std::int64_t K : {5, 300, 7500}) {
          for (int threads : {1, 2}) {
            GemmCase c;
            c.trans_a = ta;
            c.trans_b = tb;
            c.M = 1;
            c.N = N;
            c.K = K;
            c.pad_b = 3;
            c.pad_c = 1;
            c.accumulate = K == 300;
            c.bias = N != 147;
            c.activation = static_cast<Activation>((N + K) % 4);
            c.threads = threads;
            cases.push_back(c);
          }
        }
      }
    }
  }
  check_all(GetParam(), cases);
}

TEST_P(GemmTest, EmptyDimensions) {
  // K = 0: C = 0 (or C unchanged when accumulating), then the epilogue. M = 0 or N = 0:
  // nothing is touched, not even by the epilogue.
  std::vector<GemmCase> cases;
  for (Transpose ta : transposes) {
    for (Transpose tb : transposes) {
      for (int epilogue = 0; epilogue < 16; ++epilogue) {
        for (auto [M, N, K] : {std::array<std::int64_t, 3>{0, 7, 5}, {5, 0, 7}, {0, 0, 3}, {0, 0, 0}, {3, 17, 0},
                               {1, 1, 0}, {17, 33, 0}, {0, 9, 0}, {9, 0, 0}}) {
          GemmCase c;
          c.trans_a = ta;
          c.trans_b = tb;
          c.M = M;
          c.N = N;
          c.K = K;
          c.pad_a = 2;
          c.pad_b = 2;
          c.pad_c = 2;
          c.accumulate = (epilogue & 1) != 0;
          c.bias = (epilogue & 2) != 0;
          c.activation = static_cast<Activation>(epilogue >> 2);
          cases.push_back(c);
        }
      }
    }
  }
  check_all(GetParam(), cases);
}

TEST_P(GemmTest, SizesBeyondOneCacheBlock) {
  // K = 600 crosses the K blocks (the epilogue runs at the last one only); a thin M
  // against a wide N runs many B slivers past one A sliver.
  std::vector<GemmCase> cases;
  for (Transpose ta : transposes) {
    for (Transpose tb : transposes) {
      for (bool accumulate : {false, true}) {
        GemmCase c;
        c.trans_a = ta;
        c.trans_b = tb;
        c.M = 9;
        c.N = 1100;
        c.K = 600;
        c.pad_a = 3;
        c.pad_b = 1;
        c.pad_c = 5;
        c.accumulate = accumulate;
        c.bias = accumulate;
        c.activation = accumulate ? Activation::gelu : Activation::relu;
        cases.push_back(c);
      }
    }
  }
  check_all(GetParam(), cases);
}

// Sizes one below, at and one above every blocking boundary of this instruction set's
// kernel (MR, NR, KC, MC, NC), one dimension at a time, for all four transposes.
TEST_P(GemmTest, TailsAroundEveryBlockingBoundary) {
  const GemmBlocking b = kernels_under_test(GetParam()).blocking;
  std::vector<std::array<std::int64_t, 3>> shapes;  // M, N, K
  for (std::int64_t M : {b.mr - 1, b.mr, b.mr + 1, 2 * b.mr + 1, b.mc - 1, b.mc, b.mc + 1}) shapes.push_back({M, b.nr + 1, 37});
  for (std::int64_t N : {b.nr - 1, b.nr, b.nr + 1, 3 * b.nr - 1, b.nc - 1, b.nc, b.nc + 1}) shapes.push_back({b.mr + 1, N, 29});
  for (std::int64_t K : {b.kc - 1, b.kc, b.kc + 1, 2 * b.kc + 1, 3 * b.kc - 1}) shapes.push_back({b.mr + 1, b.nr + 3, K});
  // Every boundary at once, with the whole epilogue.
  shapes.push_back({b.mc + b.mr + 1, b.nc + b.nr + 1, b.kc + 1});
  std::vector<GemmCase> cases;
  for (Transpose ta : transposes) {
    for (Transpose tb : transposes) {
      for (std::size_t s = 0; s < shapes.size(); ++s) {
        GemmCase c;
        c.trans_a = ta;
        c.trans_b = tb;
        c.M = shapes[s][0];
        c.N = shapes[s][1];
        c.K = shapes[s][2];
        c.pad_a = static_cast<std::int64_t>(s % 3);
        c.pad_b = static_cast<std::int64_t>(s % 2) * 5;
        c.pad_c = 1;
        c.accumulate = s % 2 == 1 || s + 1 == shapes.size();
        c.bias = s % 3 != 0;
        c.activation = s + 1 == shapes.size() ? Activation::gelu : static_cast<Activation>(s % 4);
        cases.push_back(c);
      }
    }
  }
  check_all(GetParam(), cases);
}

// Shapes large enough to be split among threads: every thread count gives C bit for bit
// as one thread does (and each is right, with exactly its queried scratch).
TEST_P(GemmTest, ThreadCountsGiveBitwiseIdenticalResults) {
  const Isa isa = GetParam();
  const GemmKernels kernels = kernels_under_test(isa);
  // The kernel does split: two threads need a second set of panels.
  EXPECT_GT(kernels.scratch_floats(Transpose::no, Transpose::yes, 300, 300, 300, 2),
            kernels.scratch_floats(Transpose::no, Transpose::yes, 300, 300, 300, 1));
  const std::array<std::int64_t, 3> shapes[] = {{150, 100, 300}, {37, 530, 129}, {301, 23, 700}, {64, 256, 513}};
  std::vector<GemmCase> cases;
  std::uint64_t seed = 100;
  for (Transpose ta : transposes) {
    for (Transpose tb : transposes) {
      for (const auto& [M, N, K] : shapes) {
        GemmCase c;
        c.trans_a = ta;
        c.trans_b = tb;
        c.M = M;
        c.N = N;
        c.K = K;
        c.pad_a = 1;
        c.pad_c = 2;
        c.accumulate = (M + K) % 2 == 1;
        c.bias = true;
        c.activation = Activation::gelu;
        const Stored a_shape = ta == Transpose::yes ? Stored{K, M, M + 1} : Stored{M, K, K + 1};
        const Stored b_shape = tb == Transpose::yes ? Stored{N, K, K} : Stored{K, N, N};
        const std::int64_t ldc = N + 2;
        const std::vector<float> A = testing::uniform_vector(static_cast<std::size_t>(a_shape.floats()), seed);
        const std::vector<float> B = testing::uniform_vector(static_cast<std::size_t>(b_shape.floats()), seed + 1);
        const std::vector<float> bias = testing::uniform_vector(static_cast<std::size_t>(N), seed + 2);
        const std::vector<float> c_start = testing::uniform_vector(static_cast<std::size_t>(M * ldc), seed + 3);
        seed += 5;
        GemmEpilogue epilogue;
        epilogue.accumulate = c.accumulate;
        epilogue.bias = bias.data();
        epilogue.activation = c.activation;
        std::vector<float> one_thread;
        for (int threads : {1, 2, 3, 4}) {
          c.threads = threads;
          GuardedBuffer<float> scratch(kernels.scratch_floats(ta, tb, M, N, K, threads));
          for (float& x : scratch) x = nan_value;
          std::vector<float> C = c_start;
          kernels.gemm(ta, tb, M, N, K, A.data(), a_shape.ld, B.data(), b_shape.ld, C.data(), ldc, epilogue, scratch.data(),
                       threads, nullptr);
          if (threads == 1) {
            one_thread = C;
          } else {
            EXPECT_EQ(std::memcmp(C.data(), one_thread.data(), C.size() * sizeof(float)), 0)
                << isa_name(isa) << " " << describe(c) << ": C differs from the one-thread result";
            // The same parts on a runner's threads, all at once, last part first.
            const ThreadPerPartRunner runner;
            for (float& x : scratch) x = nan_value;
            C = c_start;
            kernels.gemm(ta, tb, M, N, K, A.data(), a_shape.ld, B.data(), b_shape.ld, C.data(), ldc, epilogue,
                         scratch.data(), threads, &runner);
            EXPECT_EQ(std::memcmp(C.data(), one_thread.data(), C.size() * sizeof(float)), 0)
                << isa_name(isa) << " " << describe(c) << ": C on a PartRunner differs from the one-thread result";
            EXPECT_GT(runner.parts_run.load(), 1) << isa_name(isa) << " " << describe(c) << ": the call was not split";
          }
          cases.push_back(c);
        }
      }
    }
  }
  check_all(isa, cases);
}

// Every orientation and tile the planner picks over a sweep of small shapes (each row
// count of every tiling, narrow and wide N, M around the vector widths), against the
// reference, for all four transposes; the sweep must reach every orientation and every
// B sliver width the planner uses on this instruction set.
TEST_P(GemmTest, EveryTilingOverASweepOfShapes) {
  const Isa isa = GetParam();
  const GemmIsaTraits& traits = gemm_isa_traits(isa);
  std::vector<GemmCase> cases;
  std::vector<bool> orientation_seen(3, false), sliver_seen(5, false);
  std::vector<std::int64_t> ms, ns;
  for (std::int64_t m = 1; m <= 17; ++m) ms.push_back(m);
  for (std::int64_t m : {20, 31, 33, 47, 49, 64, 65}) ms.push_back(m);
  for (std::int64_t n : {1, 2, 3, 5, 8, 10, 13, 16, 17, 24, 31, 33, 48, 49, 64, 65, 96, 130}) ns.push_back(n);
  for (Transpose ta : transposes) {
    for (Transpose tb : transposes) {
      for (std::int64_t M : ms) {
        for (std::int64_t N : ns) {
          GemmCase c;
          c.trans_a = ta;
          c.trans_b = tb;
          c.M = M;
          c.N = N;
          c.K = 13 + (M + N) % 5;
          c.pad_a = M % 3;
          c.pad_b = N % 2;
          c.pad_c = (M + N) % 3;
          c.accumulate = (M + N) % 4 == 1;
          c.bias = (M * N) % 3 != 0;
          c.activation = static_cast<Activation>((M + 2 * N) % 4);
          const GemmPlan plan = plan_gemm(isa, ta, tb, M, N, c.K, 1, false);
          orientation_seen[static_cast<std::size_t>(plan.orientation)] = true;
          sliver_seen[static_cast<std::size_t>(plan.b_vectors)] = true;
          cases.push_back(c);
        }
      }
    }
  }
  EXPECT_TRUE(orientation_seen[0] && orientation_seen[1] && orientation_seen[2]) << "the sweep misses an orientation";
  for (int v = 1; v <= traits.max_vectors; ++v) {
    // A sliver width the sweep missed: add a shape that takes it, if any N does.
    for (std::int64_t N = 1; N <= 16 * traits.width && !sliver_seen[static_cast<std::size_t>(v)]; ++N) {
      if (gemm_b_sliver_vectors(isa, N) != v) continue;
      GemmCase c;
      c.M = 37;
      c.N = N;
      c.K = 21;
      c.bias = true;
      c.pad_c = 1;
      cases.push_back(c);
      sliver_seen[static_cast<std::size_t>(v)] = true;
    }
  }
  EXPECT_TRUE(sliver_seen[1] && sliver_seen[2]) << "the sweep misses B slivers of 1 or 2 vectors";
  check_all(isa, cases);
}

// gemm_packed on op(B) packed once by gemm_pack_b gives C bit for bit as gemm() does, for
// every M against the one packed copy, every transpose, epilogue and thread count 1-3
// (147 x 1800: one-row tiles spanning slivers, then a narrower last sliver).
TEST_P(GemmTest, PackedBGivesBitwiseTheUnpackedResult) {
  const Isa isa = GetParam();
  const GemmKernels kernels = kernels_under_test(isa);
  const std::array<std::int64_t, 2> nks[] = {{10, 128}, {128, 300}, {33, 17}, {1, 40}, {200, 600}, {147, 1800}};
  std::uint64_t seed = 500;
  int failures = 0;
  for (Transpose ta : transposes) {
    for (Transpose tb : transposes) {
      for (const auto& [N, K] : nks) {
        const Stored b_shape = tb == Transpose::yes ? Stored{N, K, K + 3} : Stored{K, N, N + 3};
        const std::vector<float> B = testing::uniform_vector(static_cast<std::size_t>(b_shape.floats()), seed++);
        GuardedBuffer<float> packed(kernels.packed_b_floats(tb, K, N));
        for (float& x : packed) x = nan_value;
        kernels.pack_b(tb, K, N, B.data(), b_shape.ld, packed.data(), 1);
        const std::vector<float> bias = testing::uniform_vector(static_cast<std::size_t>(N), seed++);
        for (std::int64_t M : {1, 3, 4, 5, 16, 17, 49, 64, 150}) {
          const Stored a_shape = ta == Transpose::yes ? Stored{K, M, M + 1} : Stored{M, K, K + 1};
          const std::vector<float> A = testing::uniform_vector(static_cast<std::size_t>(a_shape.floats()), seed++);
          const std::int64_t ldc = N + 1;
          const std::vector<float> c_start = testing::uniform_vector(static_cast<std::size_t>(M * ldc), seed++);
          GemmEpilogue epilogue;
          epilogue.accumulate = M % 2 == 1;
          epilogue.bias = M % 3 != 1 ? bias.data() : nullptr;
          epilogue.activation = static_cast<Activation>(M % 4);
          GuardedBuffer<float> scratch(kernels.scratch_floats(ta, tb, M, N, K, 1));
          std::vector<float> unpacked = c_start;
          const bool packed_dot = plan_gemm(isa, ta, tb, M, N, K, 1, true).orientation == GemmOrientation::dot;
          if (!gemm_uses_dot(ta, tb, M, N) || packed_dot) {
            kernels.gemm(ta, tb, M, N, K, A.data(), a_shape.ld, B.data(), b_shape.ld, unpacked.data(), ldc, epilogue,
                         scratch.data(), 1, nullptr);
          } else {
            // gemm takes the dot orientation here and gemm_packed does not: the packed
            // result must be the first M rows of a packed call with 8 rows more (the same
            // FMA chains whatever M).
            const std::int64_t more = M + 8;
            std::vector<float> a_rows = testing::uniform_vector(static_cast<std::size_t>(more * (K + 1)), seed++);
            std::copy(A.begin(), A.end(), a_rows.begin());
            std::vector<float> c_more = testing::uniform_vector(static_cast<std::size_t>(more * ldc), seed++);
            std::copy(c_start.begin(), c_start.end(), c_more.begin());
            GuardedBuffer<float> more_scratch(kernels.packed_scratch_floats(ta, tb, more, N, K, 1));
            kernels.gemm_packed(ta, tb, more, N, K, a_rows.data(), K + 1, packed.data(), c_more.data(), ldc, epilogue,
                                more_scratch.data(), 1, nullptr);
            std::copy(c_more.begin(), c_more.begin() + M * ldc, unpacked.begin());
          }
          for (int threads : {1, 2, 3}) {
            GuardedBuffer<float> packed_scratch(kernels.packed_scratch_floats(ta, tb, M, N, K, threads));
            for (float& x : packed_scratch) x = nan_value;
            std::vector<float> C = c_start;
            kernels.gemm_packed(ta, tb, M, N, K, A.data(), a_shape.ld, packed.data(), C.data(), ldc, epilogue,
                                packed_scratch.data(), threads, nullptr);
            bool same = std::memcmp(C.data(), unpacked.data(), C.size() * sizeof(float)) == 0;
            if (threads > 1) {
              // The parts on a runner's threads, all at once, last part first.
              const ThreadPerPartRunner runner;
              for (float& x : packed_scratch) x = nan_value;
              std::vector<float> on_runner = c_start;
              kernels.gemm_packed(ta, tb, M, N, K, A.data(), a_shape.ld, packed.data(), on_runner.data(), ldc, epilogue,
                                  packed_scratch.data(), threads, &runner);
              same = same && std::memcmp(on_runner.data(), unpacked.data(), C.size() * sizeof(float)) == 0;
            }
            EXPECT_TRUE(same) << isa_name(isa) << " " << (ta == Transpose::yes ? "A^T" : "A") << " "
                              << (tb == Transpose::yes ? "B^T" : "B") << " M=" << M << " N=" << N << " K=" << K
                              << " threads " << threads << ": gemm_packed differs from gemm";
            if (!same && ++failures == 5) return;
          }
        }
      }
    }
  }
}

// gemm_pack_b splits its slivers among threads (a training step packs Linear's W^T and W
// on the executor's threads): every byte of the packed buffer, its slack included, is the
// same for every thread count, for both transposes, with and without a partial last
// sliver, and for copies too small to split.
TEST_P(GemmTest, PackingBIsTheSameOnAnyThreadCount) {
  const Isa isa = GetParam();
  const GemmKernels kernels = kernels_under_test(isa);
  const std::array<std::int64_t, 2> nks[] = {{6272, 128}, {128, 6272}, {1000, 100}, {777, 129}, {10, 128}};
  std::uint64_t seed = 900;
  for (Transpose tb : transposes) {
    for (const auto& [N, K] : nks) {
      const Stored b_shape = tb == Transpose::yes ? Stored{N, K, K + 3} : Stored{K, N, N + 3};
      const std::vector<float> B = testing::uniform_vector(static_cast<std::size_t>(b_shape.floats()), seed++);
      const std::size_t floats = kernels.packed_b_floats(tb, K, N);
      std::vector<float> one(floats, nan_value);
      kernels.pack_b(tb, K, N, B.data(), b_shape.ld, one.data(), 1);
      for (int threads : {2, 3, 4, 7}) {
        GuardedBuffer<float> packed(floats);
        for (float& x : packed) x = nan_value;
        kernels.pack_b(tb, K, N, B.data(), b_shape.ld, packed.data(), threads);
        EXPECT_EQ(std::memcmp(packed.data(), one.data(), floats * sizeof(float)), 0)
            << isa_name(isa) << " " << (tb == Transpose::yes ? "B^T" : "B") << " N=" << N << " K=" << K << " threads "
            << threads << ": the packed bytes differ from one thread's";
      }
    }
  }
}

// Batch-1 and small-batch inference must not need large scratch: a Linear forward of one
// sample packs nothing, and small shapes take small panels.
TEST_P(GemmTest, ScratchFollowsTheShape) {
  const GemmKernels kernels = kernels_under_test(GetParam());
  EXPECT_EQ(kernels.scratch_floats(Transpose::no, Transpose::yes, 1, 128, 6272, 1), 0u);
  EXPECT_EQ(kernels.scratch_floats(Transpose::no, Transpose::no, 0, 128, 64, 4), 0u);
  EXPECT_EQ(kernels.scratch_floats(Transpose::no, Transpose::yes, 16, 128, 0, 1), 0u);
  EXPECT_LT(kernels.scratch_floats(Transpose::no, Transpose::yes, 16, 10, 128, 1) * sizeof(float), 32u * 1024);
  EXPECT_LT(kernels.scratch_floats(Transpose::no, Transpose::yes, 784, 192, 64, 1) * sizeof(float), 128u * 1024);
  // Small problems stay on one thread, whatever the caller allows.
  EXPECT_EQ(kernels.scratch_floats(Transpose::no, Transpose::yes, 16, 10, 128, 8),
            kernels.scratch_floats(Transpose::no, Transpose::yes, 16, 10, 128, 1));
}

TEST_P(GemmTest, KernelsForIsaReturnsThisIsasTable) {
  // The entry point the library uses (gemm_kernels() is gemm_kernels_for(selected_isa())).
  const Isa isa = GetParam();
  testing::expect_kernels_for_is_safe(isa, "gemm", [isa] {
    const GemmKernels& table = gemm_kernels_for(isa);
    const GemmKernels made = kernels_under_test(isa);
    return table.gemm == made.gemm && table.scratch_floats == made.scratch_floats && table.gemm_packed == made.gemm_packed &&
           table.pack_b == made.pack_b && table.blocking.mr == made.blocking.mr;
  });
}

INSTANTIATE_TEST_SUITE_P(Isas, GemmTest, testing::all_available_isas(), testing::IsaName());

}  // namespace
}  // namespace ember::simd
