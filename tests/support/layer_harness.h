#pragma once
// Runs one prepared layer by hand, outside any graph, for the layer tests: plain row-major
// data in and out (inputs may be handed to the layer in a oneDNN blocked layout; outputs in
// a blocked layout are reordered back), and a finite-difference check of every gradient.
//
// The scalar checked is L = sum(output * R) for a fixed random R, so dL/doutput = R and
// the check covers the whole Jacobian-vector product, not one output.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/aligned_buffer.h"
#include "layers/dnnl_util.h"
#include "layers/layer.h"
#include "support/forced_isa.h"

namespace ember::testing {

struct HarnessInput {
  HarnessInput(Shape input_shape, std::optional<dnnl::memory::format_tag> input_layout = std::nullopt, bool input_needs_grad = true)
      : shape(input_shape), layout(input_layout), needs_grad(input_needs_grad) {}
  Shape shape;
  // When set, the layer receives this input in that oneDNN layout (nChw16c, ...).
  std::optional<dnnl::memory::format_tag> layout;
  bool needs_grad = true;
};

class LayerHarness {
 public:
  // fused: prepare the layer with PrepareContext::fused_activation = fused (inference: its
  // output is then the activation of its output). micro_batches: the sizes the batch is split into (empty: one), as the
  // executor would; each micro-batch gets its own prepared layer, and a batch-level layer
  // (PreparedLayer::forward_reduces / backward_reduces) runs its stages: every
  // micro-batch's *_partial, the reduction over them in order, then every micro-batch.
  // fuse_max_pool: prepare with PrepareContext::fuse_max_pool (the output is then the pooled one).
  LayerHarness(const Layer& layer, std::vector<HarnessInput> input_specs, Mode mode = Mode::training,
               std::uint64_t seed = 1, FusedActivation fused = FusedActivation::none, std::vector<std::int64_t> micro_batches = {},
               bool fuse_max_pool = false)
      : layer_(layer), specs_(std::move(input_specs)), mode_(mode), engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
    std::vector<Shape> shapes;
    for (const HarnessInput& input : specs_) shapes.push_back(input.shape);
    output_shape_ = layer.output_shape(shapes);
    if (fuse_max_pool) output_shape_ = Shape{output_shape_[0], output_shape_[1], output_shape_[2] / 2, output_shape_[3] / 2};
    param_specs_ = layer.parameters(shapes);
    buffer_specs_ = layer.buffers(shapes);

    std::mt19937 random(static_cast<unsigned>(seed));
    std::uniform_real_distribution<float> value(-1.0f, 1.0f);
    for (const HarnessInput& input : specs_) {
      std::vector<float> data(static_cast<std::size_t>(input.shape.elements()));
      for (float& x : data) x = value(random);
      inputs.push_back(std::move(data));
    }
    for (const ParameterSpec& spec : param_specs_) {
      std::vector<float> data(static_cast<std::size_t>(spec.shape.elements()));
      for (float& x : data) x = 0.5f * value(random);
      params.push_back(std::move(data));
    }
    // Buffers start as the store starts them (running_mean 0, running_var 1, ...).
    for (const ParameterSpec& spec : buffer_specs_) {
      buffers.emplace_back(static_cast<std::size_t>(spec.shape.elements()), spec.init == Init::ones ? 1.0f : 0.0f);
    }
    for (const HarnessInput& input : specs_) needs_grad_.push_back(input.needs_grad ? 1 : 0);

    const std::int64_t batch = output_shape_[0];
    if (micro_batches.empty()) micro_batches.push_back(batch);
    std::int64_t first = 0;
    for (std::int64_t size : micro_batches) {
      MicroBatch mb;
      mb.first = first;
      mb.size = size;
      first += size;
      for (const HarnessInput& input : specs_) {
        ValueInfo info{with_batch(input.shape, size), nullptr};
        if (input.layout) info.blocked = make_blocked_layout(dnnl::memory::desc(dnnl_util::dims_of(info.shape), dnnl::memory::data_type::f32, *input.layout));
        mb.input_infos.push_back(info);
      }
      PrepareContext context;
      context.mode = mode_;
      context.inputs = mb.input_infos;
      context.input_needs_grad = needs_grad_;
      context.engine = &engine_;
      context.fused_activation = fused;
      context.fuse_max_pool = fuse_max_pool;
      mb.prepared = layer.prepare(context);
      EXPECT_EQ(mb.prepared->output.shape, with_batch(output_shape_, size)) << "prepare() and output_shape() disagree";
      mb.saved = AlignedBuffer(mb.prepared->saved_bytes);
      batch_bytes_ = std::max(batch_bytes_, mb.prepared->batch_bytes);
      micro_batches_.push_back(std::move(mb));
    }
    EXPECT_EQ(first, batch) << "the micro-batches must add up to the batch";
    batch_ = AlignedBuffer(batch_bytes_);
  }

