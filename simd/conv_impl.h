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

// The columns of one phase's padded rows that hold input: q in [first, end), where
// row[q] = input column q * phases + phase - pad_w; the others are zero padding.
struct DirectConvRowSpan {
  std::int64_t first, end;
};

template <class Arch>
DirectConvRowSpan direct_conv_row_span(std::int64_t phase, const DirectConvShape& s, const DirectConvInputLayout& l) {
  const std::int64_t step = l.phases;
  // q with 0 <= q * step + phase - pad_w < width
  const std::int64_t first = std::min(l.row_length, std::max<std::int64_t>(0, (s.pad_w - phase + step - 1) / step));
  const std::int64_t end = std::min(l.row_length, std::max(first, (s.width + s.pad_w - phase + step - 1) / step));
  return {first, end};
}

// Zeroes every plane of the scratch layout, once per call: the images' input is then
// copied into the same places each time, and the padding around it stays zero.
template <class Arch>
void direct_conv_zero_input(float* scratch, const DirectConvInputLayout& l) {
  std::fill(scratch + l.plane_offset(0, 0), scratch + l.floats(), 0.0f);
}

// One image's input into the zeroed scratch layout, columns split by phase.
template <class Arch>
void direct_conv_fill_input(float* scratch, const float* image, const DirectConvShape& s, const DirectConvInputLayout& l) {
  for (std::int64_t phase = 0; phase < l.phases; ++phase) {
    const DirectConvRowSpan span = direct_conv_row_span<Arch>(phase, s, l);
    const std::int64_t count = span.end - span.first;
    const std::int64_t from = span.first * l.phases + phase - s.pad_w;  // input column of row[first]
    for (std::int64_t c = 0; c < s.in_channels; ++c) {
      const float* channel = image + c * s.height * s.width + from;
      float* plane = scratch + l.plane_offset(c, phase) + s.pad_h * l.row_length + span.first;
      for (std::int64_t y = 0; y < s.height; ++y) {
        const float* source = channel + y * s.width;
        float* row = plane + y * l.row_length;
        if (l.phases == 1) {
          std::copy(source, source + count, row);
        } else {
          for (std::int64_t q = 0; q < count; ++q) row[q] = source[2 * q];
        }
      }
    }
  }
}

// What one call of direct_conv_block works from: per (input channel, ky, kx) tap, in
// weight order, the offset of its first input from a position's base in the scratch
// (phases[p]: for conv columns of phase p), and the weights of the output channels.
struct DirectConvTaps {
  const std::int64_t* offsets[2];
  std::int64_t count;
};

// acc[r][o] = bias[o] + the conv at position r (its scratch base `base[r]`, its phase's
// tap offsets `offsets[r]`), lanes along the position's row, for Block output channels.
template <class Arch, int Positions, int Block>
void direct_conv_block(xsimd::batch<float, Arch> (&acc)[Positions][Block], const float* const (&base)[Positions],
                       const std::int64_t* const (&offsets)[Positions], std::int64_t taps, const float* weight,
                       const float* bias) {
  using Batch = xsimd::batch<float, Arch>;
  for (int o = 0; o < Block; ++o) {
    const Batch b(bias != nullptr ? bias[o] : 0.0f);
    for (int r = 0; r < Positions; ++r) acc[r][o] = b;
  }
  for (std::int64_t t = 0; t < taps; ++t) {
    Batch v[Positions];
    for (int r = 0; r < Positions; ++r) v[r] = Batch::load_unaligned(base[r] + offsets[r][t]);
    for (int o = 0; o < Block; ++o) {
      const Batch w(weight[o * taps + t]);
      for (int r = 0; r < Positions; ++r) acc[r][o] = xsimd::fma(v[r], w, acc[r][o]);
    }
  }
}

// Stores one vector at `target`, ReLU applied. Lanes past the end of the output row may be
// stored when `room` (floats from target to the end of the channel's plane) holds them:
// they land on rows below, which are written after this one.
template <class Arch>
void direct_conv_store(float* target, xsimd::batch<float, Arch> value, std::int64_t count, std::int64_t room, bool relu) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  if (relu) value = xsimd::max(value, Batch(0.0f));
  if (count == width || room >= width) {
    value.store_unaligned(target);
    return;
  }
  alignas(64) float lanes[width];
  value.store_aligned(lanes);
  std::copy(lanes, lanes + count, target);
}

