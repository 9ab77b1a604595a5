#include "engine/memory_plan.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <random>

#include "engine/aligned_buffer.h"
#include "engine/error.h"

namespace ember {
namespace {

// Free blocks keyed by offset, so neighbours are found and merged in O(log n).
class FreeList {
 public:
  // Best fit: the smallest free block that holds `bytes`; otherwise grow the arena
  // (taking over a free block that ends at the current top).
  std::size_t allocate(std::size_t bytes) {
    auto best = blocks_.end();
    for (auto it = blocks_.begin(); it != blocks_.end(); ++it) {
      if (it->second >= bytes && (best == blocks_.end() || it->second < best->second)) best = it;
    }
    if (best != blocks_.end()) {
      const std::size_t offset = best->first;
      const std::size_t rest = best->second - bytes;
      blocks_.erase(best);
      if (rest > 0) blocks_[offset + bytes] = rest;
      return offset;
    }
    std::size_t offset = top_;
    if (!blocks_.empty()) {
      auto last = std::prev(blocks_.end());
      if (last->first + last->second == top_) {
        offset = last->first;
        blocks_.erase(last);
      }
    }
    top_ = offset + bytes;
    return offset;
  }

  void release(std::size_t offset, std::size_t bytes) {
    auto [it, inserted] = blocks_.emplace(offset, bytes);
    if (it != blocks_.begin()) {
      auto previous = std::prev(it);
      if (previous->first + previous->second == it->first) {
        previous->second += it->second;
        blocks_.erase(it);
        it = previous;
      }
    }
    auto next = std::next(it);
    if (next != blocks_.end() && it->first + it->second == next->first) {
      it->second += next->second;
      blocks_.erase(next);
    }
  }

  std::size_t top() const { return top_; }

 private:
  std::map<std::size_t, std::size_t> blocks_;
  std::size_t top_ = 0;
};

// The in-order walk: free what died before each position, then place what is born
// there, largest first, in the smallest free block that holds it.
std::size_t place_in_order(std::span<const TensorLifetime> tensors, std::vector<std::size_t>& offsets) {
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (tensors[a].first_use != tensors[b].first_use) return tensors[a].first_use < tensors[b].first_use;
    return tensors[a].bytes > tensors[b].bytes;
  });
  std::vector<std::size_t> by_death(tensors.size());
  std::iota(by_death.begin(), by_death.end(), 0);
  std::stable_sort(by_death.begin(), by_death.end(),
                   [&](std::size_t a, std::size_t b) { return tensors[a].last_use < tensors[b].last_use; });

  FreeList free_list;
  std::size_t next_death = 0;
  for (std::size_t i : order) {
    const TensorLifetime& t = tensors[i];
    while (next_death < by_death.size() && tensors[by_death[next_death]].last_use < t.first_use) {
      const std::size_t d = by_death[next_death++];
      // Every tensor that died before t was born has been placed already.
      if (tensors[d].bytes > 0) free_list.release(offsets[d], align_up(tensors[d].bytes));
    }
    if (t.bytes > 0) offsets[i] = free_list.allocate(align_up(t.bytes));
  }
  return free_list.top();
}

// Places tensors in the given order, each in the smallest gap between the placed tensors
// whose lifetimes overlap its own (adjacent ones merged), or above them all.
std::size_t place_in_gaps(std::span<const TensorLifetime> tensors, std::span<const std::size_t> order,
                          std::vector<std::size_t>& offsets) {
  std::vector<std::size_t> placed;
  std::vector<std::pair<std::size_t, std::size_t>> taken;  // [begin, end) of live-together tensors
  std::size_t arena = 0;
  for (std::size_t i : order) {
    const TensorLifetime& t = tensors[i];
    const std::size_t bytes = align_up(t.bytes);
    taken.clear();
    for (std::size_t j : placed) {
      if (tensors[j].first_use <= t.last_use && t.first_use <= tensors[j].last_use) {
        taken.emplace_back(offsets[j], offsets[j] + align_up(tensors[j].bytes));
      }
    }
    std::sort(taken.begin(), taken.end());
    std::size_t best = 0, best_gap = 0, cursor = 0;
    bool found = false;
    for (const auto& [begin, end] : taken) {
      if (begin > cursor) {
        const std::size_t gap = begin - cursor;
        if (gap >= bytes && (!found || gap < best_gap)) {
          best = cursor;
          best_gap = gap;
          found = true;
        }
      }
      cursor = std::max(cursor, end);
    }
    offsets[i] = found ? best : cursor;
    arena = std::max(arena, offsets[i] + bytes);
    placed.push_back(i);
  }
  return arena;
}

