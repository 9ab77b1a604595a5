#pragma once
// Generic body of the direct convolution (simd/conv.h), compiled once per instruction
// set. Every function is a template on Arch (see simd/arch.h).
#include <algorithm>
#include <cstdint>
#include <limits>

#include "simd/arch.h"
#include "simd/conv.h"
#include "simd/conv_layout.h"

namespace ember::simd {

// One image's input into the scratch layout: zero padding around it, columns split by phase.
template <class Arch>
void direct_conv_fill_input(float* scratch, const float* image, const DirectConvShape& s, const DirectConvInputLayout& l) {
  for (std::int64_t c = 0; c < s.in_channels; ++c) {
    const float* channel = image + c * s.height * s.width;
    for (std::int64_t phase = 0; phase < l.phases; ++phase) {
      float* plane = scratch + l.plane_offset(c, phase);
      for (std::int64_t r = 0; r < l.rows; ++r) {
        float* row = plane + r * l.row_length;
        const std::int64_t y = r - s.pad_h;
        if (y < 0 || y >= s.height) {
          std::fill(row, row + l.row_length, 0.0f);
          continue;
        }
        for (std::int64_t q = 0; q < l.row_length; ++q) {
          const std::int64_t x = q * l.phases + phase - s.pad_w;
          row[q] = x >= 0 && x < s.width ? channel[y * s.width + x] : 0.0f;
        }
      }
    }
  }
}

// acc[o] = bias[o] + the conv at conv row `y`, conv columns phases * (j0 + lane) + phase,
// for Block output channels from `weight` (their first row).
template <class Arch, int Block>
void direct_conv_accumulate(xsimd::batch<float, Arch> (&acc)[Block], const float* scratch, const float* weight,
                            const float* bias, std::int64_t y, std::int64_t phase, std::int64_t j0, const DirectConvShape& s,
                            const DirectConvInputLayout& l) {
  using Batch = xsimd::batch<float, Arch>;
  const std::int64_t taps = s.in_channels * s.kernel_h * s.kernel_w;
  for (int o = 0; o < Block; ++o) acc[o] = Batch(bias != nullptr ? bias[o] : 0.0f);
  for (std::int64_t c = 0; c < s.in_channels; ++c) {
    for (std::int64_t ky = 0; ky < s.kernel_h; ++ky) {
      for (std::int64_t kx = 0; kx < s.kernel_w; ++kx) {
        const std::int64_t column = phase + kx;
        const float* source = scratch + l.plane_offset(c, column % l.phases) + (y + ky) * l.row_length + j0 + column / l.phases;
        const Batch v = Batch::load_unaligned(source);
        const float* w = weight + (c * s.kernel_h + ky) * s.kernel_w + kx;
        for (int o = 0; o < Block; ++o) acc[o] = xsimd::fma(v, Batch(w[o * taps]), acc[o]);
      }
    }
  }
}

// Output row `out_y` of Block channels starting at `out` (channel stride out_h * out_w).
template <class Arch, int Block>
void direct_conv_row(float* out, const float* scratch, const float* weight, const float* bias, std::int64_t out_y,
                     const DirectConvShape& s, const DirectConvInputLayout& l) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const std::int64_t out_w = s.out_w(), channel_stride = s.out_h() * out_w;
  const Batch zero(0.0f);
  for (std::int64_t j0 = 0; j0 < out_w; j0 += width) {
    Batch result[Block];
    if (s.pool) {
      for (int o = 0; o < Block; ++o) result[o] = Batch(-std::numeric_limits<float>::infinity());
      for (std::int64_t dy = 0; dy < 2; ++dy) {
        for (std::int64_t phase = 0; phase < 2; ++phase) {
          Batch acc[Block];
          direct_conv_accumulate<Arch, Block>(acc, scratch, weight, bias, 2 * out_y + dy, phase, j0, s, l);
          for (int o = 0; o < Block; ++o) result[o] = xsimd::max(result[o], acc[o]);
        }
      }
    } else {
      direct_conv_accumulate<Arch, Block>(result, scratch, weight, bias, out_y, 0, j0, s, l);
    }
    const std::int64_t count = std::min(width, out_w - j0);
    for (int o = 0; o < Block; ++o) {
      const Batch value = s.relu ? xsimd::max(result[o], zero) : result[o];
      float* target = out + o * channel_stride + out_y * out_w + j0;
      if (count == width) {
        value.store_unaligned(target);
      } else {
        alignas(64) float lanes[width];
        value.store_aligned(lanes);
        std::copy(lanes, lanes + count, target);
      }
    }
  }
}

// Output channels [first, first + Block) of one image.
template <class Arch, int Block>
void direct_conv_channels(float* out, const float* scratch, const float* weight, const float* bias, std::int64_t first,
                          const DirectConvShape& s, const DirectConvInputLayout& l) {
  const std::int64_t taps = s.in_channels * s.kernel_h * s.kernel_w;
  for (std::int64_t y = 0; y < s.out_h(); ++y) {
    direct_conv_row<Arch, Block>(out + first * s.out_h() * s.out_w(), scratch, weight + first * taps,
                                 bias != nullptr ? bias + first : nullptr, y, s, l);
  }
}

// Four output channels at a time (4 accumulators, and 4 running maxima with the pool, fit
// the 16 registers of AVX2), then the 1..3 left.
template <class Arch>
void direct_conv2d_forward(float* out, const float* in, const float* weight, const float* bias, float* scratch,
                           const DirectConvShape& s) {
  constexpr int block = 4;
  const DirectConvInputLayout layout(s, direct_conv_widest_vector);
  const std::int64_t image_in = s.in_channels * s.height * s.width;
  const std::int64_t image_out = s.out_channels * s.out_h() * s.out_w();
  for (std::int64_t n = 0; n < s.batch; ++n) {
    direct_conv_fill_input<Arch>(scratch, in + n * image_in, s, layout);
    float* image = out + n * image_out;
    std::int64_t o = 0;
    for (; o + block <= s.out_channels; o += block) direct_conv_channels<Arch, block>(image, scratch, weight, bias, o, s, layout);
    switch (s.out_channels - o) {
      case 3: direct_conv_channels<Arch, 3>(image, scratch, weight, bias, o, s, layout); break;
      case 2: direct_conv_channels<Arch, 2>(image, scratch, weight, bias, o, s, layout); break;
      case 1: direct_conv_channels<Arch, 1>(image, scratch, weight, bias, o, s, layout); break;
      default: break;
    }
  }
}

template <class Arch>
ConvKernels make_conv_kernels() {
  return ConvKernels{&direct_conv2d_forward<Arch>};
}

}  // namespace ember::simd
