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

#include "engine/random.h"
#include "engine/shape.h"
#include "engine/tensor.h"

namespace dnnl {
struct engine;  // <oneapi/dnnl/dnnl.hpp>: only layers/*.cpp and the engine's sources include it
struct stream;
}  // namespace dnnl

namespace ember::simd {
class PartRunner;  // simd/parallel.h
}

namespace ember {

using Json = nlohmann::json;

enum class Mode { inference, training };

// A pointwise activation a producer can apply to its own output: max(0, x), and GELU
// exact (erf) or tanh-approximated, as torch.nn.GELU(approximate).
enum class FusedActivation { none, relu, gelu_erf, gelu_tanh };

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
  std::shared_ptr<const BlockedLayout> blocked;  // set when the value stays in a oneDNN layout
  std::size_t bytes() const { return Tensor{nullptr, shape, blocked.get()}.bytes(); }
};

struct PrepareContext {
  Mode mode = Mode::inference;
  std::span<const ValueInfo> inputs;
  // Per input: does backward have to produce its gradient? (Never for the model input.)
  std::span<const char> input_needs_grad;
  const dnnl::engine* engine = nullptr;
  // Inference only: the layer's output goes straight into a pointwise activation that the
  // step compiler removed (a layer whose activation() is this), so the layer applies it
  // (a oneDNN post-op, a GEMM epilogue). Only layers whose fuses_following() accepts it
  // are asked.
  FusedActivation fused_activation = FusedActivation::none;
  // The layer's output (after the fused activation, if any) goes straight into a 2x2,
  // stride-2 max pool without padding (a layer whose is_max_pool_2x2() is true) that the
  // step compiler removed, so the layer applies it: its output is the pooled one, and in
  // training its backward takes the pooled output's gradient. Only layers whose
  // fuses_following_max_pool() is true and that read the model's input (plain NCHW, never
  // needing a gradient) are asked.
  bool fuse_max_pool = false;
  // The most compute threads one forward call may be given (ForwardArgs::threads): scratch
  // is sized for it. The executor runs samples in parallel and gives each op one; a
  // session call with a thread budget and a batch too small to split gives its ops more.
  int max_threads = 1;
};

// What PreparedLayer::prepare_constants works from.
struct ConstantArgs {
  std::span<const Tensor> params;   // in the order of Layer::parameters()
  std::byte* constants = nullptr;   // constant_bytes, 64-byte aligned
  dnnl::stream* stream = nullptr;
  // Compute threads the call may run (OpenMP); the constants must be the same bytes for
  // every count.
  int threads = 1;
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
  // Batch-level layers (PreparedLayer::forward_reduces): forward_partial writes this
  // micro-batch's partial sums to `partial`; forward reads the reduced `batch` buffer.
  std::byte* partial = nullptr;     // partial_bytes, kept until the step's reduction
  std::byte* batch = nullptr;       // batch_bytes, one per step, shared by its micro-batches
  std::span<const Tensor> buffers;  // in the order of Layer::buffers(); read-only here
  // What prepare_constants made of the parameters (packed GEMM panels, conv weights in
  // oneDNN's layout): in a session, once; in a training step, at its start (the
  // executor). nullptr elsewhere (the executor's inference, a program run alone), and the
  // layer then works from `params`, with the same bits.
  const std::byte* constants = nullptr;
  // Compute threads this call may run (OpenMP), at most PrepareContext::max_threads. A
  // layer must give the same bits for every count.
  int threads = 1;
  // With threads > 1, possibly: threads that are already running (a session's workers,
  // engine/worker_pool.h), cheaper to start than OpenMP's; kernels that split their work
  // into parts (simd::gemm) run the parts on them.
  const simd::PartRunner* runner = nullptr;
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
  // Batch-level layers (PreparedLayer::backward_reduces): as in ForwardArgs.
  std::byte* partial = nullptr;
  std::byte* batch = nullptr;
  // Layer::buffers(), read-only: a backward through frozen statistics (BatchNorm with
  // running statistics outside training) reads them as the forward did.
  std::span<const Tensor> buffers;
  // A training step's constants (ForwardArgs::constants), or nullptr: work from `params`.
  const std::byte* constants = nullptr;
};