// Largest first into gaps. Equal-ish sizes can still land in an unlucky order (a large
// short-lived scratch placed first pushes two long-lived tensors apart), so a few orders
// near the size order are tried too, as XLA's heap simulator tries several algorithms, and
// the smallest arena is kept. The trials are seeded: plans are deterministic.
std::size_t place_by_size(std::span<const TensorLifetime> tensors, std::size_t lower_bound, std::vector<std::size_t>& offsets) {
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].bytes > 0) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (align_up(tensors[a].bytes) != align_up(tensors[b].bytes)) return align_up(tensors[a].bytes) > align_up(tensors[b].bytes);
    return tensors[a].last_use - tensors[a].first_use > tensors[b].last_use - tensors[b].first_use;
  });
  std::size_t arena = place_in_gaps(tensors, order, offsets);
  if (order.size() < 2) return arena;
  constexpr int trials = 48;
  std::mt19937 random(order.size());
  std::uniform_int_distribution<std::size_t> neighbour(0, order.size() - 2);
  std::vector<std::size_t> trial_order, trial_offsets(tensors.size(), 0);
  for (int trial = 0; trial < trials && arena > lower_bound; ++trial) {
    trial_order = order;
    for (int swap = 0; swap < 1 + trial % 4; ++swap) {
      const std::size_t k = neighbour(random);
      std::swap(trial_order[k], trial_order[k + 1]);
    }
    const std::size_t trial_arena = place_in_gaps(tensors, trial_order, trial_offsets);
    if (trial_arena < arena) {
      arena = trial_arena;
      offsets = trial_offsets;
    }
  }
  return arena;
}

}  // namespace

MemoryPlan plan_memory(std::span<const TensorLifetime> tensors, PlanStrategy strategy) {
  MemoryPlan plan;
  plan.offsets.assign(tensors.size(), 0);
  int last_position = 0;
  for (const TensorLifetime& t : tensors) {
    if (t.first_use < 0 || t.last_use < t.first_use) {
      throw Error("tensor '" + t.name + "': lifetime " + std::to_string(t.first_use) + ".." + std::to_string(t.last_use) +
                  " is not a range of step positions (first use >= 0, last use >= first use)");
    }
    plan.naive_bytes += align_up(t.bytes);
    last_position = std::max(last_position, t.last_use);
  }

  // Lower bound: the largest sum of live bytes at one position.
  std::vector<std::size_t> live(static_cast<std::size_t>(last_position) + 2, 0);
  for (const TensorLifetime& t : tensors) {
    live[static_cast<std::size_t>(t.first_use)] += align_up(t.bytes);
    live[static_cast<std::size_t>(t.last_use) + 1] -= align_up(t.bytes);
  }
  std::size_t running = 0;
  for (std::size_t p = 0; p + 1 < live.size(); ++p) {
    running += live[p];
    plan.lower_bound_bytes = std::max(plan.lower_bound_bytes, running);
  }

  switch (strategy) {
    case PlanStrategy::one_slice_each: {
      std::size_t offset = 0;
      for (std::size_t i = 0; i < tensors.size(); ++i) {
        plan.offsets[i] = offset;
        offset += align_up(tensors[i].bytes);
      }
      plan.arena_bytes = offset;
      break;
    }
    case PlanStrategy::best_fit_in_order:
      plan.arena_bytes = place_in_order(tensors, plan.offsets);
      break;
    case PlanStrategy::best_fit_by_size:
      plan.arena_bytes = place_by_size(tensors, plan.lower_bound_bytes, plan.offsets);
      break;
    case PlanStrategy::best_fit: {
      plan.arena_bytes = place_in_order(tensors, plan.offsets);
      std::vector<std::size_t> by_size(tensors.size(), 0);
      const std::size_t arena = place_by_size(tensors, plan.lower_bound_bytes, by_size);
      if (arena < plan.arena_bytes) {
        plan.arena_bytes = arena;
        plan.offsets = std::move(by_size);
      }
      break;
    }
  }
  return plan;
}

void validate_memory_plan(std::span<const TensorLifetime> tensors, const MemoryPlan& plan) {
  if (plan.offsets.size() != tensors.size()) {
    throw Error("memory plan has " + std::to_string(plan.offsets.size()) + " offsets for " +
                std::to_string(tensors.size()) + " tensors");
  }
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return plan.offsets[a] < plan.offsets[b]; });
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (plan.offsets[i] % tensor_alignment != 0) {
      throw Error("memory plan: tensor '" + tensors[i].name + "' at offset " + std::to_string(plan.offsets[i]) +
                  " is not 64-byte aligned");
    }
    if (plan.offsets[i] + tensors[i].bytes > plan.arena_bytes) {
      throw Error("memory plan: tensor '" + tensors[i].name + "' ends at " +
                  std::to_string(plan.offsets[i] + tensors[i].bytes) + ", past the arena of " +
                  std::to_string(plan.arena_bytes) + " bytes");
    }
  }
  // Sweep by offset: any pair that overlaps in memory must not overlap in time.
  for (std::size_t a = 0; a < order.size(); ++a) {
    const std::size_t i = order[a];
    if (tensors[i].bytes == 0) continue;
    const std::size_t end = plan.offsets[i] + tensors[i].bytes;
    for (std::size_t b = a + 1; b < order.size() && plan.offsets[order[b]] < end; ++b) {
      const std::size_t j = order[b];
      if (tensors[j].bytes == 0) continue;
      const bool live_together = tensors[i].first_use <= tensors[j].last_use && tensors[j].first_use <= tensors[i].last_use;
      if (live_together) {
        throw Error("memory plan: tensors '" + tensors[i].name + "' and '" + tensors[j].name +
                    "' are live at the same time and overlap in memory");
      }
    }
  }
}

}  // namespace ember
