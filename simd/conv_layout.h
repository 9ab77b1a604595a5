#pragma once
// Where direct_conv2d_forward (simd/conv.h) puts its tap offsets and one image's
// zero-padded input in its scratch: per input channel, per column phase (pool: even and odd padded columns apart;
// else one phase), padded rows of row_length floats. Shared by simd/conv.cpp (the scratch
// size) and simd/conv_impl.h; in an anonymous namespace because it is compiled into every
// instruction set's translation unit (see simd/arch.h).
#include <cstdint>

#include "simd/conv.h"

namespace ember::simd {
namespace {

// Rows are padded to a multiple of the widest vector (AVX-512: 16 floats), so every
// instruction set runs whole vectors over one scratch size.
constexpr std::int64_t direct_conv_widest_vector = 16;

// n floats rounded up to whole widest vectors: every scratch size is, so a buffer that
// ends on a 64-byte boundary (a guard page's) starts on one too.
constexpr std::int64_t direct_conv_whole_vectors(std::int64_t n) {
  return (n + direct_conv_widest_vector - 1) / direct_conv_widest_vector * direct_conv_widest_vector;
}

struct DirectConvInputLayout {
  DirectConvInputLayout(const DirectConvShape& shape, std::int64_t vector_floats)
      : phases(shape.pool ? 2 : 1),
        padded_columns((shape.out_w() + vector_floats - 1) / vector_floats * vector_floats),
        row_length(padded_columns + (phases - 1 + shape.kernel_w - 1) / phases),
        rows(shape.height + 2 * shape.pad_h),
        plane_floats(rows * row_length),
        channels(shape.in_channels),
        taps(shape.in_channels * shape.kernel_h * shape.kernel_w) {}

  // The scratch begins with the tap offsets (std::int64_t, per phase), then the planes.
  std::int64_t offset_floats() const {
    constexpr auto per_offset = static_cast<std::int64_t>(sizeof(std::int64_t) / sizeof(float));
    return (phases * taps * per_offset + 15) / 16 * 16;  // planes start 64-byte aligned when the scratch is
  }
  std::int64_t plane_offset(std::int64_t channel, std::int64_t phase) const {
    return offset_floats() + (channel * phases + phase) * plane_floats;
  }
  std::int64_t floats() const { return offset_floats() + channels * phases * plane_floats; }

  std::int64_t phases;          // 2 with the pool, else 1
  std::int64_t padded_columns;  // output columns (pooled, with the pool), rounded up to whole vectors
  std::int64_t row_length;      // + the furthest a kernel tap reaches right, in phase columns
  std::int64_t rows;            // height + 2 pad_h
  std::int64_t plane_floats;
  std::int64_t channels;
  std::int64_t taps;            // in_channels * kernel_h * kernel_w
};

}  // namespace
}  // namespace ember::simd