  // Plain inputs, parameters and buffers: tests set them before calling forward().
  // A training forward of a layer with buffers updates `buffers` (running statistics).
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<float>> params;
  std::vector<std::vector<float>> buffers;
  // Index of the first sample in the whole batch (dropout masks depend on it).
  std::int64_t first_sample = 0;

  const Shape& output_shape() const { return output_shape_; }
  // The first micro-batch's prepared layer.
  const PreparedLayer& prepared() const { return *micro_batches_.front().prepared; }
  const std::vector<ParameterSpec>& parameter_specs() const { return param_specs_; }
  const std::vector<ParameterSpec>& buffer_specs() const { return buffer_specs_; }

  // Forward; returns the output in plain row-major order. Every output byte (and every
  // partial) is poisoned with NaN first, so an element the layer forgets to write shows up.
  std::vector<float> forward(std::uint64_t random_key = 42) {
    std::vector<Tensor> param_views = param_tensors(params, param_specs_);
    std::vector<Tensor> buffer_views = param_tensors(buffers, buffer_specs_);
    std::vector<ForwardArgs> args(micro_batches_.size());
    std::vector<AlignedBuffer> scratch;
    for (std::size_t m = 0; m < micro_batches_.size(); ++m) {
      MicroBatch& mb = micro_batches_[m];
      stage_inputs(mb);
      mb.output = poisoned(mb.prepared->output.bytes());
      mb.partial = poisoned(mb.prepared->partial_bytes);
      scratch.emplace_back(mb.prepared->forward_scratch_bytes);
      ForwardArgs& a = args[m];
      a.inputs = mb.staged_views;
      a.output = output_view(mb);
      a.params = param_views;
      a.saved = mb.saved.data();
      a.scratch = scratch.back().data();
      a.stream = &stream_;
      a.mode = mode_;
      a.random = CounterRandom(random_key);
      a.first_sample = first_sample + mb.first;
      a.partial = mb.partial.data();
      a.batch = batch_.data();
      a.buffers = buffer_views;
    }
    if (prepared().forward_reduces) {
      for (std::size_t m = 0; m < micro_batches_.size(); ++m) micro_batches_[m].prepared->forward_partial(args[m]);
      reduce(false, param_views, buffer_views);
    }
    std::vector<float> out;
    for (std::size_t m = 0; m < micro_batches_.size(); ++m) {
      micro_batches_[m].prepared->forward(args[m]);
      stream_.wait();
      const std::vector<float> part = to_plain(args[m].output);
      out.insert(out.end(), part.begin(), part.end());
    }
    return out;
  }

  struct Gradients {
    std::vector<std::vector<float>> inputs;  // empty where no gradient was asked for
    std::vector<std::vector<float>> params;
  };

  // Backward after forward(); output_grad is plain. With accumulate, parameter gradients
  // start from `start` (plain) instead of being overwritten. Micro-batches after the first
  // always accumulate, as in the executor.
  Gradients backward(const std::vector<float>& output_grad, bool accumulate = false,
                     const std::vector<std::vector<float>>* start = nullptr) {
    std::vector<std::vector<float>> param_grads;
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (accumulate) {
        param_grads.push_back((*start)[i]);
      } else {
        param_grads.emplace_back(params[i].size(), std::numeric_limits<float>::quiet_NaN());
      }
    }
    std::vector<Tensor> param_views = param_tensors(params, param_specs_);
    std::vector<Tensor> param_grad_views = param_tensors(param_grads, param_specs_);
    std::vector<Tensor> buffer_views = param_tensors(buffers, buffer_specs_);

