#include "engine/executor.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <string>

#include "engine/error.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

constexpr std::size_t no_tensor = std::numeric_limits<std::size_t>::max();
constexpr int max_layer_inputs = 8;
constexpr int max_layer_params = 8;

enum class OpKind { forward, reorder_to_plain, loss, backward, reorder_grad_to_blocked };

struct Op {
  OpKind kind;
  int index;  // node for forward/backward, slot for reorders
};

// Runs `body` with at most `threads` OpenMP threads, each with the nested thread budget
// set to 1, so oneDNN primitives called inside run on the calling thread only. The ICV
// set here is per implicit task: nothing outside this region changes.
template <class Body>
void parallel_region(int threads, Body&& body) {
#pragma omp parallel num_threads(threads)
  {
    omp_set_num_threads(1);
    body(omp_get_thread_num(), omp_get_num_threads());
  }
}

}  // namespace

// A slot is a tensor of the step seen by layers: a graph value, or a plain copy of a
// value that stays in a blocked oneDNN layout but is read by a layer that needs plain
// row-major data (or by the loss).
struct Executor::CompiledStep {
  std::int64_t micro_batch = 0;
  Mode mode = Mode::inference;

  std::vector<std::unique_ptr<PreparedLayer>> layers;  // per node
  std::vector<ValueInfo> slots;
  std::vector<int> copy_of;                   // per slot: the blocked slot it copies, or -1
  std::vector<int> plain_copy;                // per slot: its plain copy, or -1
  std::vector<dnnl::reorder> to_plain;        // per slot with a copy (indexed by copy slot)
  std::vector<dnnl::reorder> grad_to_blocked; // likewise
  std::vector<dnnl::memory::desc> plain_desc; // likewise
  std::vector<std::vector<int>> input_slots;  // per node
  std::vector<int> output_slot;               // per node
  int loss_slot = -1;
  std::vector<char> requires_grad;            // per slot
  std::vector<char> runs_backward;            // per node
  std::vector<int> gradient_writers;          // per slot

  std::vector<std::size_t> value_offset, grad_offset, partial_offset;               // per slot
  std::vector<std::size_t> saved_offset, forward_scratch_offset, backward_scratch_offset;  // per node
  std::vector<Op> ops;
  StepPlanReport report;
};

// Everything one micro-batch run needs besides the compiled step.
struct Executor::MicroBatchRun {
  const float* input = nullptr;
  std::int64_t first_sample = 0;
  float* gradients = nullptr;  // the lane's gradient block (training)
  bool accumulate = false;
  const Loss* loss = nullptr;
  const Targets* targets = nullptr;
  float grad_scale = 1.0f;
  CounterRandom random;
  float* output = nullptr;  // where to copy the model output, if anywhere
};

struct Executor::ThreadState {
  AlignedBuffer arena;
  std::unique_ptr<dnnl::stream> stream;
  std::vector<char> grad_written;
};

Executor::Executor(const Graph& graph, ParameterStore& parameters, ExecutorOptions options)
    : graph_(graph), parameters_(parameters), options_(options) {
  if (options_.threads < 1 || options_.threads > 64) {
    throw Error("thread count must be between 1 and 64, found " + std::to_string(options_.threads));
  }
  if (options_.micro_batch < 1) {
    throw Error("micro-batch size must be at least 1, found " + std::to_string(options_.micro_batch));
  }
  options_.gradient_lanes = std::max(options_.gradient_lanes, options_.threads);
  engine_ = std::make_unique<dnnl::engine>(dnnl::engine::kind::cpu, 0);
}

Executor::~Executor() = default;

std::int64_t Executor::output_sample_elements() const { return graph_.value_shape(graph_.output()).sample_elements(); }

Shape Executor::output_shape(std::int64_t batch) const { return graph_.value_shape(graph_.output()).with_batch(batch); }

std::vector<std::int64_t> Executor::micro_batch_sizes(std::int64_t batch) const {
  std::vector<std::int64_t> sizes;
  for (std::int64_t start = 0; start < batch; start += options_.micro_batch) {
    sizes.push_back(std::min(options_.micro_batch, batch - start));
  }
  return sizes;
}

