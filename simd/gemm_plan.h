#pragma once
// The planner of ember's GEMM (simd/gemm.h): for one call, which register tiling and
// orientation computes C, how K, M and N are blocked, and how C is split among threads.
// Plain integer arithmetic on the constants of each instruction set (no SIMD here), so the
// choice for every set can be computed, printed and tested on any machine; the kernels
// (simd/gemm_impl.h) only carry the plan out. It is a pure function of the shape, the
// instruction set and the thread count: no timing, no state.
//
// Orientations:
//   normal      C tiles of `rows` rows of C x `vectors` vectors along N: op(A) packed in
//               row slivers and broadcast, op(B) packed in column slivers and loaded
//               (a part of one row: several slivers per tile, GemmPlan::tile_slivers).
//   transposed  C^T tiles: `rows` columns of C x `vectors` vectors along M, op(B)'s
//               slivers broadcast, op(A)^T packed k-major and loaded; the tile is
//               transposed on its way to C. For small N (10 classes), where vectors along
//               N would be mostly padding.
//   dot         A row-major, B = W^T row-major (the Linear forward) with M <= 4 or N = 1:
//               dot products along K straight from A and W, nothing packed (a batch-1
//               GEMV streams W once). Against a prepacked B only where N is under
//               one vector (there the same sums, vectorized along N over the slivers);
//               otherwise the normal orientation streams the slivers whole, reading W
//               at about twice the rate of dot products over W's rows.
// Every C element of the normal and transposed orientations is one FMA chain along K in
// blocks of kc (a function of K alone), a block's sum added to C, then bias, then
// activation: the same float operations whatever the tiling, orientation, blocking of M
// and N, thread count or packing of B. The dot orientation sums in another order; it is
// chosen by a rule on (transposes, M, N) alone (and for a prepacked call, N under a
// vector): otherwise a row of C has the same bits whatever M.
#include <cstddef>
#include <cstdint>

#include "simd/dispatch.h"

namespace ember::simd {

enum class Transpose : bool { no = false, yes = true };

// Below this many multiply-adds (M N K) a call's parts run one after another on the
// calling thread rather than in an OpenMP team (one thread finishes before a team
// starts); a PartRunner (simd/parallel.h) runs them from a smaller size on.
inline constexpr std::int64_t min_openmp_gemm_work = std::int64_t{1} << 21;

// What the planner knows of an instruction set.
struct GemmIsaTraits {
  int width;             // floats per vector
  int vector_registers;  // architectural vector registers
  int max_vectors;       // widest register tile, in vectors
  // max_rows[v]: most broadcast rows of a tile v vectors wide, from the register budget
  // rows * v accumulators + v loaded vectors + 1 broadcast <= vector_registers, capped at 16.
  int max_rows[5];
  // Throughput model of the core, per cycle: vector FMAs issued, loads (a broadcast is
  // one), and the FMA latency (a tile with fewer accumulators than fma_latency *
  // fma_per_cycle waits on it). AVX-512 cores issue one zmm FMA a cycle (Zen 4, which
  // splits it over its two 256-bit units) or two (large Xeons); one is the common case.
  int fma_per_cycle, loads_per_cycle, fma_latency;
};

inline constexpr GemmIsaTraits gemm_isa_traits_table[isa_count] = {
    {4, 16, 3, {0, 14, 6, 4, 0}, 2, 2, 4},    // sse4_2: 16 xmm
    {8, 16, 3, {0, 14, 6, 4, 0}, 2, 2, 4},    // avx2: 16 ymm
    {16, 32, 4, {0, 16, 14, 9, 6}, 1, 2, 4},  // avx512: 32 zmm
};
inline const GemmIsaTraits& gemm_isa_traits(Isa isa) { return gemm_isa_traits_table[static_cast<int>(isa)]; }

enum class GemmOrientation : int { dot = 0, normal = 1, transposed = 2 };

// K block (at most 256, equal blocks, a multiple of 8): a function of K alone, because
// each C element sums one block at a time.
std::int64_t gemm_k_block(std::int64_t K);

// Width, in vectors, of the column slivers op(B) is packed in: a function of N and the
// instruction set alone, so one prepacked B serves every M.
int gemm_b_sliver_vectors(Isa isa, std::int64_t N);

// Whether the call takes the dot orientation (and packs nothing).
bool gemm_uses_dot(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N);

// Slivers of `b_vectors` vectors a one-row normal tile spans (GemmPlan::tile_slivers).
int gemm_row_tile_slivers(Isa isa, int b_vectors);

// Floats of a prepacked op(B) (see gemm_pack_b in simd/gemm.h).
std::size_t plan_packed_b_floats(Isa isa, Transpose trans_b, std::int64_t K, std::int64_t N);

struct GemmPlan {
  GemmOrientation orientation = GemmOrientation::normal;
  // Full tile: `rows` broadcast rows x `vectors` vectors. normal: rows of C (M), vectors
  // along N (= b_vectors, narrower at the last sliver); transposed: at most `rows`
  // columns of C per tile (a B sliver's columns cut evenly into pieces of at most
  // max_rows[vectors]), vectors along M.
  int rows = 0, vectors = 0;
  int b_vectors = 0;  // B sliver width (gemm_b_sliver_vectors)
  // Normal orientation on parts of one row (a GEMV): B slivers side by side per tile, for
  // enough accumulators to hide the FMA latency (rows x vectors of one sliver are too
  // few). Each element keeps its one FMA chain along K, so the bits do not change.
  int tile_slivers = 1;
  // Normal orientation with A row-major: A's rows broadcast in place, not packed (a panel
  // reused over few B slivers does not repay its packing).
  bool direct_a = false;
  std::int64_t kc = 0, mc = 0, nc = 0;
  int threads = 1, m_parts = 1, n_parts = 1;
  std::int64_t part_rows = 0, part_cols = 0;
  std::int64_t a_floats = 0, b_floats = 0;  // scratch per thread, multiples of 16
  // Multiply-add lanes the tiles issue, and those that land in C (M N K): efficiency.
  std::int64_t issued_lanes = 0, useful_lanes = 0;
  std::int64_t cost = 0;  // the model's estimate, in quarter cycles (see gemm_plan.cpp)
  std::size_t scratch_floats() const { return static_cast<std::size_t>(threads * (a_floats + b_floats)); }
  double efficiency() const { return issued_lanes == 0 ? 1.0 : static_cast<double>(useful_lanes) / static_cast<double>(issued_lanes); }
};

// The plan of one call. b_prepacked: op(B) comes packed (gemm_packed), so its packing
// costs nothing and takes no scratch.
GemmPlan plan_gemm(Isa isa, Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                   int threads, bool b_prepacked);

// "normal 14x2v", "transposed 10x1v", "dot": for tables and test messages.
const char* gemm_orientation_name(GemmOrientation orientation);

}  // namespace ember::simd
