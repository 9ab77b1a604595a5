#pragma once
// Generic body of the fused conv + pool parameter gradients (simd/conv_pool_grad.h),
// compiled once per instruction set. Every function is a template on Arch (simd/arch.h).
// The input is laid out as the forward lays it (simd/conv_layout.h, simd/conv_impl.h), so a
// conv position's taps are found with the forward's tap offsets.
#include <algorithm>
#include <cstdint>

#include "simd/arch.h"
#include "simd/conv_impl.h"
#include "simd/conv_layout.h"
#include "simd/conv_pool_grad.h"

namespace ember::simd {

// Taps summed per pass over an image's pooled outputs, their sums held in registers: the
// seed CNN's 1-channel 3x3 conv in one pass. More taps take more passes.
inline constexpr int pool_grad_taps_per_pass = 9;

// count lanes from `values`, the rest 0 (a row's last vector). `room`: floats readable from
// `values`; where a whole vector is, it is loaded and the lanes from count on are masked
// off (`lane`: 0, 1, 2, ... per lane).
template <class Arch>
xsimd::batch<float, Arch> pool_grad_load_gradient(const float* values, std::int64_t count, std::int64_t room,
                                                  xsimd::batch<float, Arch> lane) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  if (count == width) return Batch::load_unaligned(values);
  if (room >= width) return xsimd::select(lane < Batch(static_cast<float>(count)), Batch::load_unaligned(values), Batch(0.0f));
  alignas(64) float lanes[width] = {};
  std::copy(values, values + count, lanes);
  return Batch::load_aligned(lanes);
}

// What pool_grad_channel_pass reads for one image and output channel.
struct PoolGradChannel {
  const float* output_grad;  // the channel's plane
  const float* winners;      // the same, as floats 0..3
  std::int64_t room;         // floats readable from output_grad
};

// One image's sums for one output channel and taps [first, first + taps), Fixed taps when
// Fixed > 0 (the loops then unroll whole and the sums stay in registers), else
// `runtime_taps` <= pool_grad_taps_per_pass. `sums` holds one vector of per-lane sums per tap
// and then the bias's, added to here.
template <class Arch, int Fixed>
void pool_grad_channel_pass(float* sums, const float* scratch, const PoolGradChannel& channel, const std::int64_t* const (&offsets)[2],
                            std::int64_t first, int runtime_taps, bool with_bias, const DirectConvShape& s,
                            const DirectConvInputLayout& l) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  constexpr int most = Fixed > 0 ? Fixed : pool_grad_taps_per_pass;
  const int taps = Fixed > 0 ? Fixed : runtime_taps;
  const std::int64_t out_h = s.out_h(), out_w = s.out_w();
  alignas(64) float lane_index[width];
  for (std::int64_t i = 0; i < width; ++i) lane_index[i] = static_cast<float>(i);
  const Batch lane = Batch::load_aligned(lane_index);
  Batch acc[most];
#pragma GCC unroll 9
  for (int k = 0; k < most; ++k) acc[k] = k < taps ? Batch::load_unaligned(sums + (first + k) * width) : Batch(0.0f);
  Batch bias_acc = Batch::load_unaligned(sums + l.taps * width);
  for (std::int64_t y = 0; y < out_h; ++y) {
    for (std::int64_t j0 = 0; j0 < out_w; j0 += width) {
      const std::int64_t at = y * out_w + j0, count = std::min(width, out_w - j0);
      const Batch g = pool_grad_load_gradient<Arch>(channel.output_grad + at, count, channel.room - at, lane);
      const Batch winner = Batch::load_unaligned(channel.winners + at);  // lanes past count: g is 0 there
      const auto right = (winner == Batch(1.0f)) | (winner == Batch(3.0f));  // positions 1 and 3: the odd conv column
      const auto lower = winner >= Batch(2.0f);                              // positions 2 and 3: the lower conv row
      const float* row0 = scratch + 2 * y * l.row_length + j0;
      const float* row1 = row0 + l.row_length;
#pragma GCC unroll 9
      for (int k = 0; k < most; ++k) {
        if (Fixed == 0 && k >= taps) break;
        const std::int64_t t = first + k;
        const Batch upper_pick =
            xsimd::select(right, Batch::load_unaligned(row0 + offsets[1][t]), Batch::load_unaligned(row0 + offsets[0][t]));
        const Batch lower_pick =
            xsimd::select(right, Batch::load_unaligned(row1 + offsets[1][t]), Batch::load_unaligned(row1 + offsets[0][t]));
        acc[k] = xsimd::fma(g, xsimd::select(lower, lower_pick, upper_pick), acc[k]);
      }
      if (with_bias) bias_acc += g;
    }
  }
