#include "layers/batch_norm.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/blocked_layout.h"
#include "engine/error.h"
#include "layers/options.h"
#include "simd/batch_norm.h"

namespace ember {
namespace {

// The step's batch buffer: the total count, then per channel the batch mean and
// 1/sqrt(var + eps) (forward reduction), sum dy and sum dy * xhat (backward reduction).
struct BatchView {
  BatchView(std::byte* batch, std::int64_t channels) {
    count = reinterpret_cast<double*>(batch);
    mean = reinterpret_cast<float*>(batch + sizeof(double));
    invstd = mean + channels;
    sum_dy = invstd + channels;
    sum_dy_xhat = sum_dy + channels;
  }
  static std::size_t bytes(std::int64_t channels) { return sizeof(double) + static_cast<std::size_t>(4 * channels) * sizeof(float); }
  double* count;
  float *mean, *invstd, *sum_dy, *sum_dy_xhat;
};

class PreparedBatchNorm final : public PreparedLayer {
 public:
  PreparedBatchNorm(std::string kind, const BatchNormOptions& options, simd::ChannelBlocked shape, Mode mode)
      : kind_(std::move(kind)), options_(options), shape_(shape), mode_(mode),
        batch_statistics_(mode == Mode::training || !options.track_running_stats) {}

  bool batch_statistics() const { return batch_statistics_; }
  std::int64_t channels() const { return shape_.channels; }

  // The running statistics come from the caller (the step passes the node's buffers);
  // a caller that forgot them gets an error, not a read through a null pointer.
  void require_running_statistics(std::span<const Tensor> buffers) const {
    if (buffers.size() < 3 || buffers[0].data == nullptr || buffers[1].data == nullptr || buffers[2].data == nullptr) {
      throw Error(kind_ + ": running statistics (running_mean, running_var, num_batches_tracked) were not passed, found " +
                  std::to_string(buffers.size()) + " buffers");
    }
  }

  // partial: this micro-batch's mean and M2 per channel.
  void forward_partial(const ForwardArgs& args) const override {
    float* mean = reinterpret_cast<float*>(args.partial);
    simd::batch_norm_kernels().statistics(mean, mean + channels(), args.inputs[0].data, shape_);
  }

  void reduce_forward(const ReduceArgs& args) const override {
    const std::int64_t C = channels();
    BatchView batch(args.batch, C);
    double total = 0.0;
    for (std::int64_t size : args.micro_batch_sizes) total += static_cast<double>(size * shape_.spatial);
    const bool update_running = mode_ == Mode::training && options_.track_running_stats;
    // As PyTorch: one value has no spread to normalize by (every output would be bias).
    if (total <= 1.0) {
      throw Error(kind_ + ": batch statistics need more than one value per channel, found a batch of " + std::to_string(static_cast<long long>(total)) +
                  " (batch size x spatial size)");
    }
    *batch.count = total;
    double factor = 0.0;
    if (update_running) {
      require_running_statistics(args.buffers);
      float& batches_tracked = args.buffers[2].data[0];
      batches_tracked += 1.0f;
      factor = options_.momentum ? *options_.momentum : 1.0 / static_cast<double>(batches_tracked);
    }
    for (std::int64_t c = 0; c < C; ++c) {
      // Chan et al.'s pairwise update, micro-batch by micro-batch, in double.
      double count = 0.0, mean = 0.0, m2 = 0.0;
      for (std::size_t i = 0; i < args.partials.size(); ++i) {
        const float* partial = reinterpret_cast<const float*>(args.partials[i]);
        const double n = static_cast<double>(args.micro_batch_sizes[i] * shape_.spatial);
        const double partial_mean = partial[c], partial_m2 = partial[C + c];
        const double together = count + n;
        const double delta = partial_mean - mean;
        mean += delta * n / together;
        m2 += partial_m2 + delta * delta * count * n / together;
        count = together;
      }
      const double variance = m2 / count;
      batch.mean[c] = static_cast<float>(mean);
      batch.invstd[c] = static_cast<float>(1.0 / std::sqrt(variance + options_.eps));
      if (update_running) {
        float& running_mean = args.buffers[0].data[c];
        float& running_var = args.buffers[1].data[c];
        running_mean = static_cast<float>((1.0 - factor) * running_mean + factor * mean);
        running_var = static_cast<float>((1.0 - factor) * running_var + factor * (m2 / (count - 1.0)));
      }
    }
  }

