#pragma once
// The reorders a step program runs between a value kept in a blocked oneDNN layout and
// its plain row-major copy, for the layers (and the loss) that read plain data: the value
// forward, and in training its gradient back. The step compiler builds every one of them
// here, once per program.
#include <memory>
#include <optional>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/blocked_layout.h"
#include "engine/shape.h"

namespace ember {

struct Reorder {
  dnnl::memory::desc blocked;
  dnnl::memory::desc plain;
  dnnl::reorder to_plain;
  std::optional<dnnl::reorder> gradient_to_blocked;  // training only

  // Copies `blocked_data` (in the blocked layout) to `plain_data`.
  void run_to_plain(const float* blocked_data, float* plain_data, const dnnl::engine& engine, dnnl::stream& stream) const;
  // Copies a plain gradient into the blocked value's gradient buffer.
  void run_gradient_to_blocked(const float* plain_gradient, float* blocked_gradient, const dnnl::engine& engine,
                               dnnl::stream& stream) const;
};

std::shared_ptr<const Reorder> make_reorder(const dnnl::engine& engine, const BlockedLayout& blocked, const Shape& shape,
                                            bool with_gradient);

}  // namespace ember