#pragma GCC unroll 9
  for (int k = 0; k < most; ++k) {
    if (k < taps) acc[k].store_unaligned(sums + (first + k) * width);
  }
  if (with_bias) bias_acc.store_unaligned(sums + l.taps * width);
}

// One input channel and a 3x3 kernel (the seed CNN's conv1): a pooled vector's windows read
// 4 input rows at 4 column shifts (phase c % 2, c / 2 columns on), loaded once; the winning
// column of each row, then the winning row, are picked by select, so each tap costs two
// selects and one FMA instead of four loads, three selects and one FMA. The taps' sums stay
// in registers over the whole image; the sums are the generic pass's, term for term.
template <class Arch>
void pool_grad_channel_3x3(float* sums, const float* scratch, const PoolGradChannel& channel, bool with_bias,
                           const DirectConvShape& s, const DirectConvInputLayout& l) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const std::int64_t out_h = s.out_h(), out_w = s.out_w();
  const float* phase_plane[2] = {scratch + l.plane_offset(0, 0), scratch + l.plane_offset(0, 1)};
  alignas(64) float lane_index[width];
  for (std::int64_t i = 0; i < width; ++i) lane_index[i] = static_cast<float>(i);
  const Batch lane = Batch::load_aligned(lane_index);
  Batch acc[9];
#pragma GCC unroll 9
  for (int k = 0; k < 9; ++k) acc[k] = Batch::load_unaligned(sums + k * width);
  Batch bias_acc = Batch::load_unaligned(sums + 9 * width);
  for (std::int64_t y = 0; y < out_h; ++y) {
    for (std::int64_t j0 = 0; j0 < out_w; j0 += width) {
      const std::int64_t at = y * out_w + j0, count = std::min(width, out_w - j0);
      const Batch g = pool_grad_load_gradient<Arch>(channel.output_grad + at, count, channel.room - at, lane);
      const Batch winner = Batch::load_unaligned(channel.winners + at);
      const auto right = (winner == Batch(1.0f)) | (winner == Batch(3.0f));
      const auto lower = winner >= Batch(2.0f);
      // picked[kx]: input row 2y + i at the winning column + kx, for the row i before and this one.
      Batch above[3], picked[3];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        Batch shifted[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) shifted[c] = Batch::load_unaligned(phase_plane[c % 2] + (2 * y + i) * l.row_length + j0 + c / 2);
#pragma GCC unroll 3
        for (int kx = 0; kx < 3; ++kx) picked[kx] = xsimd::select(right, shifted[kx + 1], shifted[kx]);
        if (i > 0) {
#pragma GCC unroll 3
          for (int kx = 0; kx < 3; ++kx) {
            acc[(i - 1) * 3 + kx] = xsimd::fma(g, xsimd::select(lower, picked[kx], above[kx]), acc[(i - 1) * 3 + kx]);
          }
        }
#pragma GCC unroll 3
        for (int kx = 0; kx < 3; ++kx) above[kx] = picked[kx];
      }
      if (with_bias) bias_acc += g;
    }
  }
#pragma GCC unroll 9
  for (int k = 0; k < 9; ++k) acc[k].store_unaligned(sums + k * width);
  if (with_bias) bias_acc.store_unaligned(sums + 9 * width);
}

