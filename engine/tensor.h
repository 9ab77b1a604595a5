#pragma once
// A Tensor is a non-owning view: a pointer and a logical shape. Storage belongs to an
// arena (activations, gradients, scratch) or to the parameter store (weights).
//
// Between oneDNN layers a tensor may stay in the layout oneDNN chose (nChw16c, ...);
// such a tensor points at that layout (engine/blocked_layout.h) and its byte size comes
// from it (blocked layouts pad). A tensor with no layout is plain row-major.
#include <cstddef>
#include <cstdint>

#include "engine/shape.h"

namespace ember {

struct BlockedLayout;  // engine/blocked_layout.h

struct Tensor {
  float* data = nullptr;
  Shape shape;
  const BlockedLayout* blocked = nullptr;  // null: plain row-major

  bool is_plain() const { return blocked == nullptr; }
  std::int64_t elements() const { return shape.elements(); }
  // Bytes the data occupies, padding of blocked layouts included.
  std::size_t bytes() const;
};

}  // namespace ember
