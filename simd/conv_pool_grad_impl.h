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
// `values`; where a whole vector is, it is loaded and the lanes past count are masked off.
template <class Arch>
xsimd::batch<float, Arch> pool_grad_load_gradient(const float* values, std::int64_t count, std::int64_t room) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  if (count == width) return Batch::load_unaligned(values);
  alignas(64) float lanes[width] = {};
  if (room >= width) {
    alignas(64) float index[width];
    for (std::int64_t i = 0; i < width; ++i) index[i] = static_cast<float>(i);
    return xsimd::select(Batch::load_aligned(index) < Batch(static_cast<float>(count)), Batch::load_unaligned(values), Batch(0.0f));
  }
  std::copy(values, values + count, lanes);
  return Batch::load_aligned(lanes);
}

// One image's sums, for output channel o and taps [first, first + pool_grad_taps_per_pass):
// `sums` holds, per tap and then for the bias, one vector of per-lane sums, added to here.
template <class Arch>
void pool_grad_channel_pass(float* sums, const float* scratch, const float* output_grad, const std::uint8_t* winners,
                            const std::int64_t* const (&offsets)[2], std::int64_t first, bool with_bias, const DirectConvShape& s,
                            const DirectConvInputLayout& l) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  constexpr int pass = pool_grad_taps_per_pass;
  const std::int64_t out_h = s.out_h(), out_w = s.out_w(), plane = out_h * out_w;
  const int taps = static_cast<int>(std::min<std::int64_t>(pass, l.taps - first));
  Batch acc[pass];
#pragma GCC unroll 9
  for (int k = 0; k < pass; ++k) acc[k] = k < taps ? Batch::load_unaligned(sums + (first + k) * width) : Batch(0.0f);
  Batch bias_acc = Batch::load_unaligned(sums + l.taps * width);
  for (std::int64_t y = 0; y < out_h; ++y) {
    for (std::int64_t j0 = 0; j0 < out_w; j0 += width) {
      const std::int64_t at = y * out_w + j0, count = std::min(width, out_w - j0);
      const Batch g = pool_grad_load_gradient<Arch>(output_grad + at, count, plane - at);
      alignas(64) float won[width];
      for (std::int64_t i = 0; i < width; ++i) won[i] = static_cast<float>(winners[at + i]);  // the tail bytes are readable
      const Batch winner = Batch::load_aligned(won);
      const auto right = (winner == Batch(1.0f)) | (winner == Batch(3.0f));  // positions 1 and 3: the odd conv column
      const auto lower = winner >= Batch(2.0f);                              // positions 2 and 3: the lower conv row
      const float* row0 = scratch + 2 * y * l.row_length + j0;
      const float* row1 = row0 + l.row_length;
#pragma GCC unroll 9
      for (int k = 0; k < pass; ++k) {
        if (k >= taps) break;
        const std::int64_t t = first + k;
        const Batch upper_pick = xsimd::select(right, Batch::load_unaligned(row0 + offsets[1][t]), Batch::load_unaligned(row0 + offsets[0][t]));
        const Batch lower_pick = xsimd::select(right, Batch::load_unaligned(row1 + offsets[1][t]), Batch::load_unaligned(row1 + offsets[0][t]));
        acc[k] = xsimd::fma(g, xsimd::select(lower, lower_pick, upper_pick), acc[k]);
      }
      if (with_bias) bias_acc += g;
    }
  }
#pragma GCC unroll 9
  for (int k = 0; k < pass; ++k) {
    if (k < taps) acc[k].store_unaligned(sums + (first + k) * width);
  }
  if (with_bias) bias_acc.store_unaligned(sums + l.taps * width);
}

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
  const std::int64_t channel_sums = (taps + 1) * width;
  float* sums = scratch + layout.floats();  // per output channel: (taps + 1) vectors
  std::fill(sums, sums + s.out_channels * channel_sums, 0.0f);
  direct_conv_zero_input<Arch>(scratch, layout);
  const std::int64_t image_in = s.in_channels * s.height * s.width, image_out = s.out_channels * plane;
  for (std::int64_t n = 0; n < s.batch; ++n) {
    direct_conv_fill_input<Arch>(scratch, in + n * image_in, s, layout);
    for (std::int64_t o = 0; o < s.out_channels; ++o) {
      const std::int64_t at = n * image_out + o * plane;
      for (std::int64_t first = 0; first < taps; first += pool_grad_taps_per_pass) {
        pool_grad_channel_pass<Arch>(sums + o * channel_sums, scratch, output_grad + at, winners + at, phase_offsets, first,
                                     bias_grad != nullptr && first == 0, s, layout);
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