// Scratch: the forward's layout of one image's input (tap offsets, padded split planes),
// then per output channel (taps + 1) vectors of per-lane sums, then one image's winners as
// floats (and a vector more: lanes past a row's end are loaded, then ignored).
template <class Arch>
void direct_conv2d_pool_weight_grad(float* weight_grad, float* bias_grad, const float* output_grad, const std::uint8_t* winners,
                                    const float* in, float* scratch, const DirectConvShape& s, bool accumulate) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const DirectConvInputLayout layout(s, direct_conv_widest_vector);
  auto* offsets = reinterpret_cast<std::int64_t*>(scratch);
  direct_conv_tap_offsets<Arch>(offsets, s, layout);
  const std::int64_t* const phase_offsets[2] = {offsets, offsets + layout.taps};
  const std::int64_t taps = layout.taps, plane = s.out_h() * s.out_w();
  const std::int64_t channel_sums = (taps + 1) * direct_conv_widest_vector;
  const std::int64_t image_in = s.in_channels * s.height * s.width, image_out = s.out_channels * plane;
  float* sums = scratch + layout.floats();
  float* winner_floats = sums + s.out_channels * channel_sums;
  std::fill(sums, sums + s.out_channels * channel_sums, 0.0f);
  std::fill(winner_floats + image_out, winner_floats + image_out + direct_conv_widest_vector, 0.0f);
  direct_conv_zero_input<Arch>(scratch, layout);
  const std::int64_t all_out = s.batch * image_out;
  for (std::int64_t n = 0; n < s.batch; ++n) {
    direct_conv_fill_input<Arch>(scratch, in + n * image_in, s, layout);
    const std::uint8_t* image_winners = winners + n * image_out;
    for (std::int64_t i = 0; i < image_out; ++i) winner_floats[i] = static_cast<float>(image_winners[i]);
    for (std::int64_t o = 0; o < s.out_channels; ++o) {
      const std::int64_t at = n * image_out + o * plane;
      const PoolGradChannel channel{output_grad + at, winner_floats + o * plane, all_out - at};
      float* channel_sum = sums + o * channel_sums;
      if (s.in_channels == 1 && s.kernel_h == 3 && s.kernel_w == 3) {
        pool_grad_channel_3x3<Arch>(channel_sum, scratch, channel, bias_grad != nullptr, s, layout);
        continue;
      }
      if (taps == pool_grad_taps_per_pass) {
        pool_grad_channel_pass<Arch, pool_grad_taps_per_pass>(channel_sum, scratch, channel, phase_offsets, 0, 0, bias_grad != nullptr,
                                                              s, layout);
        continue;
      }
      for (std::int64_t first = 0; first < taps; first += pool_grad_taps_per_pass) {
        const int pass = static_cast<int>(std::min<std::int64_t>(pool_grad_taps_per_pass, taps - first));
        pool_grad_channel_pass<Arch, 0>(channel_sum, scratch, channel, phase_offsets, first, pass, bias_grad != nullptr && first == 0,
                                        s, layout);
      }
    }
  }
  // Each lane's sum, then the lanes in order.
  auto total = [&](const float* lanes) {
    float sum = 0.0f;
    for (std::int64_t i = 0; i < width; ++i) sum += lanes[i];
    return sum;
  };
  for (std::int64_t o = 0; o < s.out_channels; ++o) {
    const float* channel = sums + o * channel_sums;
    for (std::int64_t t = 0; t < taps; ++t) {
      const float sum = total(channel + t * width);
      float& target = weight_grad[o * taps + t];
      target = accumulate ? target + sum : sum;
    }
    if (bias_grad != nullptr) bias_grad[o] = accumulate ? bias_grad[o] + total(channel + taps * width) : total(channel + taps * width);
  }
}

template <class Arch>
ConvPoolGradKernels make_conv_pool_grad_kernels() {
  return ConvPoolGradKernels{&direct_conv2d_pool_weight_grad<Arch>};
}

}  // namespace ember::simd
