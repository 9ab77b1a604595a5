// Conv2d and MaxPool2d through ember's layer wrappers (layers/conv2d.h, layers/pool2d.h:
// prepare once, then forward, or forward + backward, on the views the executor would
// hand them), at the built-in models' shapes and batch 1, 64 and 256, one thread.
//
// One thread, because that is how the executor runs them: oneDNN is called inside
// ember's parallel region, on the calling thread only, one micro-batch at a time (16 by
// default). Forward is the inference preparation (what serving runs); forward+backward
// the training one, without backward-data for a model's first layer (the input needs no
// gradient). The input arrives in the layout the layer sees in the model: plain for the
// image, else the layout oneDNN chose for the convolution that produced it.
//
// Counters: GFLOP/s (convolution: 2 N C_out H_out W_out C_in kH kW per pass: forward,
// backward-weights and, past the first layer, backward-data; pooling: one comparison per
// window element, forward only, so both passes count the same work) and bytes/s of the
// tensors read and written, per CPU second (one thread: less hurt by a busy machine than
// wall time).
//   ember_bench --benchmark_filter='^(conv2d|max_pool2d)/'
#include <benchmark/benchmark.h>
#include <omp.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/aligned_buffer.h"
#include "engine/shape.h"
#include "engine/tensor.h"
#include "layers/layer.h"
#include "layers/registry.h"

