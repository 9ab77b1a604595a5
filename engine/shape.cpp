#include "engine/shape.h"

#include "engine/error.h"

namespace ember {

Shape::Shape(std::initializer_list<std::int64_t> dims) : Shape(std::span<const std::int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const std::int64_t> dims) {
  if (dims.size() > static_cast<std::size_t>(max_rank)) {
    throw Error("shape has rank " + std::to_string(dims.size()) + "; at most " + std::to_string(max_rank) +
                " is supported");
  }
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0) throw Error("shape dimension " + std::to_string(i) + " is negative: " + std::to_string(dims[i]));
    dims_[i] = dims[i];
  }
  rank_ = static_cast<int>(dims.size());
}

std::int64_t Shape::elements() const {
  std::int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
  return n;
}

std::int64_t Shape::sample_elements() const {
  std::int64_t n = 1;
  for (int i = 1; i < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
  return n;
}

Shape Shape::with_batch(std::int64_t batch) const {
  if (rank_ == 0) throw Error("a rank-0 shape has no batch dimension");
  Shape s = *this;
  s.dims_[0] = batch;
  return s;
}

Shape Shape::prepend(std::int64_t batch) const {
  if (rank_ == max_rank) throw Error("cannot add a batch dimension to " + str() + ": rank limit reached");
  Shape s;
  s.rank_ = rank_ + 1;
  s.dims_[0] = batch;
  for (int i = 0; i < rank_; ++i) s.dims_[static_cast<std::size_t>(i + 1)] = dims_[static_cast<std::size_t>(i)];
  return s;
}

std::string Shape::str() const {
  std::string out = "(";
  for (int i = 0; i < rank_; ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(dims_[static_cast<std::size_t>(i)]);
  }
  if (rank_ == 1) out += ",";
  return out + ")";
}

bool operator==(const Shape& a, const Shape& b) {
  if (a.rank_ != b.rank_) return false;
  for (int i = 0; i < a.rank_; ++i) {
    if (a.dims_[static_cast<std::size_t>(i)] != b.dims_[static_cast<std::size_t>(i)]) return false;
  }
  return true;
}

}  // namespace ember
