#pragma once
// A Tensor is a non-owning view: a pointer and a logical shape. Storage belongs to an
// arena (activations, gradients, scratch) or to the parameter store (weights).
//
// Between oneDNN layers a tensor may stay in the layout oneDNN chose (nChw16c, ...);
// such a tensor carries that layout's descriptor and its byte size comes from the
// descriptor (blocked layouts pad). A tensor with no descriptor is plain row-major.
#include <cstddef>
#include <cstdint>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/shape.h"

namespace ember {

struct Tensor {
  float* data = nullptr;
  Shape shape;
  const dnnl::memory::desc* blocked = nullptr;  // null: plain row-major

  bool is_plain() const { return blocked == nullptr; }
  std::int64_t elements() const { return shape.elements(); }
  // Bytes the data occupies, padding of blocked layouts included.
  std::size_t bytes() const {
    return blocked != nullptr ? blocked->get_size() : static_cast<std::size_t>(shape.elements()) * sizeof(float);
  }
};

}  // namespace ember
