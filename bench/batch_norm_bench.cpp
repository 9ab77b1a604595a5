// Batch normalization kernels (simd/batch_norm.h, the instruction set chosen at start-up)
// against the plain scalar loops a first implementation would write (per channel, per
// sample, per position, through the channel-blocked index), one thread, at ResNet-like
// shapes in every layout the layer meets:
//   nchw      (8, 64, 56x56), b = 1       a plain input
//   nchw16c   (8, 64, 56x56), b = 16      after a oneDNN convolution (AVX-512)
//   nchw8c    (8, 64, 56x56), b = 8       after a oneDNN convolution (AVX2)
//   nhwc      (8, 64, 56x56), b = C
//   nc        (256, 512),     b = C       batch_norm1d after a linear layer
// Counters: bytes/s of the tensors read and written, and elements/s, per CPU second.
//   ember_bench --benchmark_filter=^batch_norm/
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/aligned_buffer.h"
#include "simd/batch_norm.h"

namespace ember {
namespace {

using simd::ChannelBlocked;

struct NamedShape {
  const char* name;
  ChannelBlocked shape;
};
const NamedShape shapes[] = {{"nchw", {8, 64, 56 * 56, 1}},
                             {"nchw16c", {8, 64, 56 * 56, 16}},
                             {"nchw8c", {8, 64, 56 * 56, 8}},
                             {"nhwc", {8, 64, 56 * 56, 64}},
                             {"nc", {256, 512, 1, 512}}};

std::int64_t at(const ChannelBlocked& s, std::int64_t n, std::int64_t c, std::int64_t i) {
  return ((n * s.blocks() + c / s.block) * s.spatial + i) * s.block + c % s.block;
}

// The naive loops: two passes for the statistics, one for each other kernel.
void scalar_statistics(float* mean, float* m2, const float* x, ChannelBlocked s) {
  const auto count = static_cast<float>(s.count());
  for (std::int64_t c = 0; c < s.channels; ++c) {
    float sum = 0.0f;
    for (std::int64_t n = 0; n < s.samples; ++n)
      for (std::int64_t i = 0; i < s.spatial; ++i) sum += x[at(s, n, c, i)];
    const float m = sum / count;
    float squares = 0.0f;
    for (std::int64_t n = 0; n < s.samples; ++n)
      for (std::int64_t i = 0; i < s.spatial; ++i) {
        const float d = x[at(s, n, c, i)] - m;
        squares += d * d;
      }
    mean[c] = m;
    m2[c] = squares;
  }
}

void scalar_affine(float* out, const float* x, const float* scale, const float* shift, ChannelBlocked s) {
  for (std::int64_t n = 0; n < s.samples; ++n)
    for (std::int64_t c = 0; c < s.channels; ++c)
      for (std::int64_t i = 0; i < s.spatial; ++i) out[at(s, n, c, i)] = x[at(s, n, c, i)] * scale[c] + shift[c];
}

void scalar_backward_sums(float* sum_dy, float* sum_dy_centered, const float* dy, const float* x, const float* mean,
                          ChannelBlocked s) {
  for (std::int64_t c = 0; c < s.channels; ++c) {
    float a = 0.0f, b = 0.0f;
    for (std::int64_t n = 0; n < s.samples; ++n)
      for (std::int64_t i = 0; i < s.spatial; ++i) {
        const std::int64_t k = at(s, n, c, i);
        a += dy[k];
        b += dy[k] * (x[k] - mean[c]);
      }
    sum_dy[c] = a;
    sum_dy_centered[c] = b;
  }
}

void scalar_backward_apply(float* dx, const float* dy, const float* x, const float* k, const float* p, const float* q,
                           ChannelBlocked s) {
  for (std::int64_t n = 0; n < s.samples; ++n)
    for (std::int64_t c = 0; c < s.channels; ++c)
      for (std::int64_t i = 0; i < s.spatial; ++i) {
        const std::int64_t e = at(s, n, c, i);
        dx[e] = k[c] * dy[e] + p[c] * x[e] + q[c];
      }
}

// 64-byte aligned, as the executor's arenas place every tensor.
struct AlignedFloats {
  explicit AlignedFloats(std::size_t n) : buffer(n * sizeof(float)), size(n) {}
  float* data() { return buffer.floats(); }
  float* begin() { return buffer.floats(); }
  float* end() { return buffer.floats() + size; }
  AlignedBuffer buffer;
  std::size_t size;
};

struct Operands {
  AlignedFloats x, dy, out, a, b, c;
  explicit Operands(const ChannelBlocked& s)
      : x(static_cast<std::size_t>(s.padded_elements())), dy(x.size), out(x.size), a(static_cast<std::size_t>(s.channels)),
        b(a.size), c(a.size) {
    std::mt19937 random(1);
    std::normal_distribution<float> value(0.5f, 2.0f);
    for (AlignedFloats* v : {&x, &dy, &a, &b, &c}) {
      for (float& e : *v) e = value(random);
    }
  }
};

void set_rates(benchmark::State& state, const ChannelBlocked& s, double bytes_per_element) {
  const double elements = static_cast<double>(s.padded_elements());
  state.counters["bytes/s"] = benchmark::Counter(bytes_per_element * elements, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1024);
  state.counters["elements/s"] = benchmark::Counter(elements, benchmark::Counter::kIsIterationInvariantRate);
}

enum class Kernel { statistics, affine, backward_sums, backward_apply };

void run(benchmark::State& state, ChannelBlocked s, Kernel kernel, bool ember) {
  Operands o(s);
  const simd::BatchNormKernels& k = simd::batch_norm_kernels();
  for (auto _ : state) {
    switch (kernel) {
      case Kernel::statistics:
        (ember ? k.statistics : scalar_statistics)(o.a.data(), o.b.data(), o.x.data(), s);
        break;
      case Kernel::affine:
        (ember ? k.affine : scalar_affine)(o.out.data(), o.x.data(), o.a.data(), o.b.data(), s);
        break;
      case Kernel::backward_sums:
        (ember ? k.backward_sums : scalar_backward_sums)(o.b.data(), o.c.data(), o.dy.data(), o.x.data(), o.a.data(), s);
        break;
      case Kernel::backward_apply:
        (ember ? k.backward_apply : scalar_backward_apply)(o.out.data(), o.dy.data(), o.x.data(), o.a.data(), o.b.data(), o.c.data(), s);
        break;
    }
    benchmark::ClobberMemory();
  }
  // Bytes per element: statistics reads x twice; affine reads x and writes y; the
  // backward sums read dy and x; backward apply reads dy and x and writes dx.
  const double bytes[] = {8.0, 8.0, 8.0, 12.0};
  set_rates(state, s, bytes[static_cast<int>(kernel)]);
}

bool register_batch_norm_benchmarks() {
  const std::pair<Kernel, const char*> kernels[] = {{Kernel::statistics, "statistics"},
                                                    {Kernel::affine, "affine"},
                                                    {Kernel::backward_sums, "backward_sums"},
                                                    {Kernel::backward_apply, "backward_apply"}};
  for (const NamedShape& shape : shapes) {
    for (const auto& [kernel, kernel_name] : kernels) {
      const std::string prefix = std::string("batch_norm/") + kernel_name + "/" + shape.name + "/";
      benchmark::RegisterBenchmark((prefix + "ember").c_str(), run, shape.shape, kernel, true);
      benchmark::RegisterBenchmark((prefix + "scalar").c_str(), run, shape.shape, kernel, false);
    }
  }
  return true;
}

const bool registered = register_batch_norm_benchmarks();

}  // namespace
}  // namespace ember