    const std::size_t output_sample = static_cast<std::size_t>(output_shape_.elements() / output_shape_[0]);
    std::vector<BackwardArgs> args(micro_batches_.size());
    std::vector<AlignedBuffer> grad_buffers, scratch;
    std::vector<std::vector<AlignedBuffer>> input_grad_buffers(micro_batches_.size());
    std::vector<std::vector<Tensor>> input_grad_views(micro_batches_.size());
    grad_buffers.reserve(micro_batches_.size());
    for (std::size_t m = 0; m < micro_batches_.size(); ++m) {
      MicroBatch& mb = micro_batches_[m];
      const Tensor output = output_view(mb);
      const auto begin = output_grad.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(mb.first) * output_sample);
      const std::vector<float> slice(begin, begin + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(mb.size) * output_sample));
      grad_buffers.push_back(from_plain(slice, output));
      for (std::size_t i = 0; i < specs_.size(); ++i) {
        const Shape shape = with_batch(specs_[i].shape, mb.size);
        if (needs_grad_[i] != 0) {
          input_grad_buffers[m].push_back(poisoned(mb.input_infos[i].bytes()));
          input_grad_views[m].push_back(
              Tensor{reinterpret_cast<float*>(input_grad_buffers[m].back().data()), shape, blocked(mb.input_infos[i])});
        } else {
          input_grad_buffers[m].emplace_back();
          input_grad_views[m].push_back(Tensor{nullptr, shape, nullptr});
        }
      }
      mb.partial = poisoned(mb.prepared->partial_bytes);
      scratch.emplace_back(mb.prepared->backward_scratch_bytes);
      BackwardArgs& a = args[m];
      a.inputs = mb.staged_views;
      a.output = output;
      a.output_grad = Tensor{reinterpret_cast<float*>(grad_buffers.back().data()), output.shape, output.blocked};
      a.input_grads = input_grad_views[m];
      a.params = param_views;
      a.param_grads = param_grad_views;
      a.accumulate_param_grads = accumulate || m > 0;
      a.saved = mb.saved.data();
      a.scratch = scratch.back().data();
      a.stream = &stream_;
      a.partial = mb.partial.data();
      a.batch = batch_.data();
      a.buffers = buffer_views;
    }
    if (prepared().backward_reduces) {
      for (std::size_t m = 0; m < micro_batches_.size(); ++m) micro_batches_[m].prepared->backward_partial(args[m]);
      reduce(true, param_views, buffer_views);
    }
    for (std::size_t m = 0; m < micro_batches_.size(); ++m) {
      micro_batches_[m].prepared->backward(args[m]);
      stream_.wait();
    }

    Gradients result;
    for (std::size_t i = 0; i < specs_.size(); ++i) {
      std::vector<float> gradient;
      if (needs_grad_[i] != 0) {
        for (std::size_t m = 0; m < micro_batches_.size(); ++m) {
          const std::vector<float> part = to_plain(input_grad_views[m][i]);
          gradient.insert(gradient.end(), part.begin(), part.end());
        }
      }
      result.inputs.push_back(std::move(gradient));
    }
    result.params = std::move(param_grads);
    return result;
  }

  // L = sum(forward() * weights), in double.
  double weighted_sum(const std::vector<float>& weights, std::uint64_t random_key = 42) {
    const std::vector<float> out = forward(random_key);
    double sum = 0.0;
    for (std::size_t i = 0; i < out.size(); ++i) sum += static_cast<double>(out[i]) * weights[i];
    return sum;
  }

 private:
  struct MicroBatch {
    std::int64_t first = 0, size = 0;
    std::vector<ValueInfo> input_infos;
    std::unique_ptr<PreparedLayer> prepared;
    AlignedBuffer saved, output, partial;
    std::vector<AlignedBuffer> staged;
    std::vector<Tensor> staged_views;
  };

  static const BlockedLayout* blocked(const ValueInfo& info) { return info.blocked.get(); }

  static Shape with_batch(Shape shape, std::int64_t batch) {
    shape[0] = batch;
    return shape;
  }

  Tensor output_view(MicroBatch& mb) const {
    return Tensor{reinterpret_cast<float*>(mb.output.data()), mb.prepared->output.shape, blocked(mb.prepared->output)};
  }

  // The reduction over every micro-batch's partial, in micro-batch order.
  void reduce(bool backward, std::span<const Tensor> param_views, std::span<const Tensor> buffer_views) {
    std::vector<std::byte*> partials;
    std::vector<std::int64_t> sizes;
    for (MicroBatch& mb : micro_batches_) {
      partials.push_back(mb.partial.data());
      sizes.push_back(mb.size);
    }
    ReduceArgs args;
    args.partials = partials;
    args.micro_batch_sizes = sizes;
    args.batch = batch_.data();
    args.params = param_views;
    args.buffers = buffer_views;
    const PreparedLayer& layer = prepared();
    if (backward) {
      layer.reduce_backward(args);
    } else {
      layer.reduce_forward(args);
    }
  }

  static AlignedBuffer poisoned(std::size_t bytes) {
    AlignedBuffer buffer(bytes);
    float* p = reinterpret_cast<float*>(buffer.data());
    std::fill(p, p + bytes / sizeof(float), std::numeric_limits<float>::quiet_NaN());
    return buffer;
  }

  static std::vector<Tensor> param_tensors(std::vector<std::vector<float>>& data, const std::vector<ParameterSpec>& specs) {
    std::vector<Tensor> views;
    for (std::size_t i = 0; i < data.size(); ++i) views.push_back(Tensor{data[i].data(), specs[i].shape, nullptr});
    return views;
  }

  void stage_inputs(MicroBatch& mb) {
    mb.staged.clear();
    mb.staged_views.clear();
    for (std::size_t i = 0; i < specs_.size(); ++i) {
      const Shape shape = with_batch(specs_[i].shape, mb.size);
      const std::size_t sample = static_cast<std::size_t>(specs_[i].shape.elements() / specs_[i].shape[0]);
      const auto begin = inputs[i].begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(mb.first) * sample);
      const std::vector<float> slice(begin, begin + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(mb.size) * sample));
      const Tensor like{nullptr, shape, blocked(mb.input_infos[i])};
      mb.staged.push_back(from_plain(slice, like));
    }
    for (std::size_t i = 0; i < specs_.size(); ++i) {
      mb.staged_views.push_back(Tensor{reinterpret_cast<float*>(mb.staged[i].data()), with_batch(specs_[i].shape, mb.size),
                                       blocked(mb.input_infos[i])});
    }
  }

  // A copy of plain data in the layout of `like` (zero padding for blocked layouts).
  AlignedBuffer from_plain(const std::vector<float>& plain, const Tensor& like) {
    AlignedBuffer buffer(like.bytes());
    if (like.is_plain()) {
      std::memcpy(buffer.data(), plain.data(), plain.size() * sizeof(float));
      return buffer;
    }
    reorder(dnnl_util::plain_desc(like.shape), plain.data(), like.blocked->desc, buffer.data());
    return buffer;
  }

  std::vector<float> to_plain(const Tensor& t) {
    std::vector<float> plain(static_cast<std::size_t>(t.elements()));
    if (t.is_plain()) {
      std::memcpy(plain.data(), t.data, plain.size() * sizeof(float));
      return plain;
    }
    reorder(t.blocked->desc, t.data, dnnl_util::plain_desc(t.shape), plain.data());
    return plain;
  }

  void reorder(const dnnl::memory::desc& from_desc, const void* from, const dnnl::memory::desc& to_desc, void* to) {
    const dnnl::reorder primitive(dnnl::reorder::primitive_desc(engine_, from_desc, engine_, to_desc));
    dnnl_util::PrimitiveArguments(engine_, "test harness reorder")
        .add(DNNL_ARG_FROM, from_desc, from)
        .add(DNNL_ARG_TO, to_desc, to)
        .execute(primitive, stream_);
    stream_.wait();
  }

  const Layer& layer_;
  std::vector<HarnessInput> specs_;
  Mode mode_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  Shape output_shape_;
  std::vector<ParameterSpec> param_specs_, buffer_specs_;
  std::vector<char> needs_grad_;
  std::vector<MicroBatch> micro_batches_;
  std::size_t batch_bytes_ = 0;
  AlignedBuffer batch_;
};