const Executor::CompiledStep& Executor::compiled(std::int64_t micro_batch, Mode mode) {
  for (const auto& c : compiled_) {
    if (c->micro_batch == micro_batch && c->mode == mode) return *c;
  }
  auto step = std::make_unique<CompiledStep>();
  CompiledStep& s = *step;
  s.micro_batch = micro_batch;
  s.mode = mode;
  const bool training = mode == Mode::training;
  const auto& nodes = graph_.nodes();
  const int value_count = graph_.value_count();

  s.slots.resize(static_cast<std::size_t>(value_count));
  s.copy_of.assign(static_cast<std::size_t>(value_count), -1);
  s.plain_copy.assign(static_cast<std::size_t>(value_count), -1);
  s.requires_grad.assign(static_cast<std::size_t>(value_count), 0);
  s.slots[0].shape = graph_.value_shape(graph_.input()).with_batch(micro_batch);

  auto plain_slot_for = [&](int slot) -> int {
    if (!s.slots[static_cast<std::size_t>(slot)].blocked) return slot;
    if (s.plain_copy[static_cast<std::size_t>(slot)] >= 0) return s.plain_copy[static_cast<std::size_t>(slot)];
    const int copy = static_cast<int>(s.slots.size());
    ValueInfo info;
    info.shape = s.slots[static_cast<std::size_t>(slot)].shape;
    s.slots.push_back(info);
    s.copy_of.push_back(slot);
    s.plain_copy.push_back(-1);
    s.requires_grad.push_back(s.requires_grad[static_cast<std::size_t>(slot)]);
    s.plain_copy[static_cast<std::size_t>(slot)] = copy;
    return copy;
  };

  // Prepare every layer with the 1-thread budget it will run under.
  s.layers.resize(nodes.size());
  s.input_slots.resize(nodes.size());
  s.output_slot.resize(nodes.size());
  s.runs_backward.assign(nodes.size(), 0);
  std::string failure;
  parallel_region(1, [&](int, int) {
    try {
      for (std::size_t n = 0; n < nodes.size(); ++n) {
        const Node& node = nodes[n];
        std::vector<ValueInfo> inputs;
        std::vector<char> needs_grad;
        bool any_grad = false;
        for (ValueId v : node.inputs) {
          const int slot = node.layer->accepts_blocked_inputs() ? v : plain_slot_for(v);
          s.input_slots[n].push_back(slot);
          inputs.push_back(s.slots[static_cast<std::size_t>(slot)]);
          const bool g = training && s.requires_grad[static_cast<std::size_t>(slot)];
          needs_grad.push_back(g ? 1 : 0);
          any_grad = any_grad || g;
        }
        PrepareContext context;
        context.mode = mode;
        context.inputs = inputs;
        context.input_needs_grad = needs_grad;
        context.engine = engine_.get();
        try {
          s.layers[n] = node.layer->prepare(context);
        } catch (const dnnl::error& e) {
          throw Error("oneDNN could not prepare it: " + std::string(e.what()));
        }
        const bool has_params = !parameters_.node_entries(static_cast<int>(n)).empty();
        s.runs_backward[n] = training && (has_params || any_grad);
        s.output_slot[n] = node.output;
        s.slots[static_cast<std::size_t>(node.output)] = s.layers[n]->output;
        s.requires_grad[static_cast<std::size_t>(node.output)] = training && (has_params || any_grad);
      }
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  if (!failure.empty()) throw Error("preparing the model at micro-batch " + std::to_string(micro_batch) + ": " + failure);
  s.loss_slot = plain_slot_for(graph_.output());

  const std::size_t slot_count = s.slots.size();
  s.to_plain.resize(slot_count);
  s.grad_to_blocked.resize(slot_count);
  s.plain_desc.resize(slot_count);
  for (std::size_t c = 0; c < slot_count; ++c) {
    const int from = s.copy_of[c];
    if (from < 0) continue;
    const dnnl::memory::desc& blocked = *s.slots[static_cast<std::size_t>(from)].blocked;
    dnnl::memory::dims dims(s.slots[c].shape.dims().begin(), s.slots[c].shape.dims().end());
    dnnl::memory::dims strides(dims.size(), 1);
    for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) strides[static_cast<std::size_t>(i)] = strides[static_cast<std::size_t>(i) + 1] * dims[static_cast<std::size_t>(i) + 1];
    s.plain_desc[c] = dnnl::memory::desc(dims, dnnl::memory::data_type::f32, strides);
    s.to_plain[c] = dnnl::reorder(dnnl::reorder::primitive_desc(*engine_, blocked, *engine_, s.plain_desc[c]));
    if (training) {
      s.grad_to_blocked[c] = dnnl::reorder(dnnl::reorder::primitive_desc(*engine_, s.plain_desc[c], *engine_, blocked));
    }
  }

  // Who writes each slot's gradient: consumers that run backward, the loss, and for a
  // blocked slot the reorder of its plain copy's gradient.
  s.gradient_writers.assign(slot_count, 0);
  if (training) {
    for (std::size_t n = 0; n < nodes.size(); ++n) {
      if (!s.runs_backward[n]) continue;
      for (int slot : s.input_slots[n]) {
        if (s.requires_grad[static_cast<std::size_t>(slot)]) ++s.gradient_writers[static_cast<std::size_t>(slot)];
      }
    }
    ++s.gradient_writers[static_cast<std::size_t>(s.loss_slot)];
    for (std::size_t c = 0; c < slot_count; ++c) {
      if (s.copy_of[c] >= 0 && s.requires_grad[c]) ++s.gradient_writers[static_cast<std::size_t>(s.copy_of[c])];
    }
  }

  // The op sequence.
  for (std::size_t n = 0; n < nodes.size(); ++n) {
    s.ops.push_back({OpKind::forward, static_cast<int>(n)});
    const int out = s.output_slot[n];
    if (s.plain_copy[static_cast<std::size_t>(out)] >= 0) {
      s.ops.push_back({OpKind::reorder_to_plain, s.plain_copy[static_cast<std::size_t>(out)]});
    }
  }
  s.ops.push_back({OpKind::loss, s.loss_slot});
  if (training) {
    for (std::size_t i = nodes.size(); i-- > 0;) {
      const int out = s.output_slot[i];
      const int copy = s.plain_copy[static_cast<std::size_t>(out)];
      if (copy >= 0 && s.requires_grad[static_cast<std::size_t>(copy)]) {
        s.ops.push_back({OpKind::reorder_grad_to_blocked, copy});
      }
      if (s.runs_backward[i]) s.ops.push_back({OpKind::backward, static_cast<int>(i)});
    }
  }

  // Tensors and lifetimes.
  std::vector<TensorLifetime>& tensors = s.report.tensors;
  auto add_tensor = [&](std::string name, std::size_t bytes) -> int {
    if (bytes == 0) return -1;
    tensors.push_back({std::move(name), bytes, std::numeric_limits<int>::max(), -1});
    return static_cast<int>(tensors.size()) - 1;
  };
  auto slot_name = [&](std::size_t slot) {
    if (slot == 0) return std::string("input");
    if (s.copy_of[slot] >= 0) {
      return nodes[static_cast<std::size_t>(graph_.producer(s.copy_of[slot]))].name + ".plain";
    }
    return nodes[static_cast<std::size_t>(graph_.producer(static_cast<ValueId>(slot)))].name;
  };
  std::vector<int> value_tensor(slot_count, -1), grad_tensor(slot_count, -1), partial_tensor(slot_count, -1);
  // A pointwise layer may write its output over its input when nothing else reads that
  // input later: the two slots then share one tensor (its lifetime is the union).
  std::vector<int> readers(slot_count, 0);
  for (const auto& slots : s.input_slots) {
    for (int slot : slots) ++readers[static_cast<std::size_t>(slot)];
  }
  ++readers[static_cast<std::size_t>(s.loss_slot)];
  auto in_place_input = [&](std::size_t slot) -> int {
    if (s.copy_of[slot] >= 0) return -1;
    const auto n = static_cast<std::size_t>(graph_.producer(static_cast<ValueId>(slot)));
    const PreparedLayer& layer = *s.layers[n];
    if (!layer.can_run_in_place || s.input_slots[n].size() != 1) return -1;
    const auto input = static_cast<std::size_t>(s.input_slots[n][0]);
    if (input == 0 || s.copy_of[input] >= 0 || readers[input] != 1) return -1;
    if (s.slots[input].bytes() != s.slots[slot].bytes()) return -1;
    if (training) {
      // Backward must not need the overwritten input, neither this layer's nor its producer's.
      const auto producer = static_cast<std::size_t>(graph_.producer(static_cast<ValueId>(input)));
      if (layer.backward_reads_inputs || s.layers[producer]->backward_reads_output) return -1;
    }
    return static_cast<int>(input);
  };
  for (std::size_t slot = 1; slot < slot_count; ++slot) {
    const int shared = in_place_input(slot);
    value_tensor[slot] = shared >= 0 ? value_tensor[static_cast<std::size_t>(shared)]
                                     : add_tensor(slot_name(slot), s.slots[slot].bytes());
    if (training && s.requires_grad[slot]) {
      grad_tensor[slot] = add_tensor(slot_name(slot) + ".grad", s.slots[slot].bytes());
      if (s.gradient_writers[slot] > 1) partial_tensor[slot] = add_tensor(slot_name(slot) + ".grad_partial", s.slots[slot].bytes());
    }
  }
  std::vector<int> saved_tensor(nodes.size()), forward_scratch_tensor(nodes.size()), backward_scratch_tensor(nodes.size());
  for (std::size_t n = 0; n < nodes.size(); ++n) {
    saved_tensor[n] = training ? add_tensor(nodes[n].name + ".saved", s.layers[n]->saved_bytes) : -1;
    forward_scratch_tensor[n] = add_tensor(nodes[n].name + ".scratch", s.layers[n]->forward_scratch_bytes);
    backward_scratch_tensor[n] = training ? add_tensor(nodes[n].name + ".backward_scratch", s.layers[n]->backward_scratch_bytes) : -1;
  }
  auto touch = [&](int tensor, int position) {
    if (tensor < 0) return;
    auto& t = tensors[static_cast<std::size_t>(tensor)];
    t.first_use = std::min(t.first_use, position);
    t.last_use = std::max(t.last_use, position);
  };
  for (std::size_t p = 0; p < s.ops.size(); ++p) {
    const Op op = s.ops[p];
    const int pos = static_cast<int>(p);
    switch (op.kind) {
      case OpKind::forward: {
        const auto n = static_cast<std::size_t>(op.index);
        for (int slot : s.input_slots[n]) touch(value_tensor[static_cast<std::size_t>(slot)], pos);
        touch(value_tensor[static_cast<std::size_t>(s.output_slot[n])], pos);
        touch(saved_tensor[n], pos);
        touch(forward_scratch_tensor[n], pos);
        break;
      }
      case OpKind::reorder_to_plain:
        touch(value_tensor[static_cast<std::size_t>(op.index)], pos);
        touch(value_tensor[static_cast<std::size_t>(s.copy_of[static_cast<std::size_t>(op.index)])], pos);
        break;
      case OpKind::loss:
        touch(value_tensor[static_cast<std::size_t>(op.index)], pos);
        touch(grad_tensor[static_cast<std::size_t>(op.index)], pos);
        touch(partial_tensor[static_cast<std::size_t>(op.index)], pos);
        break;
      case OpKind::backward: {
        const auto n = static_cast<std::size_t>(op.index);
        const auto out = static_cast<std::size_t>(s.output_slot[n]);
        touch(grad_tensor[out], pos);
        if (s.layers[n]->backward_reads_output) touch(value_tensor[out], pos);
        for (int slot : s.input_slots[n]) {
          if (s.layers[n]->backward_reads_inputs) touch(value_tensor[static_cast<std::size_t>(slot)], pos);
          touch(grad_tensor[static_cast<std::size_t>(slot)], pos);
          touch(partial_tensor[static_cast<std::size_t>(slot)], pos);
        }
        touch(saved_tensor[n], pos);
        touch(backward_scratch_tensor[n], pos);
        break;
      }
      case OpKind::reorder_grad_to_blocked: {
        const auto c = static_cast<std::size_t>(op.index);
        const auto from = static_cast<std::size_t>(s.copy_of[c]);
        touch(grad_tensor[c], pos);
        touch(grad_tensor[from], pos);
        touch(partial_tensor[from], pos);
        break;
      }
    }
  }
  // The output is copied out after the last op.
  touch(value_tensor[static_cast<std::size_t>(s.loss_slot)], static_cast<int>(s.ops.size()));
  for (auto& t : tensors) {
    if (t.last_use < 0) t.first_use = t.last_use = 0;  // never touched: keep it valid
  }

  s.report.plan = plan_memory(tensors, options_.plan_strategy);
#ifndef NDEBUG
  validate_memory_plan(tensors, s.report.plan);
#endif
  auto offset_of = [&](int tensor) { return tensor < 0 ? no_tensor : s.report.plan.offsets[static_cast<std::size_t>(tensor)]; };
  s.value_offset.resize(slot_count);
  s.grad_offset.resize(slot_count);
  s.partial_offset.resize(slot_count);
  for (std::size_t slot = 0; slot < slot_count; ++slot) {
    s.value_offset[slot] = offset_of(value_tensor[slot]);
    s.grad_offset[slot] = offset_of(grad_tensor[slot]);
    s.partial_offset[slot] = offset_of(partial_tensor[slot]);
  }
  s.saved_offset.resize(nodes.size());
  s.forward_scratch_offset.resize(nodes.size());
  s.backward_scratch_offset.resize(nodes.size());
  for (std::size_t n = 0; n < nodes.size(); ++n) {
    s.saved_offset[n] = offset_of(saved_tensor[n]);
    s.forward_scratch_offset[n] = offset_of(forward_scratch_tensor[n]);
    s.backward_scratch_offset[n] = offset_of(backward_scratch_tensor[n]);
  }
  compiled_.push_back(std::move(step));
  return *compiled_.back();
}

StepPlanReport Executor::plan_report(std::int64_t micro_batch, Mode mode) { return compiled(micro_batch, mode).report; }

void Executor::prepare_threads(std::size_t arena_bytes) {
  while (threads_.size() < static_cast<std::size_t>(options_.threads)) {
    auto state = std::make_unique<ThreadState>();
    state->stream = std::make_unique<dnnl::stream>(*engine_);
    threads_.push_back(std::move(state));
  }
  for (auto& state : threads_) {
    if (state->arena.size() < arena_bytes) state->arena = AlignedBuffer(arena_bytes);
  }
}

namespace {

Tensor view(std::byte* base, std::size_t offset, const ValueInfo& info) {
  return Tensor{reinterpret_cast<float*>(base + offset), info.shape, info.blocked ? &*info.blocked : nullptr};
}

std::byte* at(std::byte* base, std::size_t offset) { return offset == no_tensor ? nullptr : base + offset; }

// The part of the targets that belongs to samples [first, first + count).
Targets slice_targets(const Targets& targets, std::int64_t first, std::int64_t count, std::int64_t sample_elements) {
  Targets part;
  if (!targets.labels.empty()) {
    part.labels = targets.labels.subspan(static_cast<std::size_t>(first), static_cast<std::size_t>(count));
  }
  if (targets.values != nullptr) part.values = targets.values + first * sample_elements;
  return part;
}

}  // namespace

StepResult Executor::run_micro_batch(const CompiledStep& s, ThreadState& thread, const MicroBatchRun& run) {
  std::byte* arena = thread.arena.data();
  dnnl::stream& stream = *thread.stream;
  const bool training = s.mode == Mode::training;

  auto slot_tensor = [&](int slot) {
    if (slot == 0) {
      return Tensor{const_cast<float*>(run.input), s.slots[0].shape, nullptr};
    }
    return view(arena, s.value_offset[static_cast<std::size_t>(slot)], s.slots[static_cast<std::size_t>(slot)]);
  };
  auto grad_tensor = [&](int slot) {
    return view(arena, s.grad_offset[static_cast<std::size_t>(slot)], s.slots[static_cast<std::size_t>(slot)]);
  };
  auto floats_of = [&](int slot) {
    return static_cast<std::int64_t>(s.slots[static_cast<std::size_t>(slot)].bytes() / sizeof(float));
  };
  // A gradient with several writers: the first writes the gradient buffer, the others
  // write the partial buffer and add it in.
  std::vector<char>& written = thread.grad_written;
  written.assign(s.slots.size(), 0);
  auto begin_grad = [&](int slot) -> Tensor {
    if (!written[static_cast<std::size_t>(slot)]) return grad_tensor(slot);
    return view(arena, s.partial_offset[static_cast<std::size_t>(slot)], s.slots[static_cast<std::size_t>(slot)]);
  };
  auto end_grad = [&](int slot) {
    if (written[static_cast<std::size_t>(slot)]) {
      float* grad = grad_tensor(slot).data;
      const float* partial = reinterpret_cast<const float*>(arena + s.partial_offset[static_cast<std::size_t>(slot)]);
      simd::elementwise_kernels().add(grad, grad, partial, floats_of(slot));
    }
    written[static_cast<std::size_t>(slot)] = 1;
  };
  auto memory = [&](const Tensor& t, const dnnl::memory::desc& desc) { return dnnl::memory(desc, *engine_, t.data); };

  StepResult result;
  result.samples = s.micro_batch;
  std::array<Tensor, max_layer_inputs> inputs{};
  std::array<Tensor, max_layer_inputs> input_grads{};
  std::array<Tensor, max_layer_params> params{};
  std::array<Tensor, max_layer_params> param_grads{};

  auto gather_params = [&](std::size_t n, bool with_grads) {
    const auto entries = parameters_.node_entries(static_cast<int>(n));
    for (std::size_t k = 0; k < entries.size(); ++k) {
      params[k] = parameters_.value(entries[k]);
      if (with_grads) {
        const ParameterEntry& e = parameters_.entries()[static_cast<std::size_t>(entries[k])];
        param_grads[k] = Tensor{run.gradients + e.offset, e.spec.shape, nullptr};
      }
    }
    return entries.size();
  };

  for (const Op& op : s.ops) {
    switch (op.kind) {
      case OpKind::forward: {
        const auto n = static_cast<std::size_t>(op.index);
        const auto& slots = s.input_slots[n];
        for (std::size_t k = 0; k < slots.size(); ++k) inputs[k] = slot_tensor(slots[k]);
        const std::size_t param_count = gather_params(n, false);
        ForwardArgs args;
        args.inputs = std::span<const Tensor>(inputs.data(), slots.size());
        args.output = slot_tensor(s.output_slot[n]);
        args.params = std::span<const Tensor>(params.data(), param_count);
        args.saved = at(arena, s.saved_offset[n]);
        args.scratch = at(arena, s.forward_scratch_offset[n]);
        args.stream = &stream;
        args.mode = s.mode;
        args.random = run.random.derive(n);
        args.first_sample = run.first_sample;
        s.layers[n]->forward(args);
        break;
      }
      case OpKind::reorder_to_plain: {
        const auto c = static_cast<std::size_t>(op.index);
        const int from = s.copy_of[c];
        const Tensor src = slot_tensor(from);
        const Tensor dst = slot_tensor(op.index);
        s.to_plain[c].execute(stream, {{DNNL_ARG_FROM, memory(src, *src.blocked)},
                                       {DNNL_ARG_TO, memory(dst, s.plain_desc[c])}});
        break;
      }
      case OpKind::loss: {
        const Tensor prediction = slot_tensor(op.index);
        if (run.output != nullptr) {
          std::memcpy(run.output + run.first_sample * prediction.shape.sample_elements(), prediction.data,
                      static_cast<std::size_t>(prediction.elements()) * sizeof(float));
        }
        if (run.loss == nullptr) break;
        const Targets part = slice_targets(*run.targets, run.first_sample, s.micro_batch, prediction.shape.sample_elements());
        Tensor grad{};
        if (training) grad = begin_grad(op.index);
        const LossResult loss = run.loss->compute(prediction, part, run.grad_scale, training ? grad.data : nullptr);
        if (training) end_grad(op.index);
        result.loss_sum = loss.loss_sum;
        result.correct = loss.correct;
        break;
      }
      case OpKind::backward: {
        const auto n = static_cast<std::size_t>(op.index);
        const int out = s.output_slot[n];
        if (!written[static_cast<std::size_t>(out)]) {
          // Nothing downstream produced a gradient (an unused branch): it is zero.
          std::memset(grad_tensor(out).data, 0, s.slots[static_cast<std::size_t>(out)].bytes());
          written[static_cast<std::size_t>(out)] = 1;
        }
        const auto& slots = s.input_slots[n];
        for (std::size_t k = 0; k < slots.size(); ++k) {
          inputs[k] = slot_tensor(slots[k]);
          input_grads[k] = s.requires_grad[static_cast<std::size_t>(slots[k])] ? begin_grad(slots[k]) : Tensor{};
        }
        const std::size_t param_count = gather_params(n, true);
        BackwardArgs args;
        args.inputs = std::span<const Tensor>(inputs.data(), slots.size());
        args.output = slot_tensor(out);
        args.output_grad = grad_tensor(out);
        args.input_grads = std::span<const Tensor>(input_grads.data(), slots.size());
        args.params = std::span<const Tensor>(params.data(), param_count);
        args.param_grads = std::span<const Tensor>(param_grads.data(), param_count);
        args.accumulate_param_grads = run.accumulate;
        args.saved = at(arena, s.saved_offset[n]);
        args.scratch = at(arena, s.backward_scratch_offset[n]);
        args.stream = &stream;
        s.layers[n]->backward(args);
        for (std::size_t k = 0; k < slots.size(); ++k) {
          if (s.requires_grad[static_cast<std::size_t>(slots[k])]) end_grad(slots[k]);
        }
        break;
      }
      case OpKind::reorder_grad_to_blocked: {
        const auto c = static_cast<std::size_t>(op.index);
        const int from = s.copy_of[c];
        if (!written[c]) break;  // no plain consumer produced a gradient
        const Tensor src = grad_tensor(op.index);
        const Tensor dst = begin_grad(from);
        s.grad_to_blocked[c].execute(stream, {{DNNL_ARG_FROM, memory(src, s.plain_desc[c])},
                                              {DNNL_ARG_TO, memory(dst, *s.slots[static_cast<std::size_t>(from)].blocked)}});
        end_grad(from);
        break;
      }
    }
  }
  stream.wait();
  return result;
}

StepResult Executor::run_batch(const float* input, std::int64_t batch, Mode mode, const Targets* targets, const Loss* loss,
                               std::uint64_t step_seed, float* output) {
  if (batch < 1) throw Error("batch size must be at least 1, found " + std::to_string(batch));
  if (input == nullptr) throw Error("no input given");
  if (targets != nullptr && !targets->labels.empty() && static_cast<std::int64_t>(targets->labels.size()) < batch) {
    throw Error("batch of " + std::to_string(batch) + " samples but only " + std::to_string(targets->labels.size()) +
                " labels");
  }
  const std::vector<std::int64_t> sizes = micro_batch_sizes(batch);
  const auto micro_count = static_cast<std::int64_t>(sizes.size());
  // Compile every size this batch needs before entering the parallel region.
  const CompiledStep* full = &compiled(sizes.front(), mode);
  const CompiledStep* last = &compiled(sizes.back(), mode);
  prepare_threads(std::max(full->report.plan.arena_bytes, last->report.plan.arena_bytes));

  const bool training = mode == Mode::training;
  const auto lanes = static_cast<std::int64_t>(std::min<std::int64_t>(options_.gradient_lanes, micro_count));
  if (training) {
    while (static_cast<std::int64_t>(extra_lanes_.size()) + 1 < lanes) {
      extra_lanes_.emplace_back(static_cast<std::size_t>(parameters_.total_floats()) * sizeof(float));
    }
  }
  auto lane_gradients = [&](std::int64_t lane) {
    return lane == 0 ? parameters_.gradients().data() : extra_lanes_[static_cast<std::size_t>(lane - 1)].floats();
  };

  std::vector<StepResult> results(static_cast<std::size_t>(micro_count));
  std::vector<std::string> failures(static_cast<std::size_t>(options_.threads));
  const CounterRandom random(step_seed);
  auto run_one = [&](std::int64_t j, int thread, std::int64_t lane, bool accumulate) {
    MicroBatchRun run;
    run.first_sample = j * options_.micro_batch;
    run.input = input + run.first_sample * graph_.input_sample_shape().elements();
    run.gradients = training ? lane_gradients(lane) : nullptr;
    run.accumulate = accumulate;
    run.loss = loss;
    run.targets = targets;
    run.grad_scale = 1.0f / static_cast<float>(batch);
    run.random = random;
    run.output = output;
    const CompiledStep& step = sizes[static_cast<std::size_t>(j)] == full->micro_batch ? *full : *last;
    results[static_cast<std::size_t>(j)] = run_micro_batch(step, *threads_[static_cast<std::size_t>(thread)], run);
  };
  const int threads = static_cast<int>(std::min<std::int64_t>(options_.threads, training ? lanes : micro_count));
  parallel_region(threads, [&](int thread, int thread_count) {
    try {
      if (training) {
        // Whole lanes per thread; within a lane, micro-batches in order.
        for (std::int64_t lane = thread; lane < lanes; lane += thread_count) {
          for (std::int64_t j = lane; j < micro_count; j += lanes) run_one(j, thread, lane, j != lane);
        }
      } else {
        for (std::int64_t j = thread; j < micro_count; j += thread_count) run_one(j, thread, 0, false);
      }
    } catch (const std::exception& e) {
      failures[static_cast<std::size_t>(thread)] = e.what();
    }
  });
  for (const std::string& f : failures) {
    if (!f.empty()) throw Error(f);
  }

  if (training && lanes > 1) {
    // Sum the lanes into lane 0 (the store's gradient block) in lane order, split by
    // parameter ranges across threads: the order per element never changes.
    const std::int64_t total = parameters_.total_floats();
    constexpr std::int64_t chunk = 16384;
    const std::int64_t chunks = (total + chunk - 1) / chunk;
    parallel_region(options_.threads, [&](int thread, int thread_count) {
      std::array<const float*, 64> lane_pointers{};
      for (std::int64_t c = thread; c < chunks; c += thread_count) {
        const std::int64_t begin = c * chunk;
        const std::int64_t n = std::min(chunk, total - begin);
        for (std::int64_t l = 0; l < lanes; ++l) lane_pointers[static_cast<std::size_t>(l)] = lane_gradients(l) + begin;
        simd::elementwise_kernels().sum_lanes(lane_gradients(0) + begin, lane_pointers.data(), lanes, n);
      }
    });
  }

  StepResult total;
  for (const StepResult& r : results) {
    total.loss_sum += r.loss_sum;
    total.correct += r.correct;
    total.samples += r.samples;
  }
  return total;
}

StepResult Executor::train_step(const float* input, std::int64_t batch, const Targets& targets, const Loss& loss,
                                std::uint64_t step_seed) {
  return run_batch(input, batch, Mode::training, &targets, &loss, step_seed, nullptr);
}

StepResult Executor::evaluate(const float* input, std::int64_t batch, const Targets& targets, const Loss& loss) {
  return run_batch(input, batch, Mode::inference, &targets, &loss, 0, nullptr);
}

void Executor::infer(const float* input, std::int64_t batch, float* output) {
  run_batch(input, batch, Mode::inference, nullptr, nullptr, 0, output);
}

}  // namespace ember