  void forward(const ForwardArgs& args) const override {
    const std::int64_t C = channels();
    float* scale = reinterpret_cast<float*>(args.scratch);
    float* shift = scale + C;
    const float* weight = options_.affine ? args.params[0].data : nullptr;
    const float* bias = options_.affine ? args.params[1].data : nullptr;
    for (std::int64_t c = 0; c < C; ++c) {
      double mean = 0.0, invstd = 0.0;
      if (batch_statistics_) {
        const BatchView batch(args.batch, C);
        mean = batch.mean[c];
        invstd = batch.invstd[c];
      } else {
        if (c == 0) require_running_statistics(args.buffers);
        mean = args.buffers[0].data[c];
        invstd = 1.0 / std::sqrt(static_cast<double>(args.buffers[1].data[c]) + options_.eps);
      }
      const double s = (weight != nullptr ? weight[c] : 1.0) * invstd;
      scale[c] = static_cast<float>(s);
      shift[c] = static_cast<float>((bias != nullptr ? bias[c] : 0.0) - mean * s);
    }
    simd::batch_norm_kernels().affine(args.output.data, args.inputs[0].data, scale, shift, shape_);
  }

  // partial: this micro-batch's sum dy and sum dy * xhat per channel, which are also its
  // bias and weight gradients.
  void backward_partial(const BackwardArgs& args) const override {
    const std::int64_t C = channels();
    const BatchView batch(args.batch, C);
    float* sum_dy = reinterpret_cast<float*>(args.partial);
    float* sum_dy_xhat = sum_dy + C;
    simd::batch_norm_kernels().backward_sums(sum_dy, sum_dy_xhat, args.output_grad.data, args.inputs[0].data, batch.mean, shape_);
    for (std::int64_t c = 0; c < C; ++c) sum_dy_xhat[c] *= batch.invstd[c];
    write_parameter_gradients(args, sum_dy, sum_dy_xhat);
  }

  void reduce_backward(const ReduceArgs& args) const override {
    const std::int64_t C = channels();
    BatchView batch(args.batch, C);
    for (std::int64_t c = 0; c < C; ++c) {
      double sum_dy = 0.0, sum_dy_xhat = 0.0;
      for (std::byte* const p : args.partials) {
        const float* partial = reinterpret_cast<const float*>(p);
        sum_dy += partial[c];
        sum_dy_xhat += partial[C + c];
      }
      batch.sum_dy[c] = static_cast<float>(sum_dy);
      batch.sum_dy_xhat[c] = static_cast<float>(sum_dy_xhat);
    }
  }

  void backward(const BackwardArgs& args) const override {
    if (batch_statistics_) {
      batch_backward(args);
    } else {
      running_backward(args);
    }
  }

 private:
  float weight_at(const BackwardArgs& args, std::int64_t c) const { return options_.affine ? args.params[0].data[c] : 1.0f; }

  void write_parameter_gradients(const BackwardArgs& args, const float* sum_dy, const float* sum_dy_xhat) const {
    if (!options_.affine) return;
    float* weight_grad = args.param_grads[0].data;
    float* bias_grad = args.param_grads[1].data;
    for (std::int64_t c = 0; c < channels(); ++c) {
      weight_grad[c] = (args.accumulate_param_grads ? weight_grad[c] : 0.0f) + sum_dy_xhat[c];
      bias_grad[c] = (args.accumulate_param_grads ? bias_grad[c] : 0.0f) + sum_dy[c];
    }
  }

