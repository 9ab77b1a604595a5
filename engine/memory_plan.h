#pragma once
// The memory plan of one step: every tensor of the step gets an offset in one arena.
//
// Input: each tensor's byte size and lifetime in step positions (the position of the
// first op that writes it and of the last op that reads it, inclusive). Output: offsets,
// the arena size, the naive size (sum of all tensors) and the lower bound (the largest
// total of bytes live at one position). Tensors whose lifetimes overlap never overlap in
// memory; validate_memory_plan() proves it.
#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace ember {

struct TensorLifetime {
  std::string name;
  std::size_t bytes = 0;
  int first_use = 0;
  int last_use = 0;
};

enum class PlanStrategy {
  one_slice_each,     // every tensor its own slice: no reuse
  // Walk the step in order: free what died, place what is born in the smallest free
  // block that holds it (free list, neighbours merged). What a runtime allocator would do.
  best_fit_in_order,
  // Place the largest tensors first, each in the smallest gap left by the tensors already
  // placed that are live at the same time. Knowing every lifetime up front, this avoids
  // the in-order walk's trap: a small long-lived tensor placed where a large one is needed
  // later.
  best_fit_by_size,
  best_fit,           // both best-fit orders; keep the smaller arena
};

struct MemoryPlan {
  std::vector<std::size_t> offsets;  // one per tensor, 64-byte aligned
  std::size_t arena_bytes = 0;
  std::size_t naive_bytes = 0;
  std::size_t lower_bound_bytes = 0;
};

MemoryPlan plan_memory(std::span<const TensorLifetime> tensors, PlanStrategy strategy = PlanStrategy::best_fit);

// Throws ember::Error naming the first two tensors that are live at the same time and
// overlap, or a tensor that ends past the arena.
void validate_memory_plan(std::span<const TensorLifetime> tensors, const MemoryPlan& plan);

}  // namespace ember