// The pool of one vector of windows, whose four conv values `value` are in row-major window
// order. Inference: their max. Training (Winners): the first of equal maxima, a later value
// replacing the best only when strictly greater, as oneDNN's and PyTorch's max pools; its
// position 0..3 goes to `winners` as a float (count lanes; room: as direct_conv_store),
// turned into bytes per image by direct_conv2d_run.
template <class Arch, bool Winners>
xsimd::batch<float, Arch> direct_conv_pool_window(const xsimd::batch<float, Arch> (&value)[4], float* winners,
                                                  std::int64_t count, std::int64_t room) {
  using Batch = xsimd::batch<float, Arch>;
  if constexpr (!Winners) {
    return xsimd::max(xsimd::max(value[0], value[1]), xsimd::max(value[2], value[3]));
  } else {
    Batch best = value[0], winner(0.0f);
#pragma GCC unroll 3
    for (int r = 1; r < 4; ++r) {
      const auto greater = value[r] > best;
      best = xsimd::select(greater, value[r], best);
      winner = xsimd::select(greater, Batch(static_cast<float>(r)), winner);
    }
    direct_conv_store<Arch>(winners, winner, count, room, false);
    return best;
  }
}

// Output channels [first, first + Block) of one image, one vector of columns at a time:
// with the pool, the four conv values of each pooled column at once (two rows, two
// phases), then their max; without, two output rows at once.
template <class Arch, int Block, bool Winners>
void direct_conv_channels(float* out, float* winners, const float* scratch, const float* weight, const float* bias,
                          const DirectConvTaps& taps, const DirectConvShape& s, const DirectConvInputLayout& l) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const std::int64_t out_h = s.out_h(), out_w = s.out_w(), plane = out_h * out_w;
  for (std::int64_t y = 0; y < out_h; ++y) {
    // Last vector first: its lanes past the row end fall on the next row's first columns,
    // which this row's loop (two rows) or the next one (one row) writes afterwards.
    for (std::int64_t j0 = (out_w - 1) / width * width; j0 >= 0; j0 -= width) {
      const std::int64_t count = std::min(width, out_w - j0);
      if (s.pool) {
        const float* row0 = scratch + 2 * y * l.row_length + j0;
        const float* const base[4] = {row0, row0, row0 + l.row_length, row0 + l.row_length};
        const std::int64_t* const offsets[4] = {taps.offsets[0], taps.offsets[1], taps.offsets[0], taps.offsets[1]};
        Batch acc[4][Block];
        direct_conv_block<Arch, 4, Block>(acc, base, offsets, taps.count, weight, bias);
        for (int o = 0; o < Block; ++o) {
          const Batch window[4] = {acc[0][o], acc[1][o], acc[2][o], acc[3][o]};
          const std::int64_t at = o * plane + y * out_w + j0, room = plane - y * out_w - j0;
          const Batch m = direct_conv_pool_window<Arch, Winners>(window, Winners ? winners + at : nullptr, count, room);
          direct_conv_store<Arch>(out + o * plane + y * out_w + j0, m, count, plane - y * out_w - j0, s.relu);
        }
      } else if (y + 1 < out_h) {
        const float* row0 = scratch + y * l.row_length + j0;
        const float* const base[2] = {row0, row0 + l.row_length};
        const std::int64_t* const offsets[2] = {taps.offsets[0], taps.offsets[0]};
        Batch acc[2][Block];
        direct_conv_block<Arch, 2, Block>(acc, base, offsets, taps.count, weight, bias);
        for (int o = 0; o < Block; ++o) {
          direct_conv_store<Arch>(out + o * plane + y * out_w + j0, acc[0][o], count, plane - y * out_w - j0, s.relu);
          direct_conv_store<Arch>(out + o * plane + (y + 1) * out_w + j0, acc[1][o], count, plane - (y + 1) * out_w - j0, s.relu);
        }
      } else {
        const float* const base[1] = {scratch + y * l.row_length + j0};
        const std::int64_t* const offsets[1] = {taps.offsets[0]};
        Batch acc[1][Block];
        direct_conv_block<Arch, 1, Block>(acc, base, offsets, taps.count, weight, bias);
        for (int o = 0; o < Block; ++o) {
          direct_conv_store<Arch>(out + o * plane + y * out_w + j0, acc[0][o], count, plane - y * out_w - j0, s.relu);
        }
      }
    }
    if (!s.pool && y + 1 < out_h) ++y;  // that row was written with this one
  }
}

