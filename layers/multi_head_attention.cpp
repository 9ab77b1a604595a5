#include "layers/multi_head_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "engine/aligned_buffer.h"
#include "engine/error.h"
#include "layers/options.h"
#include "layers/scratch_layout.h"
#include "simd/attention.h"
#include "simd/elementwise.h"
#include "simd/gemm.h"
#include "simd/parallel.h"

namespace ember {
namespace {

using simd::Transpose;

std::size_t float_bytes(std::int64_t floats) { return align_up(static_cast<std::size_t>(floats) * sizeof(float)); }

class PreparedMultiHeadAttention final : public PreparedLayer {
 public:
  PreparedMultiHeadAttention(const MultiHeadAttentionOptions& o, std::int64_t batch, std::int64_t tokens, Mode mode)
      : o_(o), batch_(batch), tokens_(tokens), rows_(batch * tokens), head_dim_(o.d_model / o.heads), mode_(mode) {}

  // Set by prepare(). Inference runs the heads on `slices` threads when called outside a
  // parallel region, each with attention_forward_bytes of scratch.
  std::int64_t slices_ = 1;
  std::size_t attention_forward_bytes_ = 0;
  // Offsets (ScratchLayout). The activations Q|K|V, the heads' outputs and the
  // log-sum-exp are saved in training and in forward scratch in inference, at the same
  // offsets; the GEMMs' and the attention kernels' work space follows in scratch.
  std::size_t qkv_offset_ = 0, heads_offset_ = 0, lse_offset_ = 0, forward_work_offset_ = 0;
  std::size_t heads_grad_offset_ = 0, qkv_grad_offset_ = 0, backward_work_offset_ = 0;

  void forward(const ForwardArgs& args) const override {
    std::byte* activations = mode_ == Mode::training ? args.saved : args.scratch;
    float* qkv = reinterpret_cast<float*>(activations + qkv_offset_);
    float* heads = reinterpret_cast<float*>(activations + heads_offset_);
    float* lse = reinterpret_cast<float*>(activations + lse_offset_);
    std::byte* work = args.scratch + forward_work_offset_;
    const std::int64_t d = o_.d_model;

    simd::GemmEpilogue in_bias;
    in_bias.bias = o_.bias ? args.params[1].data : nullptr;
    simd::gemm(Transpose::no, Transpose::yes, rows_, 3 * d, d, args.inputs[0].data, d, args.params[0].data, d, qkv, 3 * d,
               in_bias, reinterpret_cast<float*>(work), args.threads, args.runner);

    const std::int64_t pairs = batch_ * o_.heads;
    auto attend = [&](std::int64_t pair, int thread) {
      const std::int64_t n = pair / o_.heads, h = pair % o_.heads;
      float* scratch = reinterpret_cast<float*>(work + attention_forward_bytes_ * static_cast<std::size_t>(thread));
      const float* q = qkv + n * tokens_ * 3 * d + h * head_dim_;
      simd::attention_kernels().forward(shape(args.inputs, n), q, q + d, q + 2 * d, heads + n * tokens_ * d + h * head_dim_,
                                        lse + pair * tokens_, scratch);
    };
    const int threads = static_cast<int>(std::min<std::int64_t>({slices_, args.threads, pairs}));
    if (threads > 1 && args.runner != nullptr) {
      // A session's workers: part p takes the p-th of `threads` runs of (image, head) pairs.
      auto run = [&](int part) {
        const std::int64_t first = pairs * part / threads, end = pairs * (part + 1) / threads;
        for (std::int64_t pair = first; pair < end; ++pair) attend(pair, part);
      };
      simd::run_parts(*args.runner, threads, run);
    } else if (threads > 1) {
#pragma omp parallel for num_threads(threads) schedule(static)
      for (std::int64_t pair = 0; pair < pairs; ++pair) attend(pair, omp_get_thread_num());
    } else {
      // No OpenMP construct at all: libgomp allocates a team even for one thread (an
      // `if (false)` region included), and a warm inference call must not allocate.
      for (std::int64_t pair = 0; pair < pairs; ++pair) attend(pair, 0);
    }

    simd::GemmEpilogue out_bias;
    out_bias.bias = o_.bias ? args.params[3].data : nullptr;
    simd::gemm(Transpose::no, Transpose::yes, rows_, d, d, heads, d, args.params[o_.bias ? 2 : 1].data, d, args.output.data, d,
               out_bias, reinterpret_cast<float*>(work), args.threads, args.runner);
  }

