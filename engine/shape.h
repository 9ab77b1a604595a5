#pragma once
// A tensor shape: up to 6 dimensions, batch first (NCHW for images, B x T x D for
// sequences). A value type, not a std::vector, so it can be copied freely on hot paths.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

namespace ember {

class Shape {
 public:
  static constexpr int max_rank = 6;
  // The largest dimension (2^31 - 1): any product of two dimensions fits in 64 bits, so
  // layers may multiply a dimension by another without overflow. Larger products (element
  // counts) are checked.
  static constexpr std::int64_t max_dimension = 2147483647;

  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims);
  explicit Shape(std::span<const std::int64_t> dims);

  int rank() const { return rank_; }
  std::int64_t operator[](int axis) const { return dims_[static_cast<std::size_t>(axis)]; }
  std::int64_t& operator[](int axis) { return dims_[static_cast<std::size_t>(axis)]; }
  std::span<const std::int64_t> dims() const { return {dims_.data(), static_cast<std::size_t>(rank_)}; }
  // The product of the dimensions; an ember::Error if it overflows 64 bits (dimensions come
  // from specs and files, so any product of them can).
  std::int64_t elements() const;
  // Elements per sample: the product of every dimension but the first (checked likewise).
  std::int64_t sample_elements() const;
  // The same shape with its first (batch) dimension replaced.
  Shape with_batch(std::int64_t batch) const;
  // This shape with a new leading batch dimension.
  Shape prepend(std::int64_t batch) const;
  // "(64, 1, 28, 28)"
  std::string str() const;

  friend bool operator==(const Shape& a, const Shape& b);

 private:
  static void check_batch(std::int64_t batch);
  std::array<std::int64_t, max_rank> dims_{};
  int rank_ = 0;
};

}  // namespace ember
