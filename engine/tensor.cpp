#include "engine/tensor.h"

#include "engine/blocked_layout.h"

namespace ember {

std::size_t Tensor::bytes() const {
  return blocked != nullptr ? blocked->bytes() : static_cast<std::size_t>(shape.elements()) * sizeof(float);
}

}  // namespace ember