  void backward(const BackwardArgs& args) const override {
    const float* qkv = reinterpret_cast<const float*>(args.saved + qkv_offset_);
    const float* heads = reinterpret_cast<const float*>(args.saved + heads_offset_);
    const float* lse = reinterpret_cast<const float*>(args.saved + lse_offset_);
    float* heads_grad = reinterpret_cast<float*>(args.scratch + heads_grad_offset_);
    float* qkv_grad = reinterpret_cast<float*>(args.scratch + qkv_grad_offset_);
    float* work = reinterpret_cast<float*>(args.scratch + backward_work_offset_);
    const std::int64_t d = o_.d_model;
    const float* dy = args.output_grad.data;
    const int out_weight = o_.bias ? 2 : 1;
    simd::GemmEpilogue accumulate;
    accumulate.accumulate = args.accumulate_param_grads;

    // Output projection: d(heads) = dY W_out; dW_out (+)= dY^T heads; db_out (+)= sums of dY
    simd::gemm(Transpose::no, Transpose::no, rows_, d, d, dy, d, args.params[out_weight].data, d, heads_grad, d,
               simd::GemmEpilogue{}, work, 1);
    simd::gemm(Transpose::yes, Transpose::no, d, d, rows_, dy, d, heads, d, args.param_grads[out_weight].data, d, accumulate,
               work, 1);
    if (o_.bias) simd::elementwise_kernels().column_sums(args.param_grads[3].data, dy, rows_, d, d, args.accumulate_param_grads);

    for (std::int64_t n = 0; n < batch_; ++n) {
      for (std::int64_t h = 0; h < o_.heads; ++h) {
        const std::int64_t offset = n * tokens_ * 3 * d + h * head_dim_;
        const std::int64_t head_offset = n * tokens_ * d + h * head_dim_;
        const float* q = qkv + offset;
        float* q_grad = qkv_grad + offset;
        simd::attention_kernels().backward(shape(args.inputs, n), q, q + d, q + 2 * d, heads + head_offset,
                                           heads_grad + head_offset, lse + (n * o_.heads + h) * tokens_, q_grad, q_grad + d,
                                           q_grad + 2 * d, work);
      }
    }

    // Input projection: dX = dQKV W_in; dW_in (+)= dQKV^T X; db_in (+)= sums of dQKV
    if (args.input_grads[0].data != nullptr) {
      simd::gemm(Transpose::no, Transpose::no, rows_, d, 3 * d, qkv_grad, 3 * d, args.params[0].data, d,
                 args.input_grads[0].data, d, simd::GemmEpilogue{}, work, 1);
    }
    simd::gemm(Transpose::yes, Transpose::no, 3 * d, d, rows_, qkv_grad, 3 * d, args.inputs[0].data, d,
               args.param_grads[0].data, d, accumulate, work, 1);
    if (o_.bias) {
      simd::elementwise_kernels().column_sums(args.param_grads[1].data, qkv_grad, rows_, 3 * d, 3 * d,
                                              args.accumulate_param_grads);
    }
    // The valid lengths are data, not something to learn.
    if (o_.key_padding_mask && args.input_grads.size() > 1 && args.input_grads[1].data != nullptr) {
      std::memset(args.input_grads[1].data, 0, static_cast<std::size_t>(batch_) * sizeof(float));
    }
  }

 private:
  simd::AttentionShape shape(std::span<const Tensor> inputs, std::int64_t n) const {
    simd::AttentionShape s;
    s.queries = s.keys = tokens_;
    s.head_dim = head_dim_;
    s.q_stride = s.k_stride = s.v_stride = 3 * o_.d_model;
    s.o_stride = o_.d_model;
    s.scale = 1.0f / std::sqrt(static_cast<float>(head_dim_));
    s.causal = o_.causal;
    if (o_.key_padding_mask) {
      const float valid = inputs[1].data[n];
      s.valid_keys = std::isfinite(valid) ? std::clamp<std::int64_t>(std::llround(valid), 0, tokens_) : 0;
    }
    return s;
  }