  // dx = k dy + p x + q: the batch statistics depend on x, hence p and q.
  void batch_backward(const BackwardArgs& args) const {
    if (args.input_grads[0].data == nullptr) return;
    const std::int64_t C = channels();
    const BatchView batch(args.batch, C);
    float* k = reinterpret_cast<float*>(args.scratch);
    float* p = k + C;
    float* q = p + C;
    const double inverse_count = 1.0 / *batch.count;
    for (std::int64_t c = 0; c < C; ++c) {
      const double invstd = batch.invstd[c];
      const double kc = weight_at(args, c) * invstd;
      const double pc = -kc * invstd * batch.sum_dy_xhat[c] * inverse_count;
      k[c] = static_cast<float>(kc);
      p[c] = static_cast<float>(pc);
      q[c] = static_cast<float>(-kc * batch.sum_dy[c] * inverse_count - pc * batch.mean[c]);
    }
    simd::batch_norm_kernels().backward_apply(args.input_grads[0].data, args.output_grad.data, args.inputs[0].data, k, p, q, shape_);
  }

  // Running statistics are constants: dx = weight * invstd * dy.
  void running_backward(const BackwardArgs& args) const {
    const std::int64_t C = channels();
    float* k = reinterpret_cast<float*>(args.scratch);
    float* zero = k + C;
    float* invstd = zero + C;
    float* sum_dy = invstd + C;
    float* sum_dy_xhat = sum_dy + C;
    require_running_statistics(args.buffers);
    const float* running_mean = args.buffers[0].data;
    for (std::int64_t c = 0; c < C; ++c) {
      const double s = 1.0 / std::sqrt(static_cast<double>(args.buffers[1].data[c]) + options_.eps);
      invstd[c] = static_cast<float>(s);
      k[c] = static_cast<float>(weight_at(args, c) * s);
      zero[c] = 0.0f;
    }
    if (options_.affine) {
      simd::batch_norm_kernels().backward_sums(sum_dy, sum_dy_xhat, args.output_grad.data, args.inputs[0].data, running_mean, shape_);
      for (std::int64_t c = 0; c < C; ++c) sum_dy_xhat[c] *= invstd[c];
      write_parameter_gradients(args, sum_dy, sum_dy_xhat);
    }
    if (args.input_grads[0].data != nullptr) {
      simd::batch_norm_kernels().backward_apply(args.input_grads[0].data, args.output_grad.data, args.inputs[0].data, k, zero, zero,
                                                shape_);
    }
  }

  std::string kind_;
  BatchNormOptions options_;
  simd::ChannelBlocked shape_;
  Mode mode_;
  bool batch_statistics_;
};

// oneDNN's name of a blocked layout: outer dimensions by decreasing stride, upper case
// where blocked, then the inner blocks ("nChw16c", "NChw16n16c", "nhwc").
std::string layout_name(const dnnl_memory_desc_t& desc) {
  if (desc.format_kind != dnnl_blocked) return "format kind " + std::to_string(static_cast<int>(desc.format_kind));
  const int rank = desc.ndims;
  const std::string letters = rank == 4 ? "nchw" : rank == 3 ? "ncw" : rank == 2 ? "nc" : "abcdef";
  const dnnl_blocking_desc_t& blocking = desc.format_desc.blocking;
  std::vector<int> order;
  for (int d = 0; d < rank; ++d) order.push_back(d);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return blocking.strides[a] > blocking.strides[b]; });
  std::string name;
  for (int d : order) {
    bool blocked = false;
    for (int i = 0; i < blocking.inner_nblks; ++i) blocked = blocked || blocking.inner_idxs[i] == d;
    const char letter = letters[static_cast<std::size_t>(d) % letters.size()];
    name += blocked ? static_cast<char>(letter - 'a' + 'A') : letter;
  }
  for (int i = 0; i < blocking.inner_nblks; ++i) {
    name += std::to_string(blocking.inner_blks[i]) + letters[static_cast<std::size_t>(blocking.inner_idxs[i]) % letters.size()];
  }
  return name;
}

