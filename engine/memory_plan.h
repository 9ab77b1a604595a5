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
  one_slice_each,  // every tensor its own slice: no reuse
  best_fit,        // reuse memory of tensors that are dead: best fit, neighbours merged
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