  MultiHeadAttentionOptions o_;
  std::int64_t batch_, tokens_, rows_, head_dim_;
  Mode mode_;
};

}  // namespace

MultiHeadAttention::MultiHeadAttention(const MultiHeadAttentionOptions& options) : options_(options) {
  if (options.d_model <= 0) throw_option_error("multi_head_attention", "d_model", "a positive integer", options.d_model);
  if (options.heads <= 0) throw_option_error("multi_head_attention", "heads", "a positive integer", options.heads);
  if (options.d_model % options.heads != 0) {
    throw Error("multi_head_attention: d_model (" + std::to_string(options.d_model) + ") must be a positive multiple of heads (" +
                std::to_string(options.heads) + ")");
  }
}

std::unique_ptr<Layer> MultiHeadAttention::from_options(const Json& options) {
  const LayerOptions o("multi_head_attention", options, {"d_model", "heads", "causal", "bias", "key_padding_mask"});
  MultiHeadAttentionOptions m;
  m.d_model = o.positive_integer("d_model");
  m.heads = o.positive_integer("heads", 1);
  m.causal = o.boolean("causal", false);
  m.bias = o.boolean("bias", true);
  m.key_padding_mask = o.boolean("key_padding_mask", false);
  return std::make_unique<MultiHeadAttention>(m);
}

Json MultiHeadAttention::options() const {
  return Json{{"d_model", options_.d_model},
              {"heads", options_.heads},
              {"causal", options_.causal},
              {"bias", options_.bias},
              {"key_padding_mask", options_.key_padding_mask}};
}

Shape MultiHeadAttention::output_shape(std::span<const Shape> inputs) const {
  const Shape& x = inputs[0];
  if (x.rank() != 3 || x[2] != options_.d_model) {
    throw Error("multi_head_attention expects input (N, T, " + std::to_string(options_.d_model) + "), found " + x.str());
  }
  if (options_.key_padding_mask && !(inputs[1] == Shape{x[0], 1})) {
    throw Error("multi_head_attention: the key padding input must be (" + std::to_string(x[0]) +
                ", 1), each sequence's count of valid keys; found " + inputs[1].str());
  }
  return x;
}

std::vector<ParameterSpec> MultiHeadAttention::parameters(std::span<const Shape>) const {
  const std::int64_t d = options_.d_model;
  // As nn.MultiheadAttention: xavier_uniform_ for the fused projection (fan_in d, fan_out
  // 3d), Linear's default for the output projection, zero biases.
  const auto xavier = static_cast<float>(std::sqrt(6.0 / static_cast<double>(d + 3 * d)));
  std::vector<ParameterSpec> specs{{"in_proj_weight", Shape{3 * d, d}, Init::uniform_scaled, d, xavier}};
  if (options_.bias) specs.push_back({"in_proj_bias", Shape{3 * d}, Init::zeros, d});
  specs.push_back({"out_proj_weight", Shape{d, d}, Init::kaiming_uniform, d});
  if (options_.bias) specs.push_back({"out_proj_bias", Shape{d}, Init::zeros, d});
  return specs;
}

std::unique_ptr<PreparedLayer> MultiHeadAttention::prepare(const PrepareContext& context) const {
  const Shape& x = context.inputs[0].shape;
  const std::int64_t batch = x[0], tokens = x[1], rows = batch * tokens, d = options_.d_model;
  const std::int64_t head_dim = d / options_.heads;
  const bool training = context.mode == Mode::training;
  auto p = std::make_unique<PreparedMultiHeadAttention>(options_, batch, tokens, context.mode);
  p->output.shape = x;
  // Projections (4 d^2 a row) and the two products of every head (2 T d a row).
  p->forward_work = rows * d * (4 * d + 2 * tokens);
  // The GEMMs only (softmax's exponentials left out); backward: two products for each.
  p->forward_flops = 2 * p->forward_work;
  p->backward_flops = 2 * p->forward_flops;
  p->backward_reads_inputs = true;
  p->slices_ = training ? 1 : context.max_threads;
  const std::size_t qkv_bytes = float_bytes(rows * 3 * d);
  const std::size_t heads_bytes = float_bytes(rows * d);
  const std::size_t lse_bytes = float_bytes(batch * options_.heads * tokens);
  // Training's GEMMs run on one thread (inside the executor's batch parallelism); the
  // forward ones may be given up to max_threads by a session.
  std::size_t forward_gemm_floats = 0;
  for (int threads = 1; threads <= context.max_threads; ++threads) {
    forward_gemm_floats = std::max({forward_gemm_floats, simd::gemm_scratch_floats(Transpose::no, Transpose::yes, rows, 3 * d, d, threads),
                                    simd::gemm_scratch_floats(Transpose::no, Transpose::yes, rows, d, d, threads)});
  }
  const std::size_t gemm_bytes = float_bytes(static_cast<std::int64_t>(std::max({
      forward_gemm_floats,
      simd::gemm_scratch_floats(Transpose::no, Transpose::no, rows, d, d, 1),
      simd::gemm_scratch_floats(Transpose::yes, Transpose::no, d, d, rows, 1),
      simd::gemm_scratch_floats(Transpose::no, Transpose::no, rows, d, 3 * d, 1),
      simd::gemm_scratch_floats(Transpose::yes, Transpose::no, 3 * d, d, rows, 1)})));
  p->attention_forward_bytes_ = float_bytes(static_cast<std::int64_t>(simd::attention_forward_scratch_floats(head_dim)));
  const std::size_t attention_backward_bytes =
      float_bytes(static_cast<std::int64_t>(simd::attention_backward_scratch_floats(tokens, head_dim)));
  const std::size_t forward_work = std::max(gemm_bytes, p->attention_forward_bytes_ * static_cast<std::size_t>(p->slices_));

  ScratchLayout activations;  // the saved bytes in training, the start of forward scratch in inference
  p->qkv_offset_ = activations.add(qkv_bytes);
  p->heads_offset_ = activations.add(heads_bytes);
  p->lse_offset_ = activations.add(lse_bytes);
  if (training) {
    p->saved_bytes = activations.total();
    ScratchLayout forward_scratch;
    p->forward_work_offset_ = forward_scratch.add(forward_work);
    p->forward_scratch_bytes = forward_scratch.total();
    ScratchLayout backward_scratch;
    p->heads_grad_offset_ = backward_scratch.add(heads_bytes);
    p->qkv_grad_offset_ = backward_scratch.add(qkv_bytes);
    p->backward_work_offset_ = backward_scratch.add(std::max(gemm_bytes, attention_backward_bytes));
    p->backward_scratch_bytes = backward_scratch.total();
  } else {
    p->forward_work_offset_ = activations.add(forward_work);
    p->forward_scratch_bytes = activations.total();
  }
  return p;
}

}  // namespace ember