[[noreturn]] void refuse_layout(std::string_view kind, const dnnl_memory_desc_t& desc, std::string_view why) {
  throw Error(std::string(kind) + ": input layout '" + layout_name(desc) + "' " + std::string(why) +
              "; expected plain, channels-last or channel-blocked (nChw8c, nChw16c)");
}

// How the input's memory maps onto simd/batch_norm.h's (N, C/b, S, b).
simd::ChannelBlocked channel_blocked_of(std::string_view kind, const ValueInfo& input) {
  const Shape& x = input.shape;
  const int rank = x.rank();
  simd::ChannelBlocked shape;
  shape.samples = x[0];
  shape.channels = x[1];
  for (int d = 2; d < rank; ++d) shape.spatial *= x[d];
  if (!input.blocked) {
    shape.block = rank == 2 ? shape.channels : 1;  // (N, C): channels are contiguous
    return shape;
  }
  const dnnl_memory_desc_t& desc = input.blocked->desc.data;
  if (desc.format_kind != dnnl_blocked) refuse_layout(kind, desc, "is not a blocked memory format");
  if (desc.data_type != dnnl_f32) refuse_layout(kind, desc, "is not f32");
  if (desc.ndims != rank || desc.offset0 != 0) refuse_layout(kind, desc, "does not describe the input's dimensions from offset 0");
  const dnnl_blocking_desc_t& blocking = desc.format_desc.blocking;
  std::vector<std::int64_t> expected(static_cast<std::size_t>(rank));
  const bool channels_last = blocking.inner_nblks == 0 && rank > 2 && shape.channels > 1 && blocking.strides[1] == 1;
  if (blocking.inner_nblks == 0) {
    shape.block = channels_last ? shape.channels : 1;
  } else if (blocking.inner_nblks == 1 && blocking.inner_idxs[0] == 1) {
    shape.block = blocking.inner_blks[0];
  } else {
    refuse_layout(kind, desc, "blocks something other than the channels");
  }
  // Strides of (N, C/b, spatial..., b) in floats; channels_last is b = C with stride 1.
  std::int64_t stride = shape.block;
  for (int d = rank - 1; d >= 2; --d) {
    expected[static_cast<std::size_t>(d)] = stride;
    stride *= x[d];
  }
  expected[1] = channels_last ? 1 : stride;
  expected[0] = stride * shape.blocks();
  for (int d = 0; d < rank; ++d) {
    const auto i = static_cast<std::size_t>(d);
    const std::int64_t padded = d == 1 ? shape.blocks() * shape.block : x[d];
    if (desc.padded_dims[d] != padded || desc.padded_offsets[d] != 0) refuse_layout(kind, desc, "pads other than the channels");
    if (x[d] > 1 && blocking.strides[d] != expected[i]) refuse_layout(kind, desc, "is not channel-blocked");
  }
  return shape;
}

BatchNormOptions parse(std::string_view kind, const Json& json) {
  const LayerOptions o(kind, json, {"num_features", "eps", "momentum", "affine", "track_running_stats"});
  BatchNormOptions options;
  options.num_features = o.positive_integer("num_features");
  options.eps = o.number("eps", 1e-5, 0.0, 1.0);
  options.momentum = o.number_or_null("momentum", 0.1, 0.0, 1.0);
  options.affine = o.boolean("affine", true);
  options.track_running_stats = o.boolean("track_running_stats", true);
  return options;
}

}  // namespace

