#include "engine/shape.h"

#include "engine/error.h"
#include "engine/text.h"

namespace ember {

Shape::Shape(std::initializer_list<std::int64_t> dims) : Shape(std::span<const std::int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const std::int64_t> dims) {
  if (dims.size() > static_cast<std::size_t>(max_rank)) {
    throw Error("shape has rank " + std::to_string(dims.size()) + "; at most " + std::to_string(max_rank) +
                " is supported");
  }
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0 || dims[i] > max_dimension) {
      throw Error("shape dimension " + std::to_string(i) + ": expected 0 to " + std::to_string(max_dimension) + ", found " +
                  std::to_string(dims[i]));
    }
    dims_[i] = dims[i];
  }
  rank_ = static_cast<int>(dims.size());
}

// Checked: dimensions come from specs and files, and a product that wraps would size a
// buffer too small for the data written into it.
std::int64_t Shape::elements() const {
  std::int64_t n = 1;
  for (int i = 0; i < rank_; ++i) {
    if (__builtin_mul_overflow(n, dims_[static_cast<std::size_t>(i)], &n)) {
      throw Error("shape " + str() + ": the element count overflows 64 bits");
    }
  }
  return n;
}

std::int64_t Shape::sample_elements() const {
  return rank_ == 0 ? 1 : with_batch(1).elements();
}

void Shape::check_batch(std::int64_t batch) {
  if (batch < 0 || batch > max_dimension) {
    throw Error("batch size: expected 0 to " + std::to_string(max_dimension) + ", found " + std::to_string(batch));
  }
}

Shape Shape::with_batch(std::int64_t batch) const {
  if (rank_ == 0) throw Error("a rank-0 shape has no batch dimension");
  check_batch(batch);
  Shape s = *this;
  s.dims_[0] = batch;
  return s;
}

Shape Shape::prepend(std::int64_t batch) const {
  if (rank_ == max_rank) throw Error("cannot add a batch dimension to " + str() + ": rank limit reached");
  check_batch(batch);
  Shape s;
  s.rank_ = rank_ + 1;
  s.dims_[0] = batch;
  for (int i = 0; i < rank_; ++i) s.dims_[static_cast<std::size_t>(i + 1)] = dims_[static_cast<std::size_t>(i)];
  return s;
}

std::string Shape::str() const {
  // A rank-1 shape keeps Python's trailing comma: "(5,)".
  return "(" + join(dims()) + (rank_ == 1 ? "," : "") + ")";
}

bool operator==(const Shape& a, const Shape& b) {
  if (a.rank_ != b.rank_) return false;
  for (int i = 0; i < a.rank_; ++i) {
    if (a.dims_[static_cast<std::size_t>(i)] != b.dims_[static_cast<std::size_t>(i)]) return false;
  }
  return true;
}

}  // namespace ember
