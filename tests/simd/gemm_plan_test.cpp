// simd/gemm_plan.h: the tiling chosen for every benchmarked GEMM shape (bench/gemm_shapes.h)
// on every instruction set, computed without running it, so this runs on any machine.
// Prints the table (orientation, tile, efficiency = useful FMA lanes / issued FMA lanes)
// and fails if a benchmarked shape wastes more than a quarter of its lanes on AVX-512.
#include "simd/gemm_plan.h"

#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "bench/gemm_shapes.h"

namespace ember::simd {
namespace {

constexpr Isa all_isas[] = {Isa::sse4_2, Isa::avx2, Isa::avx512};
constexpr double min_avx512_efficiency = 0.75;

std::string describe(const GemmPlan& plan) {
  if (plan.orientation == GemmOrientation::dot) return "dot";
  return std::string(gemm_orientation_name(plan.orientation)) + " " + std::to_string(plan.rows) + "x" +
         std::to_string(plan.vectors) + "v (B slivers " + std::to_string(plan.b_vectors) + "v)";
}

GemmPlan forward_plan(Isa isa, const bench::GemmShape& s, bool prepacked) {
  return plan_gemm(isa, Transpose::no, Transpose::yes, s.M, s.N, s.K, 1, prepacked);
}

TEST(GemmPlan, BenchmarkedShapesUseThreeQuartersOfTheirLanesOnAvx512) {
  std::printf("%-16s %-7s %-36s %s\n", "shape (MxKxN)", "isa", "tiling (1 thread)", "efficiency");
  for (const bench::GemmShape& s : bench::gemm_shapes) {
    for (Isa isa : all_isas) {
      const GemmPlan plan = forward_plan(isa, s, false);
      std::printf("%-16s %-7s %-36s %5.1f%%\n", s.name, std::string(isa_name(isa)).c_str(), describe(plan).c_str(),
                  100.0 * plan.efficiency());
      if (isa == Isa::avx512) {
        EXPECT_GE(plan.efficiency(), min_avx512_efficiency)
            << s.name << " (" << s.M << "x" << s.K << "x" << s.N << ") on avx512: " << describe(plan);
      }
    }
  }
}

// Prepacking changes only what packing costs, never the lanes a shape wastes here.
TEST(GemmPlan, PrepackedShapesAreAsEfficient) {
  for (const bench::GemmShape& s : bench::gemm_shapes) {
    const GemmPlan plan = forward_plan(Isa::avx512, s, true);
    EXPECT_GE(plan.efficiency(), min_avx512_efficiency) << s.name << ": " << describe(plan);
  }
}

// The prepacked layout depends on (isa, trans_b, K, N) only: the B sliver width of every
// plan is the one gemm_pack_b packs with, whatever M and the thread count.
TEST(GemmPlan, BSliverWidthIgnoresMAndThreads) {
  for (Isa isa : all_isas) {
    for (std::int64_t N : {1, 7, 10, 16, 33, 64, 128, 192, 1000}) {
      for (std::int64_t M : {5, 16, 49, 64, 300, 2048}) {
        for (int threads : {1, 2, 3}) {
          for (bool prepacked : {false, true}) {
            const GemmPlan plan = plan_gemm(isa, Transpose::no, Transpose::no, M, N, 500, threads, prepacked);
            EXPECT_EQ(plan.b_vectors, gemm_b_sliver_vectors(isa, N)) << isa_name(isa) << " M=" << M << " N=" << N;
            EXPECT_LE(plan.rows, gemm_isa_traits(isa).max_rows[plan.vectors]);
          }
        }
      }
    }
  }
}

// A one-row GEMM (the batch-1 forward against packed weights) tiles several B slivers side
// by side: enough accumulators to hide the FMA latency, within the register budget. Two
// rows tile one sliver (4 accumulators and more on every set).
TEST(GemmPlan, OneRowTilesSpanSlivers) {
  for (Isa isa : all_isas) {
    const GemmIsaTraits& t = gemm_isa_traits(isa);
    const GemmPlan one = plan_gemm(isa, Transpose::no, Transpose::yes, 1, 128, 6272, 1, true);
    EXPECT_EQ(one.orientation, GemmOrientation::normal) << isa_name(isa);
    EXPECT_EQ(one.tile_slivers, gemm_row_tile_slivers(isa, one.b_vectors));
    // Enough accumulators, or as many whole slivers as 8 vectors hold.
    const int vectors = one.tile_slivers * one.b_vectors, wanted = t.fma_latency * t.fma_per_cycle;
    EXPECT_GT(one.tile_slivers, 1) << isa_name(isa);
    EXPECT_LE(vectors, 8) << isa_name(isa);
    EXPECT_TRUE(vectors >= wanted || vectors + one.b_vectors > 8) << isa_name(isa) << ": " << vectors << " vectors";
    EXPECT_EQ(plan_gemm(isa, Transpose::no, Transpose::yes, 2, 128, 6272, 1, true).tile_slivers, 1) << isa_name(isa);

  }
}

// The same plan for the same question, and the dot orientation by its rule alone.
TEST(GemmPlan, IsAPureFunctionOfItsArguments) {
  for (Isa isa : all_isas) {
    for (const bench::GemmShape& s : bench::gemm_shapes) {
      const GemmPlan a = forward_plan(isa, s, false), b = forward_plan(isa, s, false);
      EXPECT_EQ(a.orientation, b.orientation);
      EXPECT_EQ(a.rows, b.rows);
      EXPECT_EQ(a.vectors, b.vectors);
      EXPECT_EQ(a.scratch_floats(), b.scratch_floats());
      EXPECT_EQ(a.orientation == GemmOrientation::dot, s.M <= 4 || s.N == 1) << s.name;
    }
  }
}

}  // namespace
}  // namespace ember::simd