inline std::vector<float> random_weights(std::size_t n, unsigned seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<float> w(n);
  for (float& x : w) x = value(random);
  return w;
}

// Every element finite, and each close to the reference: |a - r| <= tolerance * (1 + |r|).
inline void expect_close(const std::vector<float>& actual, const std::vector<double>& reference, double tolerance,
                         const std::string& what) {
  ASSERT_EQ(actual.size(), reference.size()) << what;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    ASSERT_TRUE(std::isfinite(actual[i])) << what << "[" << i << "] is " << actual[i];
    ASSERT_LE(std::fabs(actual[i] - reference[i]), tolerance * (1.0 + std::fabs(reference[i])))
        << what << "[" << i << "]: got " << actual[i] << ", reference " << reference[i];
  }
}

struct GradcheckOptions {
  float step = 1e-2f;
  // |analytic - numeric| <= tolerance * scale + absolute, where scale is the largest
  // |numeric| among the checked elements of that tensor: each tensor is held to its own
  // gradient's size, so a small tensor's error cannot hide under a large one's.
  // Measured over every layer test (float forward, step 1e-2, each instruction set): the
  // largest error is 3.6e-4 of its tensor's scale, and 1.1e-5 absolute (AVX2) where a
  // gradient is zero in exact arithmetic (a bias under softmax, layer norm over one
  // feature): the rounding of L over the step. About 4x headroom.
  double tolerance = 1.5e-3;
  double absolute = 5e-5;
  // Tensors of up to 64 elements are checked whole; of a larger one the first, the last
  // and this many others (seeded, distinct).
  int samples_per_tensor = 32;
};

