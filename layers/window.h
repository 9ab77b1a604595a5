#pragma once
// The output length of a sliding window (convolution, pooling) along one axis, as PyTorch
// and oneDNN define it: floor((in + 2 padding - dilation (kernel - 1) - 1) / stride) + 1.
// Every operand comes from a spec, so the arithmetic is checked; a window larger than the
// padded input gives a result < 1, which the caller reports with its own context.
#include <cstdint>
#include <string>

#include "engine/checked.h"

namespace ember {

inline std::int64_t sliding_window_output(std::int64_t in, std::int64_t kernel, std::int64_t stride, std::int64_t padding,
                                          std::int64_t dilation, const std::string& what) {
  const std::int64_t padded = checked_add(in, checked_multiply<std::int64_t>(2, padding, what + ": 2 x padding"), what + ": padded input");
  const std::int64_t extent =
      checked_add<std::int64_t>(checked_multiply(dilation, kernel - 1, what + ": dilation x (kernel - 1)"), 1, what + ": dilated kernel");
  if (padded < extent) return 0;
  return (padded - extent) / stride + 1;
}

}  // namespace ember
