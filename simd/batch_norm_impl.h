#pragma once
// Generic bodies of the batch normalization kernels (simd/batch_norm.h), compiled once per
// instruction set. Every function is a template on Arch (see simd/arch.h) with a name
// specific to this family.
//
// How a block of b channels is vectorized, with W floats to a vector:
//   - W % b == 0 (b = 1: NCHW; b = 8 or 16 with W = 16): "folded". One sample's block is
//     S * b contiguous floats in which element i is channel i % b, and so lane i % W of a
//     vector: W-wide loads straight through, the W lanes folded into b channels at the end.
//   - otherwise (b = 16 with W = 8, NHWC's b = C): "rows". Each lane group g, g + W <= b,
//     is one vector per spatial position (stride b); lanes left over go one at a time.
// Sums run block by block, each lane group over every sample before the next, so the
// statistics need no array beyond the outputs; within a sample the vector accumulators
// sum S elements, and the samples' subtotals are added after (two-level summation).
#include <algorithm>
#include <cstdint>

#include "simd/arch.h"
#include "simd/batch_norm.h"

namespace ember::simd {

enum class BatchNormSum { values, centered, grads };
enum class BatchNormMap { affine, apply };

// values: s0 += x.  centered: s0 += x - m, s1 += (x - m)^2.  grads: s0 += dy, s1 += dy (x - m).
template <class Arch, BatchNormSum Kind, class T>
void batch_norm_accumulate(T& s0, T& s1, T x, T dy, T m) {
  if constexpr (Kind == BatchNormSum::values) {
    s0 += x;
  } else if constexpr (Kind == BatchNormSum::centered) {
    const T d = x - m;
    s0 += d;
    s1 += d * d;
  } else {
    s0 += dy;
    s1 += dy * (x - m);
  }
}

// affine: x * p0 + p1.  apply: p0 * dy + p1 * x + p2.
template <class Arch, BatchNormMap Kind, class T>
T batch_norm_map_value(T x, T dy, T p0, T p1, T p2) {
  if constexpr (Kind == BatchNormMap::affine) {
    return x * p0 + p1;
  } else {
    return p0 * dy + p1 * x + p2;
  }
}

// Per-channel values spread over the W lanes of a vector: lane j is channel
// first + j % period; channels >= C (padding) get 0. Returns whether any lane is padding.
template <class Arch>
bool batch_norm_spread(float* lanes, const float* per_channel, std::int64_t first, std::int64_t period, std::int64_t channels) {
  constexpr std::int64_t width = static_cast<std::int64_t>(xsimd::batch<float, Arch>::size);
  bool padding = false;
  // l = j % period, counted rather than divided.
  for (std::int64_t j = 0, l = 0; j < width; ++j, l = l + 1 == period ? 0 : l + 1) {
    const std::int64_t c = first + l;
    padding = padding || c >= channels;
    lanes[j] = c < channels && per_channel != nullptr ? per_channel[c] : 0.0f;
  }
  return padding;
}

// Calls vector_unit(first_channel, period, offset, stride, vectors, tail_begin) for every
// lane group of block `block_index` (see the top of this file) and scalar_lane(lane) for
// lanes below lanes_end that no vector covers. A unit's vectors sit at
// slab_start + offset + k * stride, k < vectors; a folded unit's elements from tail_begin
// to the end of the slab are left for scalar code (element i is lane i % W).
template <class Arch, class VectorUnit, class ScalarLane>
void batch_norm_for_each_unit(const ChannelBlocked& shape, std::int64_t block_index, std::int64_t lanes_end, VectorUnit vector_unit,
                              ScalarLane scalar_lane) {
  constexpr std::int64_t width = static_cast<std::int64_t>(xsimd::batch<float, Arch>::size);
  const std::int64_t b = shape.block, slab = shape.spatial * b;
  if (width % b == 0) {
    const std::int64_t vectors = slab / width;
    vector_unit(block_index * b, b, std::int64_t{0}, width, vectors, vectors * width);
    return;
  }
  std::int64_t g = 0;
  for (; g + width <= b && g < lanes_end; g += width) vector_unit(block_index * b + g, width, g, b, shape.spatial, slab);
  for (; g < lanes_end; ++g) scalar_lane(g);
}

// Per-lane sums of one unit over every sample, into lane0 and lane1 (W floats each);
// m_lanes (W floats) is the per-lane m of BatchNormSum::centered and ::grads.
template <class Arch, BatchNormSum Kind>
void batch_norm_unit_sums(float* lane0, float* lane1, const float* x, const float* dy, const float* m_lanes, const ChannelBlocked& shape,
                          std::int64_t block_index, std::int64_t offset, std::int64_t stride, std::int64_t vectors,
                          std::int64_t tail_begin) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  const std::int64_t slab = shape.spatial * shape.block;
  const Batch m = Batch::load_unaligned(m_lanes);
  Batch total0(0.0f), total1(0.0f);
  for (std::int64_t n = 0; n < shape.samples; ++n) {
    const std::int64_t start = (n * shape.blocks() + block_index) * slab + offset;
    const float* xs = x + start;
    const float* ds = Kind == BatchNormSum::grads ? dy + start : xs;
    Batch a0(0.0f), a1(0.0f), q0(0.0f), q1(0.0f);
    std::int64_t k = 0;
    for (; k + 2 <= vectors; k += 2) {
      batch_norm_accumulate<Arch, Kind>(a0, q0, Batch::load_unaligned(xs + k * stride), Batch::load_unaligned(ds + k * stride), m);
      batch_norm_accumulate<Arch, Kind>(a1, q1, Batch::load_unaligned(xs + (k + 1) * stride),
                                        Batch::load_unaligned(ds + (k + 1) * stride), m);
    }
    if (k < vectors) {
      batch_norm_accumulate<Arch, Kind>(a0, q0, Batch::load_unaligned(xs + k * stride), Batch::load_unaligned(ds + k * stride), m);
    }
    total0 += a0 + a1;
    total1 += q0 + q1;
  }
  total0.store_unaligned(lane0);
  total1.store_unaligned(lane1);
  if (tail_begin >= slab) return;
  for (std::int64_t n = 0; n < shape.samples; ++n) {
    const std::int64_t start = (n * shape.blocks() + block_index) * slab;
    for (std::int64_t i = tail_begin; i < slab; ++i) {
      const std::int64_t j = i % width;
      const float d = Kind == BatchNormSum::grads ? dy[start + i] : 0.0f;
      batch_norm_accumulate<Arch, Kind>(lane0[j], lane1[j], x[start + i], d, m_lanes[j]);
    }
  }
}