BatchNorm::BatchNorm(int spatial_rank, const BatchNormOptions& options) : spatial_rank_(spatial_rank), options_(options) {
  const std::string name(kind());
  if (options.num_features <= 0) {
    throw Error(name + " option 'num_features': expected a positive integer, found " + std::to_string(options.num_features));
  }
  // eps = 0 would divide by zero on a constant channel.
  if (!(options.eps > 0.0 && options.eps < 1.0)) throw Error(name + " option 'eps': expected a number in (0, 1), found " + Json(options.eps).dump());
  if (options.momentum && !(*options.momentum >= 0.0 && *options.momentum <= 1.0)) {
    throw Error(name + " option 'momentum': expected a number in [0, 1] or null, found " + Json(*options.momentum).dump());
  }
}

std::unique_ptr<Layer> BatchNorm::from_options_1d(const Json& options) {
  return std::make_unique<BatchNorm>(1, parse("batch_norm1d", options));
}

std::unique_ptr<Layer> BatchNorm::from_options_2d(const Json& options) {
  return std::make_unique<BatchNorm>(2, parse("batch_norm2d", options));
}

Json BatchNorm::options() const {
  return Json{{"num_features", options_.num_features},
              {"eps", options_.eps},
              {"momentum", options_.momentum ? Json(*options_.momentum) : Json(nullptr)},
              {"affine", options_.affine},
              {"track_running_stats", options_.track_running_stats}};
}

Shape BatchNorm::output_shape(std::span<const Shape> inputs) const {
  const Shape& x = inputs[0];
  const bool rank_ok = spatial_rank_ == 2 ? x.rank() == 4 : x.rank() == 2 || x.rank() == 3;
  const std::string c = std::to_string(options_.num_features);
  if (!rank_ok || x[1] != options_.num_features) {
    throw Error(std::string(kind()) + " expects input " + (spatial_rank_ == 2 ? "(N, " + c + ", H, W)" : "(N, " + c + ") or (N, " + c + ", L)") +
                ", found " + x.str());
  }
  return x;
}

std::vector<ParameterSpec> BatchNorm::parameters(std::span<const Shape>) const {
  if (!options_.affine) return {};
  const std::int64_t C = options_.num_features;
  return {{"weight", Shape{C}, Init::ones, C}, {"bias", Shape{C}, Init::zeros, C}};
}

std::vector<ParameterSpec> BatchNorm::buffers(std::span<const Shape>) const {
  if (!options_.track_running_stats) return {};
  const std::int64_t C = options_.num_features;
  return {{"running_mean", Shape{C}, Init::zeros, C}, {"running_var", Shape{C}, Init::ones, C}, {"num_batches_tracked", Shape{1}, Init::zeros, 1}};
}

std::unique_ptr<PreparedLayer> BatchNorm::prepare(const PrepareContext& context) const {
  const ValueInfo& input = context.inputs[0];
  const Shape y = output_shape(std::span<const Shape>(&input.shape, 1));
  const simd::ChannelBlocked shape = channel_blocked_of(kind(), input);
  auto prepared = std::make_unique<PreparedBatchNorm>(std::string(kind()), options_, shape, context.mode);
  prepared->output.shape = y;
  prepared->output.blocked = input.blocked;  // the same layout, padding zeroed
  const auto per_channel = static_cast<std::size_t>(options_.num_features) * sizeof(float);
  prepared->forward_scratch_bytes = 2 * per_channel;
  prepared->backward_scratch_bytes = 5 * per_channel;
  prepared->backward_reads_inputs = true;
  // Per element, of the forward() and backward() stages (the partial stages' sums are not
  // counted): a multiply-add (x scale + shift) forward; the input gradient backward.
  prepared->forward_flops = 2 * input.shape.elements();
  prepared->backward_flops = 4 * input.shape.elements();
  if (prepared->batch_statistics()) {
    prepared->forward_reduces = true;
    prepared->backward_reduces = true;
    prepared->partial_bytes = 2 * per_channel;
    prepared->batch_bytes = BatchView::bytes(options_.num_features);
  } else {
    prepared->can_run_in_place = true;  // a per-channel affine
  }
  return prepared;
}

}  // namespace ember
