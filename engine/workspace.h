#pragma once
// The runtime state one thread needs to run step programs: an arena for the tensors of
// the memory plan and a oneDNN stream. The executor keeps one per thread that runs
// micro-batches, the inference session one per concurrent caller; programs themselves
// are shared read-only (engine/step_program.h).
#include <cstddef>
#include <memory>

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
  std::size_t bytes() const { return align_up(arena.size()); }

  AlignedBuffer arena;
  std::unique_ptr<dnnl::stream> stream;
};

}  // namespace ember
