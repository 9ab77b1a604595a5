#pragma once
// How a layer carves one buffer (scratch, or what it saves for backward) into several
// regions: prepare() adds each region's size in a fixed order and keeps the offsets;
// forward and backward find each region at its offset. Every region starts on a 64-byte
// boundary. A buffer of a single region needs none of this: its size is the region's.
#include <cstddef>

#include "engine/aligned_buffer.h"

namespace ember {

class ScratchLayout {
 public:
  // The offset of a new region of `bytes` bytes.
  std::size_t add(std::size_t bytes) {
    const std::size_t offset = total_;
    total_ += align_up(bytes);
    return offset;
  }
  std::size_t total() const { return total_; }

 private:
  std::size_t total_ = 0;
};

}  // namespace ember
