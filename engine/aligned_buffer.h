#pragma once
// An owned, zero-initialized, 64-byte-aligned byte buffer (cache line and AVX-512 width).
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace ember {

inline constexpr std::size_t tensor_alignment = 64;

inline std::size_t align_up(std::size_t bytes, std::size_t alignment = tensor_alignment) {
  return (bytes + alignment - 1) / alignment * alignment;
}

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t bytes) : size_(bytes) {
    if (bytes == 0) return;
    void* p = std::aligned_alloc(tensor_alignment, align_up(bytes));
    if (p == nullptr) throw std::bad_alloc();
    std::memset(p, 0, align_up(bytes));
    data_.reset(static_cast<std::byte*>(p));
  }

  std::byte* data() { return data_.get(); }
  const std::byte* data() const { return data_.get(); }
  float* floats() { return reinterpret_cast<float*>(data_.get()); }
  const float* floats() const { return reinterpret_cast<const float*>(data_.get()); }
  std::size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> data_;
  std::size_t size_ = 0;
};

}  // namespace ember
