#pragma once
// The contract every layer in layers/ implements.
//
// A Layer is the configured operation (kernel size, channels, ...): it infers shapes,
// declares its parameters and round-trips its options through the JSON model spec. It
// holds no memory and no weights.
//
// prepare() turns it into a PreparedLayer for one micro-batch size and mode: oneDNN
// primitives are created there, once, and the PreparedLayer reports its output layout
// and the bytes it needs (saved for backward, scratch), which the memory plan places.
// forward() and backward() read and write only the views they are handed.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <oneapi/dnnl/dnnl.hpp>

#include "engine/random.h"
#include "engine/shape.h"
#include "engine/tensor.h"

namespace ember {

using Json = nlohmann::json;

enum class Mode { inference, training };

// How a parameter is initialized; distributions match PyTorch's defaults.
enum class Init {
  kaiming_uniform,  // U(-b, b), b = 1/sqrt(fan_in) (kaiming_uniform_ with a = sqrt(5))
  bias_uniform,     // U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  zeros,
  ones,
  normal,           // N(0, 1) (nn.Embedding)
  normal_scaled,    // N(0, scale^2): learned positional embeddings (ViT uses scale 0.02)
  uniform_scaled,   // U(-scale, scale): xavier_uniform_ with scale = sqrt(6 / (fan_in + fan_out))
};

struct ParameterSpec {
  std::string name;       // "weight", "bias"; the store prefixes the node name
  Shape shape;            // PyTorch's layout: Linear (out, in), Conv2d (O, I, kH, kW)
  Init init = Init::zeros;
  std::int64_t fan_in = 1;
  float scale = 1.0f;     // Init::normal_scaled's standard deviation, Init::uniform_scaled's bound
};

// A value flowing between layers at one micro-batch size.
struct ValueInfo {
  Shape shape;                        // logical, batch first
  std::optional<dnnl::memory::desc> blocked;  // set when the value stays in a oneDNN layout
  std::size_t bytes() const {
    return blocked ? blocked->get_size() : static_cast<std::size_t>(shape.elements()) * sizeof(float);
  }
};

struct PrepareContext {
  Mode mode = Mode::inference;
  std::span<const ValueInfo> inputs;
  // Per input: does backward have to produce its gradient? (Never for the model input.)
  std::span<const char> input_needs_grad;
  const dnnl::engine* engine = nullptr;
  // Inference only: the layer's output goes straight into a ReLU that the step program
  // removed, so the layer applies it (oneDNN post-op). Only layers whose
  // fuses_following_relu() is true are asked.
  bool fuse_relu = false;
};

struct ForwardArgs {
  std::span<const Tensor> inputs;
  Tensor output;
  std::span<const Tensor> params;   // in the order of Layer::parameters()
  std::byte* saved = nullptr;       // saved_bytes, kept until this layer's backward
  std::byte* scratch = nullptr;     // forward_scratch_bytes, free after the call
  dnnl::stream* stream = nullptr;   // this thread's oneDNN stream
  Mode mode = Mode::inference;
  CounterRandom random;             // this layer's stream for this step (dropout)
  std::int64_t first_sample = 0;    // index in the whole batch of inputs' first sample
};

struct BackwardArgs {
  std::span<const Tensor> inputs;       // forward inputs (valid if backward_reads_inputs)
  Tensor output;                        // forward output (valid if backward_reads_output)
  Tensor output_grad;
  std::span<const Tensor> input_grads;  // data == nullptr where no gradient is wanted
  std::span<const Tensor> params;
  std::span<const Tensor> param_grads;
  bool accumulate_param_grads = false;  // add to param_grads instead of overwriting them
  std::byte* saved = nullptr;
  std::byte* scratch = nullptr;         // backward_scratch_bytes
  dnnl::stream* stream = nullptr;
};

// Shared read-only by every thread that runs this micro-batch size: forward and backward
// are const and keep no state between calls (oneDNN primitives run with
// scratchpad_mode::user, their scratchpad in the scratch bytes handed in).
class PreparedLayer {
 public:
  virtual ~PreparedLayer() = default;
  virtual void forward(const ForwardArgs& args) const = 0;
  virtual void backward(const BackwardArgs& args) const = 0;

  ValueInfo output;
  std::size_t saved_bytes = 0;
  std::size_t forward_scratch_bytes = 0;
  std::size_t backward_scratch_bytes = 0;
  bool backward_reads_inputs = true;
  bool backward_reads_output = false;
  // The output may share the input's memory (pointwise layers in inference).
  bool can_run_in_place = false;
};

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string_view kind() const = 0;
  // Everything needed to rebuild the layer; round-trips through the model spec.
  virtual Json options() const = 0;
  virtual int input_count() const { return 1; }
  // Shapes carry the batch first. Throws ember::Error naming the expected and found shape.
  virtual Shape output_shape(std::span<const Shape> inputs) const = 0;
  virtual std::vector<ParameterSpec> parameters(std::span<const Shape> inputs) const { return {}; }
  // oneDNN layers and pointwise layers take inputs in a blocked oneDNN layout; the rest
  // get plain row-major inputs (the executor inserts the reorder).
  virtual bool accepts_blocked_inputs() const { return false; }
  // Can prepare() honour PrepareContext::fuse_relu?
  virtual bool fuses_following_relu() const { return false; }
  virtual std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const = 0;
};

}  // namespace ember