// Which elements of a tensor of n elements the finite-difference checks visit.
inline std::vector<std::size_t> gradcheck_elements(std::size_t n, int samples, std::mt19937& random) {
  std::vector<std::size_t> chosen;
  if (n <= 64 || n <= static_cast<std::size_t>(samples) + 2) {
    for (std::size_t i = 0; i < n; ++i) chosen.push_back(i);
    return chosen;
  }
  chosen = {0, n - 1};
  std::uniform_int_distribution<std::size_t> pick(1, n - 2);
  while (chosen.size() < static_cast<std::size_t>(samples) + 2) {
    const std::size_t i = pick(random);
    if (std::find(chosen.begin(), chosen.end(), i) == chosen.end()) chosen.push_back(i);
  }
  return chosen;
}

// Compares backward() with central differences of L = sum(output * R) (the difference
// taken in double, over the float steps actually taken), at the elements above of every
// input that needs a gradient and of every parameter. Prints each tensor's largest error
// relative to its scale.
inline void expect_gradients_match_finite_differences(LayerHarness& harness, const GradcheckOptions& options = {}) {
  const std::vector<float> weights = random_weights(static_cast<std::size_t>(harness.output_shape().elements()), 17);
  harness.forward();
  const LayerHarness::Gradients analytic = harness.backward(weights);

  std::mt19937 random(23);
  auto check = [&](std::vector<float>& values, const std::vector<float>& gradient, const std::string& name) {
    ASSERT_EQ(values.size(), gradient.size()) << name;
    const std::vector<std::size_t> chosen = gradcheck_elements(values.size(), options.samples_per_tensor, random);
    std::vector<double> numeric;
    double scale = 0.0;
    for (std::size_t index : chosen) {
      const float original = values[index];
      values[index] = original + options.step;
      const double plus_value = values[index];
      const double plus = harness.weighted_sum(weights);
      values[index] = original - options.step;
      const double minus_value = values[index];
      const double minus = harness.weighted_sum(weights);
      values[index] = original;
      numeric.push_back((plus - minus) / (plus_value - minus_value));
      scale = std::max(scale, std::fabs(numeric.back()));
    }
    double worst = 0.0;
    for (std::size_t k = 0; k < chosen.size(); ++k) {
      const float got = gradient[chosen[k]];
      ASSERT_TRUE(std::isfinite(got)) << name << "[" << chosen[k] << "] is " << got;
      worst = std::max(worst, std::fabs(got - numeric[k]));
      EXPECT_NEAR(got, numeric[k], options.tolerance * scale + options.absolute)
          << "d L / d " << name << "[" << chosen[k] << "] (scale of " << name << "'s gradient: " << scale << ")";
    }
    std::printf("gradcheck %-12s %3zu of %5zu elements: scale %.3g, max error %.3g (%.3g of the scale)\n", name.c_str(), chosen.size(),
                values.size(), scale, worst, scale > 0.0 ? worst / scale : 0.0);
  };
  for (std::size_t i = 0; i < harness.inputs.size(); ++i) {
    if (!analytic.inputs[i].empty()) check(harness.inputs[i], analytic.inputs[i], "input" + std::to_string(i));
  }
  for (std::size_t i = 0; i < harness.params.size(); ++i) {
    check(harness.params[i], analytic.params[i], harness.parameter_specs()[i].name);
  }
}

// Parameter gradients with accumulate set are the earlier ones plus the new ones.
inline void expect_parameter_gradients_accumulate(LayerHarness& harness) {
  const std::vector<float> weights = random_weights(static_cast<std::size_t>(harness.output_shape().elements()), 29);
  harness.forward();
  const LayerHarness::Gradients once = harness.backward(weights);
  harness.forward();
  const LayerHarness::Gradients twice = harness.backward(weights, true, &once.params);
  for (std::size_t p = 0; p < once.params.size(); ++p) {
    for (std::size_t i = 0; i < once.params[p].size(); ++i) {
      ASSERT_NEAR(twice.params[p][i], 2.0f * once.params[p][i], 1e-5f * (1.0f + std::fabs(once.params[p][i])))
          << harness.parameter_specs()[p].name << "[" << i << "]";
    }
  }
}

}  // namespace ember::testing