// Output channels o and o + 1 (Channels = 2) or o alone (1) of one pooled vector of
// direct_conv_pooled_3x3: every conv sum starts from the bias and adds the 9 taps in
// weight order (direct_conv_block's order), then the four conv positions pool by max.
template <class Arch, int Channels, bool Winners>
[[gnu::always_inline]] inline void direct_conv_pooled_3x3_channels(float* out, float* winners,
                                     const xsimd::batch<float, Arch> (&in)[4][4], const float* weight, const float* bias,
                                     std::int64_t o, std::int64_t plane, std::int64_t count, std::int64_t room, bool relu) {
  using Batch = xsimd::batch<float, Arch>;
  Batch acc[Channels][4];
#pragma GCC unroll 2
  for (int k = 0; k < Channels; ++k) {
    const Batch b(bias != nullptr ? bias[o + k] : 0.0f);
    const Batch w(weight[(o + k) * 9]);
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) acc[k][r] = xsimd::fma(in[r / 2][r % 2], w, b);
  }
#pragma GCC unroll 9
  for (int tap = 1; tap < 9; ++tap) {
    const int ky = tap / 3, kx = tap % 3;
#pragma GCC unroll 2
    for (int k = 0; k < Channels; ++k) {
      const Batch w(weight[(o + k) * 9 + tap]);
      // Position r: conv row 2y + r / 2, phase r % 2.
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) acc[k][r] = xsimd::fma(in[r / 2 + ky][r % 2 + kx], w, acc[k][r]);
    }
  }
#pragma GCC unroll 2
  for (int k = 0; k < Channels; ++k) {
    const Batch m = direct_conv_pool_window<Arch, Winners>(acc[k], Winners ? winners + (o + k) * plane : nullptr, count, room);
    direct_conv_store<Arch>(out + (o + k) * plane, m, count, room, relu);
  }
}

// One input channel, a 3x3 kernel and the pool (the seed CNN's conv1): a pooled vector's
// four conv positions (two rows, two phases) read 16 input vectors (4 rows x 4 column
// shifts), loaded once and kept in registers while every output channel is summed from
// them, with 36 FMAs per 9 weight broadcasts instead of 16 per 8 loads. For sets with 32
// vector registers. One channel at a time: with two, GCC 12 spills the sums to the stack.
// Measured on Zen 4 at batch 16 (with the padding zeroed once per call): 0.080 ms, two
// channels at a time 0.095 ms, the generic kernel 0.123 ms.
template <class Arch, bool Winners>
void direct_conv_pooled_3x3(float* out, float* winners, const float* scratch, const float* weight, const float* bias,
                            const DirectConvShape& s, const DirectConvInputLayout& l) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const std::int64_t out_h = s.out_h(), out_w = s.out_w(), plane = out_h * out_w;
  const float* phase_plane[2] = {scratch + l.plane_offset(0, 0), scratch + l.plane_offset(0, 1)};
  for (std::int64_t y = 0; y < out_h; ++y) {
    // Last vector first, as direct_conv_channels (its lanes past the row end land on the
    // next row, written afterwards).
    for (std::int64_t j0 = (out_w - 1) / width * width; j0 >= 0; j0 -= width) {
      const std::int64_t count = std::min(width, out_w - j0);
      const std::int64_t at = y * out_w + j0, room = plane - at;
      Batch in[4][4];  // [input row 2y + i][column shift c: phase c % 2, c / 2 columns on]
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
          in[i][c] = Batch::load_unaligned(phase_plane[c % 2] + (2 * y + i) * l.row_length + j0 + c / 2);
        }
      }
      for (std::int64_t o = 0; o < s.out_channels; ++o) {
        direct_conv_pooled_3x3_channels<Arch, 1, Winners>(out + at, Winners ? winners + at : nullptr, in, weight, bias, o, plane,
                                                          count, room, s.relu);
      }
    }
  }
}

// The offset in the scratch of every tap's input for conv columns of each phase, in weight
// order, written at the start of the scratch (offsets[phase * taps + tap]).
template <class Arch>
void direct_conv_tap_offsets(std::int64_t* offsets, const DirectConvShape& s, const DirectConvInputLayout& l) {
  for (std::int64_t phase = 0; phase < l.phases; ++phase) {
    for (std::int64_t c = 0; c < s.in_channels; ++c) {
      for (std::int64_t ky = 0; ky < s.kernel_h; ++ky) {
        for (std::int64_t kx = 0; kx < s.kernel_w; ++kx) {
          const std::int64_t column = phase + kx;
          *offsets++ = l.plane_offset(c, column % l.phases) + ky * l.row_length + column / l.phases;
        }
      }
    }
  }
}

