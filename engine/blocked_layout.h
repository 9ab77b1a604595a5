#pragma once
// A blocked oneDNN layout (nChw16c, ...): the memory descriptor oneDNN chose for a value
// that stays in its layout between oneDNN layers. Only code that talks to oneDNN includes
// this header; tensors and values elsewhere hold it by pointer (engine/tensor.h).
#include <cstddef>
#include <memory>

#include <oneapi/dnnl/dnnl.hpp>

namespace ember {

struct BlockedLayout {
  dnnl::memory::desc desc;
  std::size_t bytes() const { return desc.get_size(); }  // blocked layouts pad
};

inline std::shared_ptr<const BlockedLayout> make_blocked_layout(const dnnl::memory::desc& desc) {
  return std::make_shared<const BlockedLayout>(BlockedLayout{desc});
}

}  // namespace ember
