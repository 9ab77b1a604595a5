// The whole MultiHeadAttention layer (QKV projection, fused attention, output projection)
// at the d=256, 8-head block with batch 8, forward (inference) and forward+backward
// (training): time, GFLOP/s and the bytes the layer needs beyond its input and output
// (saved activations, scratch). One call runs the whole batch on the calling threads.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/aligned_buffer.h"
#include "layers/multi_head_attention.h"

namespace ember {
namespace {

void multi_head_attention(benchmark::State& state, Mode mode) {
  const std::int64_t batch = 8, tokens = state.range(0), d = 256, heads = 8;
  MultiHeadAttentionOptions o;
  o.d_model = d;
  o.heads = heads;
  const MultiHeadAttention layer(o);
  const Shape shape{batch, tokens, d};
  const std::vector<Shape> shapes{shape};
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  const ValueInfo input{shape, nullptr};
  const char needs_grad = 1;
  PrepareContext context;
  context.mode = mode;
  context.inputs = std::span<const ValueInfo>(&input, 1);
  context.input_needs_grad = std::span<const char>(&needs_grad, 1);
  context.engine = &engine;
  const auto prepared = layer.prepare(context);

  std::mt19937 random(1);
  std::normal_distribution<float> value(0.0f, 1.0f);
  const auto floats = static_cast<std::size_t>(shape.elements());
  std::vector<float> x(floats), y(floats), dy(floats), dx(floats);
  for (float* v : {x.data(), dy.data()}) {
    for (std::size_t i = 0; i < floats; ++i) v[i] = value(random);
  }
  std::vector<std::vector<float>> params, grads;
  std::vector<Tensor> param_views, grad_views;
  for (const ParameterSpec& spec : layer.parameters(shapes)) {
    params.emplace_back(static_cast<std::size_t>(spec.shape.elements()));
    for (float& p : params.back()) p = 0.05f * value(random);
    grads.emplace_back(params.back().size());
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    param_views.push_back(Tensor{params[i].data(), layer.parameters(shapes)[i].shape, nullptr});
    grad_views.push_back(Tensor{grads[i].data(), layer.parameters(shapes)[i].shape, nullptr});
  }
  AlignedBuffer saved(prepared->saved_bytes), forward_scratch(prepared->forward_scratch_bytes),
      backward_scratch(prepared->backward_scratch_bytes);
  const Tensor x_view{x.data(), shape, nullptr};
  ForwardArgs forward;
  forward.inputs = std::span<const Tensor>(&x_view, 1);
  forward.output = Tensor{y.data(), shape, nullptr};
  forward.params = param_views;
  forward.saved = saved.data();
  forward.scratch = forward_scratch.data();
  forward.mode = mode;
  const Tensor dx_view{dx.data(), shape, nullptr};
  BackwardArgs backward;
  backward.inputs = forward.inputs;
  backward.output = forward.output;
  backward.output_grad = Tensor{dy.data(), shape, nullptr};
  backward.input_grads = std::span<const Tensor>(&dx_view, 1);
  backward.params = param_views;
  backward.param_grads = grad_views;
  backward.saved = saved.data();
  backward.scratch = backward_scratch.data();

  for (auto _ : state) {
    prepared->forward(forward);
    if (mode == Mode::training) prepared->backward(backward);
    benchmark::ClobberMemory();
  }
  // Projections: 4 d^2 multiply-adds per token forward, twice that backward; attention core
  // 4 T^2 d forward and 10 T^2 d backward.
  const double rows = static_cast<double>(batch * tokens);
  const double projections = 2.0 * 4.0 * static_cast<double>(d * d) * rows;
  const double core = 4.0 * static_cast<double>(batch * tokens * tokens * d);
  const double flops = mode == Mode::training ? 3.0 * projections + 3.5 * core : projections + core;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["extra_bytes"] = static_cast<double>(prepared->saved_bytes + prepared->forward_scratch_bytes +
                                                      (mode == Mode::training ? prepared->backward_scratch_bytes : 0));
}

void multi_head_attention_forward(benchmark::State& state) { multi_head_attention(state, Mode::inference); }
void multi_head_attention_forward_backward(benchmark::State& state) { multi_head_attention(state, Mode::training); }

BENCHMARK(multi_head_attention_forward)->ArgName("T")->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(multi_head_attention_forward_backward)->ArgName("T")->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace ember
