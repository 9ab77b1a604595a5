#pragma once
// A test-only layer with buffers shaped like BatchNorm's: input (N, F) -> output (N, F),
// y = x * weight, with a parameter "weight" (F) and buffers running_mean (F, zeros),
// running_var (F, ones) and num_batches_tracked (1, zeros). Not registered: tests add it
// to a Graph by hand, to exercise buffer storage before any registered layer has buffers.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/graph.h"
#include "layers/layer.h"
#include "layers/registry.h"

namespace ember::testing {

class BufferedLayer final : public Layer {
 public:
  // A test may rename running_mean or change its init, to declare what parameter_layout()
  // refuses.
  explicit BufferedLayer(std::string mean_name = "running_mean", Init mean_init = Init::zeros)
      : mean_name_(std::move(mean_name)), mean_init_(mean_init) {}

  std::string_view kind() const override { return "test_buffered"; }
  Json options() const override { return Json::object(); }
  Shape output_shape(std::span<const Shape> inputs) const override {
    if (inputs[0].rank() != 2) throw Error("test_buffered: expected input (N, F), found " + inputs[0].str());
    return inputs[0];
  }
  std::vector<ParameterSpec> parameters(std::span<const Shape> inputs) const override {
    return {{"weight", Shape{inputs[0][1]}, Init::ones, 1, 1.0f}};
  }
  std::vector<ParameterSpec> buffers(std::span<const Shape> inputs) const override {
    const std::int64_t features = inputs[0][1];
    return {{mean_name_, Shape{features}, mean_init_, 1, 1.0f},
            {"running_var", Shape{features}, Init::ones, 1, 1.0f},
            {"num_batches_tracked", Shape{1}, Init::zeros, 1, 1.0f}};
  }
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override {
    auto prepared = std::make_unique<Prepared>();
    prepared->output = context.inputs[0];
    return prepared;
  }

 private:
  class Prepared final : public PreparedLayer {
   public:
    void forward(const ForwardArgs& args) const override {
      const std::int64_t features = args.params[0].shape[0];
      const float* x = args.inputs[0].data;
      const float* w = args.params[0].data;
      for (std::int64_t i = 0; i < args.output.elements(); ++i) args.output.data[i] = x[i] * w[i % features];
    }
    void backward(const BackwardArgs& args) const override {
      const std::int64_t features = args.params[0].shape[0];
      const std::int64_t n = args.output_grad.elements();
      const float* dy = args.output_grad.data;
      const float* x = args.inputs[0].data;
      const float* w = args.params[0].data;
      float* dw = args.param_grads[0].data;
      if (!args.accumulate_param_grads) std::fill(dw, dw + features, 0.0f);
      for (std::int64_t i = 0; i < n; ++i) dw[i % features] += dy[i] * x[i];
      if (args.input_grads[0].data != nullptr) {
        for (std::int64_t i = 0; i < n; ++i) args.input_grads[0].data[i] = dy[i] * w[i % features];
      }
    }
  };

  std::string mean_name_;
  Init mean_init_;
};

// input (4) -> fc1 linear (3) -> bn1 test_buffered -> fc2 linear (outputs); `layer`
// replaces bn1's layer.
inline Graph buffered_graph(std::int64_t outputs = 2, std::unique_ptr<Layer> layer = std::make_unique<BufferedLayer>()) {
  Graph graph(Shape{4});
  const ValueId fc1 = graph.add("fc1", make_layer("linear", Json{{"in_features", 4}, {"out_features", 3}}), {graph.input()});
  const ValueId bn1 = graph.add("bn1", std::move(layer), {fc1});
  graph.set_output(graph.add("fc2", make_layer("linear", Json{{"in_features", 3}, {"out_features", outputs}}), {bn1}));
  return graph;
}

}  // namespace ember::testing