// The lanes of a unit added up per channel: folded[l] = sum of lanes[j] over j % period == l.
template <class Arch>
void batch_norm_fold(float* folded, const float* lanes, std::int64_t period) {
  constexpr std::int64_t width = static_cast<std::int64_t>(xsimd::batch<float, Arch>::size);
  std::fill(folded, folded + period, 0.0f);
  for (std::int64_t j = 0, l = 0; j < width; ++j, l = l + 1 == period ? 0 : l + 1) folded[l] += lanes[j];
}

// Sums of one lane (channel) handled without vectors, per sample subtotals.
template <class Arch, BatchNormSum Kind>
void batch_norm_lane_sums(float& sum0, float& sum1, const float* x, const float* dy, float m, const ChannelBlocked& shape,
                          std::int64_t block_index, std::int64_t lane) {
  const std::int64_t slab = shape.spatial * shape.block;
  sum0 = 0.0f;
  sum1 = 0.0f;
  for (std::int64_t n = 0; n < shape.samples; ++n) {
    const std::int64_t start = (n * shape.blocks() + block_index) * slab + lane;
    float s0 = 0.0f, s1 = 0.0f;
    for (std::int64_t s = 0; s < shape.spatial; ++s) {
      const std::int64_t i = start + s * shape.block;
      batch_norm_accumulate<Arch, Kind>(s0, s1, x[i], Kind == BatchNormSum::grads ? dy[i] : 0.0f, m);
    }
    sum0 += s0;
    sum1 += s1;
  }
}

template <class Arch>
void batch_norm_statistics(float* mean, float* m2, const float* in, ChannelBlocked shape) {
  constexpr std::int64_t width = static_cast<std::int64_t>(xsimd::batch<float, Arch>::size);
  const auto count = static_cast<float>(shape.count());
  const std::int64_t b = shape.block, channels = shape.channels;
  // Variance about a first estimate of the mean; the residual mean of (x - first) is the
  // correction for its rounding (Var = E[(x - first)^2] - (E[x] - first)^2).
  auto finish = [&](std::int64_t c, float first, float residual, float squares) {
    const float correction = residual / count;
    mean[c] = first + correction;
    m2[c] = std::max(squares - residual * correction, 0.0f);
  };
  for (std::int64_t block_index = 0; block_index < shape.blocks(); ++block_index) {
    const std::int64_t valid = std::min(b, channels - block_index * b);
    auto vector_unit = [&](std::int64_t first, std::int64_t period, std::int64_t offset, std::int64_t stride, std::int64_t vectors,
                           std::int64_t tail_begin) {
      alignas(64) float m_lanes[width] = {}, lane0[width], lane1[width], first_mean[width], residual[width], squares[width];
      batch_norm_unit_sums<Arch, BatchNormSum::values>(lane0, lane1, in, nullptr, m_lanes, shape, block_index, offset, stride, vectors,
                                                       tail_begin);
      batch_norm_fold<Arch>(first_mean, lane0, period);
      for (std::int64_t l = 0; l < period; ++l) first_mean[l] /= count;
      for (std::int64_t j = 0, l = 0; j < width; ++j, l = l + 1 == period ? 0 : l + 1) m_lanes[j] = first_mean[l];
      batch_norm_unit_sums<Arch, BatchNormSum::centered>(lane0, lane1, in, nullptr, m_lanes, shape, block_index, offset, stride,
                                                         vectors, tail_begin);
      batch_norm_fold<Arch>(residual, lane0, period);
      batch_norm_fold<Arch>(squares, lane1, period);
      for (std::int64_t l = 0; l < period && first + l < channels; ++l) finish(first + l, first_mean[l], residual[l], squares[l]);
    };
    auto scalar_lane = [&](std::int64_t lane) {
      float sum = 0.0f, unused = 0.0f, residual = 0.0f, squares = 0.0f;
      batch_norm_lane_sums<Arch, BatchNormSum::values>(sum, unused, in, nullptr, 0.0f, shape, block_index, lane);
      const float first = sum / count;
      batch_norm_lane_sums<Arch, BatchNormSum::centered>(residual, squares, in, nullptr, first, shape, block_index, lane);
      finish(block_index * b + lane, first, residual, squares);
    };
    batch_norm_for_each_unit<Arch>(shape, block_index, valid, vector_unit, scalar_lane);
  }
}