// Output channels [first, first + Block) of every image, for Block = 1..Most.
template <class Arch, int Most, bool Winners>
void direct_conv_channels_up_to(int block, float* image, float* winners, const float* scratch, const float* weight,
                                const float* bias, const DirectConvTaps& taps, const DirectConvShape& s,
                                const DirectConvInputLayout& l) {
  if constexpr (Most > 0) {
    if (block == Most) {
      direct_conv_channels<Arch, Most, Winners>(image, winners, scratch, weight, bias, taps, s, l);
    } else {
      direct_conv_channels_up_to<Arch, Most - 1, Winners>(block, image, winners, scratch, weight, bias, taps, s, l);
    }
  }
}

// Channel blocks of 4 where there are registers for 4 positions x 4 accumulators (AVX-512:
// 32 vector registers), else of 2; then one block of what is left. With Winners (training's
// pool), winners gets each pooled output's window position.
template <class Arch, bool Winners>
void direct_conv2d_run(float* out, std::uint8_t* winners, const float* in, const float* weight, const float* bias, float* scratch,
                       const DirectConvShape& s) {
  constexpr int block = xsimd::batch<float, Arch>::size >= 16 ? 4 : 2;
  const DirectConvInputLayout layout(s, direct_conv_widest_vector);
  auto* offsets = reinterpret_cast<std::int64_t*>(scratch);
  direct_conv_tap_offsets<Arch>(offsets, s, layout);
  const DirectConvTaps taps{{offsets, layout.phases > 1 ? offsets + layout.taps : offsets}, layout.taps};
  const std::int64_t image_in = s.in_channels * s.height * s.width;
  const std::int64_t plane = s.out_h() * s.out_w();
  const bool pooled_3x3 = xsimd::batch<float, Arch>::size >= 16 && s.pool && s.in_channels == 1 && s.kernel_h == 3 &&
                         s.kernel_w == 3;
  direct_conv_zero_input<Arch>(scratch, layout);
  // One image's winners as floats (vector stores), after the input layout.
  float* image_winners = Winners ? scratch + layout.floats() : nullptr;
  const std::int64_t image_out = s.out_channels * plane;
  for (std::int64_t n = 0; n < s.batch; ++n) {
    direct_conv_fill_input<Arch>(scratch, in + n * image_in, s, layout);
    float* image = out + n * image_out;
    if (pooled_3x3) {
      direct_conv_pooled_3x3<Arch, Winners>(image, image_winners, scratch, weight, bias, s, layout);
    } else {
      for (std::int64_t o = 0; o < s.out_channels; o += block) {
        const int count = static_cast<int>(std::min<std::int64_t>(block, s.out_channels - o));
        direct_conv_channels_up_to<Arch, block, Winners>(count, image + o * plane, Winners ? image_winners + o * plane : nullptr,
                                                         scratch, weight + o * layout.taps, bias != nullptr ? bias + o : nullptr,
                                                         taps, s, layout);
      }
    }
    if constexpr (Winners) {
      std::uint8_t* bytes = winners + n * image_out;
      for (std::int64_t i = 0; i < image_out; ++i) bytes[i] = static_cast<std::uint8_t>(static_cast<std::int32_t>(image_winners[i]));
    }
  }
}

template <class Arch>
void direct_conv2d_forward(float* out, const float* in, const float* weight, const float* bias, float* scratch,
                           const DirectConvShape& s) {
  direct_conv2d_run<Arch, false>(out, nullptr, in, weight, bias, scratch, s);
}

template <class Arch>
void direct_conv2d_pool_forward(float* out, std::uint8_t* winners, const float* in, const float* weight, const float* bias,
                                float* scratch, const DirectConvShape& s) {
  direct_conv2d_run<Arch, true>(out, winners, in, weight, bias, scratch, s);
}

template <class Arch>
ConvKernels make_conv_kernels() {
  return ConvKernels{&direct_conv2d_forward<Arch>, &direct_conv2d_pool_forward<Arch>};
}

}  // namespace ember::simd