// A reduction over the whole batch (BatchNorm's statistics): run once per step on one
// thread, after every micro-batch's *_partial and before any micro-batch's forward (or
// backward) that reads the result. The partials come in micro-batch order, so the result
// does not depend on the thread count.
struct ReduceArgs {
  std::span<std::byte* const> partials;             // one per micro-batch, partial_bytes each
  std::span<const std::int64_t> micro_batch_sizes;  // samples in each micro-batch
  std::byte* batch = nullptr;                       // batch_bytes: the result
  std::span<const Tensor> params;
  std::span<const Tensor> buffers;  // Layer::buffers(); a training forward updates them here
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

  // Weights transformed once per version of the weights instead of on every call
  // (ForwardArgs::constants, BackwardArgs::constants): in inference when a session opens;
  // in training at the start of every step, after the previous update, by the executor
  // (what forward and backward both read, for all the step's micro-batches). Their layout
  // may not depend on the micro-batch size: prepared layers of one node whose
  // constants_key() is equal share one copy, so a session or an executor holds one per
  // node, not one per micro-batch size. A layer given none works from the weights, with
  // the same bits.
  std::size_t constant_bytes = 0;

  // Multiply-adds of one forward call, or 0 for a layer that must run on one thread. A run
  // with several threads gives them only to ops that do enough work to repay starting a
  // team (StepProgram's runner), and such a layer must give the same bits for any count.
  std::int64_t forward_work = 0;
  // Floating-point operations of one forward() and one backward() call (a multiply-add
  // counts two), for the profiler's GFLOP/s (engine/profile.h); 0 where the layer states
  // none. Batch-level layers count their forward() and backward() stages only.
  std::int64_t forward_flops = 0;
  std::int64_t backward_flops = 0;
  virtual std::string constants_key() const { return {}; }
  virtual void prepare_constants(const ConstantArgs& /*args*/) const {}

  // Batch-level layers: a forward (or backward) that needs sums over the whole batch runs
  // in three stages, forward_partial per micro-batch, reduce_forward once, then forward
  // per micro-batch (and the same for backward). The step compiler puts a sync point
  // between the stages; tensors that live across it are kept for every micro-batch.
  bool forward_reduces = false;
  bool backward_reduces = false;
  std::size_t partial_bytes = 0;  // per micro-batch, per reduction
  std::size_t batch_bytes = 0;    // per step, shared by the forward and backward reductions
  virtual void forward_partial(const ForwardArgs& /*args*/) const {}
  virtual void reduce_forward(const ReduceArgs& /*args*/) const {}
  virtual void backward_partial(const BackwardArgs& /*args*/) const {}
  virtual void reduce_backward(const ReduceArgs& /*args*/) const {}
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
  // State that is not a parameter (BatchNorm's running statistics): saved in checkpoints
  // and restored on resume, never touched by an optimizer or weight decay.
  virtual std::vector<ParameterSpec> buffers(std::span<const Shape> /*inputs*/) const { return {}; }
  // oneDNN layers and pointwise layers take inputs in a blocked oneDNN layout; the rest
  // get plain row-major inputs (the executor inserts the reorder).
  virtual bool accepts_blocked_inputs() const { return false; }
  // Can prepare() honour PrepareContext::fused_activation = `activation`?
  virtual bool fuses_following(FusedActivation /*activation*/) const { return false; }
  // The pointwise activation this layer is, which a producer may apply instead (none: it
  // is not one).
  virtual FusedActivation activation() const { return FusedActivation::none; }
  // Can prepare() honour PrepareContext::fuse_max_pool, for a plain input?
  virtual bool fuses_following_max_pool() const { return false; }
  // Is this layer a 2x2, stride-2 max pool without padding, which such a producer can apply?
  virtual bool is_max_pool_2x2() const { return false; }
  virtual std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const = 0;
};

}  // namespace ember