template <class Arch>
void batch_norm_backward_sums(float* sum_dy, float* sum_dy_centered, const float* out_grad, const float* in, const float* mean,
                              ChannelBlocked shape) {
  constexpr std::int64_t width = static_cast<std::int64_t>(xsimd::batch<float, Arch>::size);
  const std::int64_t b = shape.block, channels = shape.channels;
  for (std::int64_t block_index = 0; block_index < shape.blocks(); ++block_index) {
    const std::int64_t valid = std::min(b, channels - block_index * b);
    auto vector_unit = [&](std::int64_t first, std::int64_t period, std::int64_t offset, std::int64_t stride, std::int64_t vectors,
                           std::int64_t tail_begin) {
      alignas(64) float m_lanes[width], lane0[width], lane1[width], folded0[width], folded1[width];
      batch_norm_spread<Arch>(m_lanes, mean, first, period, channels);
      batch_norm_unit_sums<Arch, BatchNormSum::grads>(lane0, lane1, in, out_grad, m_lanes, shape, block_index, offset, stride, vectors,
                                                      tail_begin);
      batch_norm_fold<Arch>(folded0, lane0, period);
      batch_norm_fold<Arch>(folded1, lane1, period);
      for (std::int64_t l = 0; l < period && first + l < channels; ++l) {
        sum_dy[first + l] = folded0[l];
        sum_dy_centered[first + l] = folded1[l];
      }
    };
    auto scalar_lane = [&](std::int64_t lane) {
      const std::int64_t c = block_index * b + lane;
      batch_norm_lane_sums<Arch, BatchNormSum::grads>(sum_dy[c], sum_dy_centered[c], in, out_grad, mean[c], shape, block_index, lane);
    };
    batch_norm_for_each_unit<Arch>(shape, block_index, valid, vector_unit, scalar_lane);
  }
}

// out = map(x, dy; p0[c], p1[c], p2[c]) over every element, padding lanes 0. dy and p2
// are read only by BatchNormMap::apply.
// The vectors of one sample's unit: out = map(x, dy) at first + k * stride, k < vectors;
// Padding: lanes outside `keep` may hold anything (NaN), so select, not multiply, writes
// their 0. Four vectors are loaded before any is stored: out may be x or dy itself.
template <class Arch, BatchNormMap Kind, bool Padding>
void batch_norm_map_vectors(float* out, const float* x, const float* dy, std::int64_t first, std::int64_t stride, std::int64_t vectors,
                            xsimd::batch<float, Arch> v0, xsimd::batch<float, Arch> v1, xsimd::batch<float, Arch> v2,
                            xsimd::batch_bool<float, Arch> keep) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr bool reads_dy = Kind == BatchNormMap::apply;
  auto value = [&](std::int64_t i) {
    const Batch xv = Batch::load_unaligned(x + i);
    Batch y = batch_norm_map_value<Arch, Kind>(xv, reads_dy ? Batch::load_unaligned(dy + i) : xv, v0, v1, v2);
    if constexpr (Padding) y = xsimd::select(keep, y, Batch(0.0f));
    return y;
  };
  std::int64_t k = 0;
  for (; k + 4 <= vectors; k += 4) {
    const std::int64_t i = first + k * stride;
    const Batch y0 = value(i), y1 = value(i + stride), y2 = value(i + 2 * stride), y3 = value(i + 3 * stride);
    y0.store_unaligned(out + i);
    y1.store_unaligned(out + i + stride);
    y2.store_unaligned(out + i + 2 * stride);
    y3.store_unaligned(out + i + 3 * stride);
  }
  for (; k < vectors; ++k) value(first + k * stride).store_unaligned(out + first + k * stride);
}