namespace ember {
namespace {

struct LayerCase {
  const char* name;  // <model>.<layer>
  const char* kind;  // conv2d | max_pool2d
  const char* options;
  std::int64_t channels, height, width;  // one input sample
};

// attn-cnn's conv1 and pool1 have seed-cnn's shapes and are not repeated.
const LayerCase cases[] = {
    {"seed-cnn.conv1", "conv2d", R"({"in_channels": 1, "out_channels": 32, "kernel": 3, "padding": 1})", 1, 28, 28},
    {"attn-cnn.conv2", "conv2d", R"({"in_channels": 32, "out_channels": 32, "kernel": 3, "padding": 1})", 32, 28, 28},
    {"attn-cnn.conv3", "conv2d", R"({"in_channels": 32, "out_channels": 64, "kernel": 3, "padding": 1})", 32, 14, 14},
    {"lenet.conv1", "conv2d", R"({"in_channels": 1, "out_channels": 6, "kernel": 5})", 1, 32, 32},
    {"lenet.conv2", "conv2d", R"({"in_channels": 6, "out_channels": 16, "kernel": 5})", 6, 14, 14},
    {"seed-cnn.pool1", "max_pool2d", R"({"kernel": 2})", 32, 28, 28},
    {"attn-cnn.pool2", "max_pool2d", R"({"kernel": 2})", 64, 14, 14},
    {"lenet.pool1", "max_pool2d", R"({"kernel": 2})", 6, 28, 28},
    {"lenet.pool2", "max_pool2d", R"({"kernel": 2})", 16, 10, 10},
};

// The layout a (N, C, H, W) activation has in a model: plain for the 1-channel image,
// else whatever oneDNN picked for the output of a convolution with C channels (nChw8c
// on AVX2); ReLU and pooling keep it.
ValueInfo model_input(const Shape& shape, Mode mode, const dnnl::engine& engine) {
  if (shape[1] == 1) return ValueInfo{shape, nullptr};
  const Json options{{"in_channels", 1}, {"out_channels", shape[1]}, {"kernel", 3}, {"padding", 1}};
  const std::unique_ptr<Layer> producer = make_layer("conv2d", options);
  const ValueInfo image{Shape{shape[0], 1, shape[2], shape[3]}, nullptr};
  const char needs_grad = 0;
  PrepareContext context;
  context.mode = mode;
  context.inputs = std::span<const ValueInfo>(&image, 1);
  context.input_needs_grad = std::span<const char>(&needs_grad, 1);
  context.engine = &engine;
  return producer->prepare(context)->output;
}

AlignedBuffer random_buffer(std::size_t bytes, unsigned seed) {
  AlignedBuffer buffer(bytes);
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  // Blocked layouts' padding gets values too; no kernel reads them as results.
  for (std::size_t i = 0; i < bytes / sizeof(float); ++i) buffer.floats()[i] = value(random);
  return buffer;
}

const BlockedLayout* blocked(const ValueInfo& info) { return info.blocked.get(); }

void run_layer(benchmark::State& state, LayerCase c, std::int64_t batch, bool backward) {
  // oneDNN on Debian runs on OpenMP and sizes a primitive's thread split when it is made:
  // one thread from before prepare() on, or it spawns a team outside any parallel region.
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const Mode mode = backward ? Mode::training : Mode::inference;
  const std::unique_ptr<Layer> layer = make_layer(c.kind, Json::parse(c.options));
  const ValueInfo input = model_input(Shape{batch, c.channels, c.height, c.width}, mode, engine);
  const char input_needs_grad = c.channels > 1 ? 1 : 0;  // only a model's image has one channel
  PrepareContext context;
  context.mode = mode;
  context.inputs = std::span<const ValueInfo>(&input, 1);
  context.input_needs_grad = std::span<const char>(&input_needs_grad, 1);
  context.engine = &engine;
  const std::unique_ptr<PreparedLayer> prepared = layer->prepare(context);
  const ValueInfo& output = prepared->output;

  AlignedBuffer input_data = random_buffer(input.bytes(), 1);
  AlignedBuffer output_data(output.bytes()), saved(prepared->saved_bytes);
  AlignedBuffer forward_scratch(prepared->forward_scratch_bytes), backward_scratch(prepared->backward_scratch_bytes);
  AlignedBuffer output_grad = random_buffer(output.bytes(), 2);
  AlignedBuffer input_grad(input_needs_grad != 0 ? input.bytes() : 0);
  std::vector<AlignedBuffer> param_data, param_grad_data;
  std::vector<Tensor> params, param_grads;
  for (const ParameterSpec& spec : layer->parameters(std::span<const Shape>(&input.shape, 1))) {
    const std::size_t bytes = static_cast<std::size_t>(spec.shape.elements()) * sizeof(float);
    param_data.push_back(random_buffer(bytes, 3));
    param_grad_data.emplace_back(bytes);
    params.push_back(Tensor{param_data.back().floats(), spec.shape, nullptr});
    param_grads.push_back(Tensor{param_grad_data.back().floats(), spec.shape, nullptr});
  }

  const Tensor input_view{input_data.floats(), input.shape, blocked(input)};
  const Tensor output_view{output_data.floats(), output.shape, blocked(output)};
  const Tensor input_grad_view{input_grad.floats(), input.shape, blocked(input)};
  ForwardArgs forward;
  forward.inputs = std::span<const Tensor>(&input_view, 1);
  forward.output = output_view;
  forward.params = params;
  forward.saved = saved.data();
  forward.scratch = forward_scratch.data();
  forward.stream = &stream;
  forward.mode = mode;
  BackwardArgs backward_args;
  backward_args.inputs = forward.inputs;
  backward_args.output = output_view;
  backward_args.output_grad = Tensor{output_grad.floats(), output.shape, blocked(output)};
  backward_args.input_grads = std::span<const Tensor>(&input_grad_view, 1);
  backward_args.params = params;
  backward_args.param_grads = param_grads;
  backward_args.saved = saved.data();
  backward_args.scratch = backward_scratch.data();
  backward_args.stream = &stream;

  auto pass = [&] {
    prepared->forward(forward);
    if (backward) prepared->backward(backward_args);
    stream.wait();
  };
  pass();  // oneDNN finishes some kernels' set-up on the first call
  for (auto _ : state) pass();
  omp_set_num_threads(before);

  const Shape& y = output.shape;
  double flops = 0.0;
  if (std::string_view(c.kind) == "conv2d") {
    const double per_pass = 2.0 * static_cast<double>(y.elements()) * static_cast<double>(params[0].shape.elements() / y[1]);
    flops = per_pass * (backward ? (input_needs_grad != 0 ? 3.0 : 2.0) : 1.0);
  } else {
    flops = static_cast<double>(y.elements()) * static_cast<double>(input.shape[2] / y[2]) * static_cast<double>(input.shape[3] / y[3]);
  }
  double bytes = static_cast<double>(input.bytes() + output.bytes());
  if (backward) bytes += static_cast<double>(output.bytes() + input_grad.size() + 2 * prepared->saved_bytes);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1024);
  state.counters["img/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}

bool register_layer_benchmarks() {
  for (const LayerCase& c : cases) {
    for (bool backward : {false, true}) {
      for (std::int64_t batch : {1, 64, 256}) {
        const std::string name = std::string(c.kind) + "/" + c.name + "/" + (backward ? "forward+backward" : "forward") +
                                 "/batch:" + std::to_string(batch);
        benchmark::RegisterBenchmark(name.c_str(), run_layer, c, batch, backward);
      }
    }
  }
  return true;
}

const bool registered = register_layer_benchmarks();

}  // namespace
}  // namespace ember
