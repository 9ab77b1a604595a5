#pragma once
// Small helpers shared by the layers that wrap oneDNN primitives.
#include <cstddef>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/aligned_buffer.h"
#include "engine/shape.h"
#include "engine/tensor.h"

namespace ember::dnnl_util {

using dnnl::memory;

inline memory::dims dims_of(const Shape& shape) { return memory::dims(shape.dims().begin(), shape.dims().end()); }

// Row-major (plain) descriptor of a shape.
inline memory::desc plain_desc(const Shape& shape) {
  memory::dims dims = dims_of(shape);
  memory::dims strides(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) {
    strides[static_cast<std::size_t>(i)] = strides[static_cast<std::size_t>(i) + 1] * dims[static_cast<std::size_t>(i) + 1];
  }
  return memory::desc(dims, memory::data_type::f32, strides);
}

// The layout of a tensor as oneDNN sees it.
inline memory::desc desc_of(const Tensor& t) { return t.blocked != nullptr ? *t.blocked : plain_desc(t.shape); }

// Every primitive runs with its scratchpad in the caller's scratch: oneDNN's documented
// condition for executing one primitive from several threads at once.
inline dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// Carves 64-byte-aligned regions out of a scratch buffer, in a fixed order: prepare()
// adds sizes to learn the total, forward/backward take the same regions in the same order.
class ScratchLayout {
 public:
  std::size_t add(std::size_t bytes) {
    const std::size_t offset = total_;
    total_ += align_up(bytes);
    return offset;
  }
  std::size_t total() const { return total_; }

 private:
  std::size_t total_ = 0;
};

// Wraps a pointer as oneDNN memory (no copy).
inline memory wrap(const memory::desc& desc, const dnnl::engine& engine, const void* data) {
  return memory(desc, engine, const_cast<void*>(data));
}

}  // namespace ember::dnnl_util