template <class Arch, BatchNormMap Kind>
void batch_norm_map(float* out, const float* x, const float* dy, const float* p0, const float* p1, const float* p2,
                    const ChannelBlocked& shape) {
  using Batch = xsimd::batch<float, Arch>;
  constexpr std::int64_t width = static_cast<std::int64_t>(Batch::size);
  constexpr bool reads_dy = Kind == BatchNormMap::apply;
  const std::int64_t b = shape.block, channels = shape.channels, slab = shape.spatial * b;
  // Samples [first_sample, last_sample) of every block.
  auto run = [&](std::int64_t first_sample, std::int64_t last_sample) {
    for (std::int64_t block_index = 0; block_index < shape.blocks(); ++block_index) {
      auto vector_unit = [&](std::int64_t first, std::int64_t period, std::int64_t offset, std::int64_t stride, std::int64_t vectors,
                             std::int64_t tail_begin) {
        alignas(64) float l0[width], l1[width], l2[width], valid[width];
        const bool padding = batch_norm_spread<Arch>(l0, p0, first, period, channels);
        batch_norm_spread<Arch>(l1, p1, first, period, channels);
        batch_norm_spread<Arch>(l2, reads_dy ? p2 : nullptr, first, period, channels);
        for (std::int64_t j = 0, l = 0; j < width; ++j, l = l + 1 == period ? 0 : l + 1) valid[j] = first + l < channels ? 1.0f : 0.0f;
        const Batch v0 = Batch::load_unaligned(l0), v1 = Batch::load_unaligned(l1), v2 = Batch::load_unaligned(l2);
        const auto keep = Batch::load_unaligned(valid) != Batch(0.0f);
        for (std::int64_t n = first_sample; n < last_sample; ++n) {
          const std::int64_t start = (n * shape.blocks() + block_index) * slab;
          if (padding) {
            batch_norm_map_vectors<Arch, Kind, true>(out, x, dy, start + offset, stride, vectors, v0, v1, v2, keep);
          } else {
            batch_norm_map_vectors<Arch, Kind, false>(out, x, dy, start + offset, stride, vectors, v0, v1, v2, keep);
          }
          for (std::int64_t i = start + tail_begin; i < start + slab; ++i) {
            const std::int64_t j = (i - start) % width;
            out[i] = valid[j] != 0.0f ? batch_norm_map_value<Arch, Kind>(x[i], reads_dy ? dy[i] : 0.0f, l0[j], l1[j], l2[j]) : 0.0f;
          }
        }
      };
      auto scalar_lane = [&](std::int64_t lane) {
        const std::int64_t c = block_index * b + lane;
        for (std::int64_t n = first_sample; n < last_sample; ++n) {
          const std::int64_t start = (n * shape.blocks() + block_index) * slab + lane;
          for (std::int64_t s = 0; s < shape.spatial; ++s) {
            const std::int64_t i = start + s * b;
            out[i] = c < channels ? batch_norm_map_value<Arch, Kind>(x[i], reads_dy ? dy[i] : 0.0f, p0[c], p1[c], reads_dy ? p2[c] : 0.0f)
                                  : 0.0f;
          }
        }
      };
      batch_norm_for_each_unit<Arch>(shape, block_index, b, vector_unit, scalar_lane);
    }
  };
  // Large slabs sample by sample, so memory is streamed in order (bench/batch_norm_bench,
  // NCHW 56x56: 1.2x to 1.7x faster than block by block, on a busy machine); small ones
  // block by block, where the per-unit set-up would otherwise cost as much as the data.
  if (slab >= 64 * width) {
    for (std::int64_t n = 0; n < shape.samples; ++n) run(n, n + 1);
  } else {
    run(0, shape.samples);
  }
}

template <class Arch>
void batch_norm_affine(float* out, const float* in, const float* scale, const float* shift, ChannelBlocked shape) {
  batch_norm_map<Arch, BatchNormMap::affine>(out, in, nullptr, scale, shift, nullptr, shape);
}

template <class Arch>
void batch_norm_backward_apply(float* in_grad, const float* out_grad, const float* in, const float* k, const float* p, const float* q,
                               ChannelBlocked shape) {
  batch_norm_map<Arch, BatchNormMap::apply>(in_grad, in, out_grad, k, p, q, shape);
}

template <class Arch>
BatchNormKernels make_batch_norm_kernels() {
  return BatchNormKernels{&batch_norm_statistics<Arch>, &batch_norm_affine<Arch>, &batch_norm_backward_sums<Arch>,
                          &batch_norm_backward_apply<Arch>};
}

}  // namespace ember::simd
