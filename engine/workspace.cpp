#include "engine/workspace.h"

#include <oneapi/dnnl/dnnl.hpp>

namespace ember {

Workspace::Workspace(const dnnl::engine& engine, std::size_t arena_bytes)
    : arena(arena_bytes), stream(std::make_unique<dnnl::stream>(engine)) {}

Workspace::~Workspace() = default;
Workspace::Workspace(Workspace&&) noexcept = default;
Workspace& Workspace::operator=(Workspace&&) noexcept = default;

void Workspace::reserve(std::size_t arena_bytes) {
  if (arena.size() < arena_bytes) arena = AlignedBuffer(arena_bytes);
}

}  // namespace ember
