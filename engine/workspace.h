#pragma once
// The runtime state one thread needs to run step programs: an arena for the tensors of
// the memory plan and a oneDNN stream. The executor keeps one per thread that runs
// micro-batches, the inference session one per concurrent caller; programs themselves
// are shared read-only (engine/step_program.h).
#include <cstddef>
#include <memory>
#include <vector>

#include "engine/aligned_buffer.h"

namespace dnnl {
struct engine;
struct stream;
}  // namespace dnnl

namespace ember {

struct Workspace {
  explicit Workspace(const dnnl::engine& engine, std::size_t arena_bytes = 0);
  ~Workspace();
  Workspace(Workspace&&) noexcept;
  Workspace& operator=(Workspace&&) noexcept;

  // Grows the arena to at least `bytes` (its contents are not kept).
  void reserve(std::size_t arena_bytes);
  std::size_t bytes() const {
    std::size_t total = align_up(arena.size()) + align_up(batch.size());
    for (const AlignedBuffer& buffer : kept) total += align_up(buffer.size());
    return total;
  }

  AlignedBuffer arena;
  std::unique_ptr<dnnl::stream> stream;
  // Programs with sync points (engine/step_program.h) run a whole batch phase by phase:
  // memory kept per micro-batch across the sync points, and the reductions' results.
  std::vector<AlignedBuffer> kept;
  AlignedBuffer batch;
};

}  // namespace ember
