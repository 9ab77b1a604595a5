#include "simd/gemm_plan.h"

#include <algorithm>

// Compiled once, with the baseline flags: the kernels of every instruction set call it.
namespace ember::simd {
namespace {

constexpr std::int64_t max_k_block = 256;
constexpr std::int64_t l1_bytes = 32 * 1024;
// Below this many multiply-adds (M N K) one thread finishes before a second one starts
// on its part, even a spinning worker (engine/worker_pool.h). An OpenMP team costs more:
// gemm_run runs the parts of calls under min_openmp_gemm_work (simd/gemm_plan.h) one
// after another when OpenMP would run them.
constexpr std::int64_t min_parallel_work = std::int64_t{1} << 18;
// Rows of op(A) per A panel (an MC x KC panel stays in a 512 KiB L2) and columns of op(B)
// per B panel (a KC x NC panel lives in L3).
constexpr std::int64_t mc_base = 144;
constexpr std::int64_t nc_base = 2048;
// Slack after each packed panel: the packing transposes may write up to 8 floats past it.
constexpr std::int64_t pack_slack = 16;
// Model costs, in quarter cycles: packing four floats (measured on Zen 4: packing op(A)^T
// for fc2 at batch 64 costs a fifth of its tiles), finishing one vector of C (load, add,
// store) and one element of a transposed tile.
constexpr std::int64_t pack_floats_per_unit = 4;
constexpr std::int64_t c_vector_cost = 4;
constexpr std::int64_t c_transposed_element_cost = 4;
// Widest part of C, in B slivers, for which the normal orientation reads A in place.
constexpr std::int64_t direct_a_max_slivers = 16;

std::int64_t ceil_div(std::int64_t x, std::int64_t y) { return (x + y - 1) / y; }

constexpr bool register_budget_holds(const GemmIsaTraits& t) {
  for (int v = 1; v <= t.max_vectors; ++v) {
    const int rows = t.max_rows[v];
    if (rows < 1 || rows > 16 || rows * v + v + 1 > t.vector_registers) return false;
    if (rows < 16 && (rows + 1) * v + v + 1 <= t.vector_registers) return false;  // not the most
  }
  return true;
}
static_assert(register_budget_holds(gemm_isa_traits_table[0]) && register_budget_holds(gemm_isa_traits_table[1]) &&
              register_budget_holds(gemm_isa_traits_table[2]));

// Quarter cycles per step along K of a rows x vectors tile: FMA-, load- or latency-bound.
std::int64_t tile_step_cost(const GemmIsaTraits& t, std::int64_t rows, std::int64_t vectors) {
  const std::int64_t fma = rows * vectors * t.loads_per_cycle;
  const std::int64_t loads = (rows + vectors) * t.fma_per_cycle;
  const std::int64_t latency = std::int64_t{t.fma_latency} * t.fma_per_cycle * t.loads_per_cycle;
  return std::max({fma, loads, latency});
}

// `count` items cut into pieces of at most `most`, as even as possible: the piece size.
std::int64_t even_piece(std::int64_t count, std::int64_t most) { return ceil_div(count, ceil_div(count, most)); }

// Sum of tile_step_cost over rows cut into even pieces of at most max_rows, one tile wide.
std::int64_t rows_step_cost(const GemmIsaTraits& t, std::int64_t rows, std::int64_t max_rows, std::int64_t vectors) {
  if (rows <= 0) return 0;
  const std::int64_t piece = even_piece(rows, max_rows), full = rows / piece;
  return full * tile_step_cost(t, piece, vectors) + (rows % piece > 0 ? tile_step_cost(t, rows % piece, vectors) : 0);
}

// Not when A's rows (K floats apart, as Linear's are) are a multiple of 4 KiB apart: a
// tile's rows would then all fall in the same L1 sets and evict each other.
bool reads_a_in_place(const GemmIsaTraits& t, int b_vectors, Transpose trans_a, std::int64_t cols, std::int64_t K) {
  return trans_a == Transpose::no && cols <= direct_a_max_slivers * b_vectors * t.width && K % 1024 != 0;
}

// Most vectors of a one-row tile spanning slivers (its kernels are instantiated up to it).
constexpr int row_tile_most_vectors = 8;

int row_tile_slivers(const GemmIsaTraits& t, int b_vectors) {
  // Accumulators that keep the FMA units busy through the FMA latency.
  const int wanted = t.fma_latency * t.fma_per_cycle;
  const int most = std::min(row_tile_most_vectors, t.vector_registers - 2);  // accumulators, a load, a broadcast
  int slivers = 1;
  while (slivers * b_vectors < wanted && (slivers + 1) * b_vectors <= most) ++slivers;
  return slivers;
}

// The normal orientation on a part of rows x cols.
std::int64_t normal_cost(const GemmIsaTraits& t, int b_vectors, std::int64_t rows, std::int64_t cols, std::int64_t K,
                         bool b_prepacked, bool direct_a) {
  const std::int64_t n_vectors = ceil_div(cols, t.width), max_rows = t.max_rows[b_vectors];
  const std::int64_t full = n_vectors / b_vectors, last = n_vectors % b_vectors;
  std::int64_t step = full * rows_step_cost(t, rows, max_rows, b_vectors);
  if (rows == 1) {
    // Whole slivers side by side (GemmPlan::tile_slivers), the rest one by one.
    const std::int64_t side = row_tile_slivers(t, b_vectors), groups = full / side;
    step = groups * tile_step_cost(t, 1, side * b_vectors) + (full - groups * side) * tile_step_cost(t, 1, b_vectors);
  }
  if (last > 0) step += rows_step_cost(t, rows, max_rows, last);
  const std::int64_t k_blocks = ceil_div(K, gemm_k_block(K));
  const std::int64_t a_packed = direct_a ? 0 : rows * ceil_div(cols, nc_base);
  const std::int64_t packing = (a_packed + (b_prepacked ? 0 : n_vectors * t.width)) * K / pack_floats_per_unit;
  return step * K + k_blocks * rows * n_vectors * c_vector_cost + packing;
}

// The transposed orientation on a part of rows x cols, tiles `vectors` wide along M.
std::int64_t transposed_cost(const GemmIsaTraits& t, int b_vectors, int vectors, std::int64_t rows, std::int64_t cols,
                             std::int64_t K, bool b_prepacked) {
  const std::int64_t m_vectors = ceil_div(rows, t.width), sliver = std::int64_t{b_vectors} * t.width;
  const std::int64_t max_rows = t.max_rows[vectors];
  // One tile row (all vector tiles along M) per B column; columns of each B sliver cut evenly.
  auto columns_cost = [&](std::int64_t columns) {
    const std::int64_t full = m_vectors / vectors, last = m_vectors % vectors;
    return full * rows_step_cost(t, columns, max_rows, vectors) + (last > 0 ? rows_step_cost(t, columns, max_rows, last) : 0);
  };
  std::int64_t step = (cols / sliver) * columns_cost(sliver);
  if (cols % sliver > 0) step += columns_cost(cols % sliver);
  const std::int64_t k_blocks = ceil_div(K, gemm_k_block(K));
  const std::int64_t b_floats = ceil_div(cols, t.width) * t.width;
  const std::int64_t packing =
      (m_vectors * t.width * ceil_div(cols, nc_base) + (b_prepacked ? 0 : b_floats)) * K / pack_floats_per_unit;
  return step * K + k_blocks * rows * cols * c_transposed_element_cost + packing;
}

struct Candidate {
  GemmOrientation orientation;
  int vectors;  // transposed: tile width along M
  Transpose trans_a;
};

std::int64_t part_cost(const GemmIsaTraits& t, int b_vectors, Candidate c, std::int64_t rows, std::int64_t cols,
                       std::int64_t K, bool b_prepacked) {
  if (c.orientation == GemmOrientation::normal) {
    return normal_cost(t, b_vectors, rows, cols, K, b_prepacked, reads_a_in_place(t, b_vectors, c.trans_a, cols, K));
  }
  return transposed_cost(t, b_vectors, c.vectors, rows, cols, K, b_prepacked);
}

// Splits C into m_parts x n_parts (rows on multiples of m_unit, columns on whole B
// slivers) for the least cost of the largest part.
void choose_parts(const GemmIsaTraits& t, Candidate c, std::int64_t M, std::int64_t N, std::int64_t K, int threads,
                  bool b_prepacked, GemmPlan& plan) {
  const std::int64_t m_unit = c.orientation == GemmOrientation::normal ? 1 : t.width;
  const std::int64_t n_unit = std::int64_t{plan.b_vectors} * t.width;
  const std::int64_t m_units = ceil_div(M, m_unit), n_units = ceil_div(N, n_unit);
  auto part = [&](std::int64_t tm, std::int64_t tn, std::int64_t& rows, std::int64_t& cols) {
    rows = std::min(M, ceil_div(m_units, tm) * m_unit);
    cols = std::min(N, ceil_div(n_units, tn) * n_unit);
    return part_cost(t, plan.b_vectors, c, rows, cols, K, b_prepacked);
  };
  plan.m_parts = plan.n_parts = 1;
  plan.cost = part(1, 1, plan.part_rows, plan.part_cols);
  if (threads <= 1 || M * N * K < min_parallel_work) return;
  for (std::int64_t total = 2; total <= threads; ++total) {
    for (std::int64_t tm = 1; tm <= total; ++tm) {
      const std::int64_t tn = total / tm;
      if (tm * tn != total || tm > m_units || tn > n_units) continue;
      std::int64_t rows = 0, cols = 0;
      const std::int64_t cost = part(tm, tn, rows, cols);
      if (cost >= plan.cost) continue;
      plan.cost = cost, plan.m_parts = static_cast<int>(tm), plan.n_parts = static_cast<int>(tn);
      plan.part_rows = rows, plan.part_cols = cols;
    }
  }
}

// Tile shape, panels and scratch of a plan whose orientation and parts are chosen.
void size_panels(const GemmIsaTraits& t, Candidate c, std::int64_t N, std::int64_t K, bool b_prepacked, GemmPlan& plan) {
  auto round16 = [](std::int64_t floats) { return ceil_div(floats, 16) * 16; };
  const std::int64_t sliver = std::int64_t{plan.b_vectors} * t.width;
  plan.kc = gemm_k_block(K);
  plan.nc = std::max<std::int64_t>(1, nc_base / sliver) * sliver;
  std::int64_t a_rows = 0;
  if (c.orientation == GemmOrientation::normal) {
    plan.direct_a = reads_a_in_place(t, plan.b_vectors, c.trans_a, plan.part_cols, K);
    plan.vectors = plan.b_vectors;
    plan.rows = static_cast<int>(even_piece(plan.part_rows, t.max_rows[plan.b_vectors]));
    if (plan.part_rows == 1) plan.tile_slivers = row_tile_slivers(t, plan.b_vectors);
    plan.mc = std::max<std::int64_t>(1, mc_base / plan.rows) * plan.rows;
    a_rows = plan.direct_a ? 0 : std::min(plan.mc, plan.part_rows);
  } else {
    plan.vectors = c.vectors;
    // Tiles of a B sliver's columns, cut evenly (the last sliver may be cut finer).
    plan.rows = static_cast<int>(even_piece(std::min(N, sliver), t.max_rows[c.vectors]));
    const std::int64_t tile = std::int64_t{c.vectors} * t.width;
    plan.mc = std::max<std::int64_t>(1, mc_base / tile) * tile;
    a_rows = std::min(plan.mc, ceil_div(plan.part_rows, t.width) * t.width);
  }
  plan.threads = plan.m_parts * plan.n_parts;
  plan.a_floats = round16(a_rows * plan.kc + pack_slack);
  const std::int64_t b_cols = ceil_div(std::min({plan.nc, plan.part_cols, N}), t.width) * t.width;
  plan.b_floats = b_prepacked ? 0 : round16(plan.kc * b_cols + pack_slack);
}

}  // namespace

std::int64_t gemm_k_block(std::int64_t K) {
  if (K <= 0) return 0;
  return std::min(K, ceil_div(ceil_div(K, ceil_div(K, max_k_block)), 8) * 8);
}

int gemm_b_sliver_vectors(Isa isa, std::int64_t N) {
  // The sliver whose tiles cost least per row of C over N (a large M's tiling), among
  // those whose K block (kc x width) fits a 32 KiB L1; the wider on a tie (fewer loads).
  const GemmIsaTraits& t = gemm_isa_traits(isa);
  const std::int64_t n_vectors = std::max<std::int64_t>(1, ceil_div(N, t.width));
  int best = 1;
  std::int64_t best_cost = 0;
  for (int v = 1; v <= t.max_vectors && v <= n_vectors; ++v) {
    if (v > 1 && max_k_block * v * t.width * std::int64_t{sizeof(float)} > l1_bytes) break;
    const std::int64_t rows = t.max_rows[v], last = n_vectors % v;
    // Cost per row of C, scaled by a common multiple of every max_rows (720720 = lcm 1..16).
    std::int64_t cost = n_vectors / v * tile_step_cost(t, rows, v) * (720720 / rows);
    if (last > 0) cost += tile_step_cost(t, rows, last) * (720720 / rows);
    if (v == 1 || cost <= best_cost) best = v, best_cost = cost;
  }
  return best;
}

bool gemm_uses_dot(Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N) {
  return trans_a == Transpose::no && trans_b == Transpose::yes && (M <= 4 || N == 1);
}

int gemm_row_tile_slivers(Isa isa, int b_vectors) { return row_tile_slivers(gemm_isa_traits(isa), b_vectors); }

std::size_t plan_packed_b_floats(Isa isa, Transpose /*trans_b*/, std::int64_t K, std::int64_t N) {
  if (K <= 0 || N <= 0) return 0;
  const GemmIsaTraits& t = gemm_isa_traits(isa);
  return static_cast<std::size_t>(ceil_div(N, t.width) * t.width * K + pack_slack);
}

GemmPlan plan_gemm(Isa isa, Transpose trans_a, Transpose trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                   int threads, bool b_prepacked) {
  const GemmIsaTraits& t = gemm_isa_traits(isa);
  GemmPlan plan;
  if (M <= 0 || N <= 0 || K <= 0) return plan;
  plan.useful_lanes = M * N * K;
  // Against prepacked slivers the dot orientation pays only where a vector along N
  // would be mostly padding (10 classes): elsewhere the normal orientation streams the
  // slivers whole, about twice as fast as the dot products for a batch-1 GEMV.
  if (gemm_uses_dot(trans_a, trans_b, M, N) && (!b_prepacked || N < t.width)) {
    plan.orientation = GemmOrientation::dot;
    plan.issued_lanes = M * N * ceil_div(K, t.width) * t.width;
    return plan;
  }
  plan.b_vectors = gemm_b_sliver_vectors(isa, N);
  Candidate best{GemmOrientation::normal, plan.b_vectors, trans_a};
  choose_parts(t, best, M, N, K, threads, b_prepacked, plan);
  // Vectors along M pay only where vectors along N would carry padding.
  for (int v = 1; v <= t.max_vectors && N % t.width != 0; ++v) {
    GemmPlan trial = plan;
    const Candidate c{GemmOrientation::transposed, v, trans_a};
    choose_parts(t, c, M, N, K, threads, b_prepacked, trial);
    if (trial.cost < plan.cost) plan = trial, best = c;
  }
  plan.orientation = best.orientation;
  size_panels(t, best, N, K, b_prepacked, plan);
  plan.issued_lanes = best.orientation == GemmOrientation::normal ? M * ceil_div(N, t.width) * t.width * K
                                                                  : N * ceil_div(M, t.width) * t.width * K;
  return plan;
}

const char* gemm_orientation_name(GemmOrientation orientation) {
  switch (orientation) {
    case GemmOrientation::dot: return "dot";
    case GemmOrientation::normal: return "normal";
    case GemmOrientation::transposed: return "transposed";
  }
  return "?";
}

}  // namespace ember::simd
