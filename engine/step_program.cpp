#include "engine/step_program.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "engine/anomaly.h"
#include "engine/blocked_layout.h"
#include "engine/error.h"
#include "engine/threading.h"
#include "layers/dnnl_util.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

constexpr std::size_t no_tensor = std::numeric_limits<std::size_t>::max();
constexpr int max_layer_inputs = 8;
constexpr int max_layer_params = 8;

Tensor view(std::byte* base, std::size_t offset, const ValueInfo& info) {
  return Tensor{reinterpret_cast<float*>(base + offset), info.shape, info.blocked.get()};
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


StepProgram::StepProgram(const Graph& graph, const ParameterStore& parameters, std::int64_t micro_batch, Mode mode,
                         const dnnl::engine& engine, PlanStrategy strategy)
    : graph_(graph), parameters_(parameters), engine_(engine), micro_batch_(micro_batch), mode_(mode) {
  const bool training = mode == Mode::training;
  const auto& nodes = graph_.nodes();
  const int value_count = graph_.value_count();

  slots_.resize(static_cast<std::size_t>(value_count));
  copy_of_.assign(static_cast<std::size_t>(value_count), -1);
  plain_copy_.assign(static_cast<std::size_t>(value_count), -1);
  requires_grad_.assign(static_cast<std::size_t>(value_count), 0);
  slots_[0].shape = graph_.value_shape(graph_.input()).with_batch(micro_batch);

  auto plain_slot_for = [&](int slot) -> int {
    if (!slots_[static_cast<std::size_t>(slot)].blocked) return slot;
    if (plain_copy_[static_cast<std::size_t>(slot)] >= 0) return plain_copy_[static_cast<std::size_t>(slot)];
    const int copy = static_cast<int>(slots_.size());
    ValueInfo info;
    info.shape = slots_[static_cast<std::size_t>(slot)].shape;
    slots_.push_back(info);
    copy_of_.push_back(slot);
    plain_copy_.push_back(-1);
    requires_grad_.push_back(requires_grad_[static_cast<std::size_t>(slot)]);
    plain_copy_[static_cast<std::size_t>(slot)] = copy;
    return copy;
  };

  // Conv+ReLU fusion (inference): a layer that can apply a ReLU to its own output does
  // so when a ReLU is the only reader of that output; the ReLU node then runs nothing and
  // its output is the layer's.
  std::vector<int> graph_readers(static_cast<std::size_t>(value_count), 0);
  for (const Node& node : nodes) {
    for (ValueId v : node.inputs) ++graph_readers[static_cast<std::size_t>(v)];
  }
  ++graph_readers[static_cast<std::size_t>(graph_.output())];
  elided_.assign(nodes.size(), 0);
  std::vector<char> fuse_relu(nodes.size(), 0);
  if (!training) {
    for (std::size_t n = 0; n < nodes.size(); ++n) {
      const Node& node = nodes[n];
      if (!node.layer->is_relu() || node.inputs.size() != 1 || node.inputs[0] == graph_.input()) continue;
      const auto producer = static_cast<std::size_t>(graph_.producer(node.inputs[0]));
      if (graph_readers[static_cast<std::size_t>(node.inputs[0])] == 1 && nodes[producer].layer->fuses_following_relu()) {
        fuse_relu[producer] = 1;
        elided_[n] = 1;
        report_.fused.push_back(nodes[producer].name + "+" + node.name);
      }
    }
  }

  // Prepare every layer with the 1-thread budget it will run under.
  layers_.resize(nodes.size());
  input_slots_.resize(nodes.size());
  output_slot_.resize(nodes.size());
  runs_backward_.assign(nodes.size(), 0);
  std::string failure;
  parallel_region(1, [&](int, int) {
    try {
      for (std::size_t n = 0; n < nodes.size(); ++n) {
        const Node& node = nodes[n];
        if (elided_[n]) {
          input_slots_[n] = {node.inputs[0]};
          output_slot_[n] = node.output;
          slots_[static_cast<std::size_t>(node.output)] = slots_[static_cast<std::size_t>(node.inputs[0])];
          continue;
        }
        std::vector<ValueInfo> inputs;
        std::vector<char> needs_grad;
        bool any_grad = false;
        for (ValueId v : node.inputs) {
          const int slot = node.layer->accepts_blocked_inputs() ? v : plain_slot_for(v);
          input_slots_[n].push_back(slot);
          inputs.push_back(slots_[static_cast<std::size_t>(slot)]);
          const bool g = training && requires_grad_[static_cast<std::size_t>(slot)];
          needs_grad.push_back(g ? 1 : 0);
          any_grad = any_grad || g;
        }
        PrepareContext context;
        context.mode = mode;
        context.inputs = inputs;
        context.input_needs_grad = needs_grad;
        context.engine = &engine_;
        context.fuse_relu = fuse_relu[n] != 0;
        try {
          layers_[n] = node.layer->prepare(context);
        } catch (const dnnl::error& e) {
          throw Error("oneDNN could not prepare it: " + std::string(e.what()));
        }
        const bool has_params = !parameters_.node_entries(static_cast<int>(n)).empty();
        runs_backward_[n] = training && (has_params || any_grad);
        output_slot_[n] = node.output;
        slots_[static_cast<std::size_t>(node.output)] = layers_[n]->output;
        requires_grad_[static_cast<std::size_t>(node.output)] = training && (has_params || any_grad);
      }
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  if (!failure.empty()) throw Error("preparing the model at micro-batch " + std::to_string(micro_batch) + ": " + failure);
  loss_slot_ = plain_slot_for(graph_.output());

  const std::size_t slot_count = slots_.size();
  to_plain_.resize(slot_count);
  grad_to_blocked_.resize(slot_count);
  plain_desc_.resize(slot_count);
  for (std::size_t c = 0; c < slot_count; ++c) {
    const int from = copy_of_[c];
    if (from < 0) continue;
    const dnnl::memory::desc& blocked = slots_[static_cast<std::size_t>(from)].blocked->desc;
    dnnl::memory::dims dims(slots_[c].shape.dims().begin(), slots_[c].shape.dims().end());
    dnnl::memory::dims strides(dims.size(), 1);
    for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) strides[static_cast<std::size_t>(i)] = strides[static_cast<std::size_t>(i) + 1] * dims[static_cast<std::size_t>(i) + 1];
    plain_desc_[c] = dnnl::memory::desc(dims, dnnl::memory::data_type::f32, strides);
    to_plain_[c] = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, blocked, engine_, plain_desc_[c]));
    if (training) {
      grad_to_blocked_[c] = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, plain_desc_[c], engine_, blocked));
    }
  }

  // Who writes each slot's gradient: consumers that run backward, the loss, and for a
  // blocked slot the reorder of its plain copy's gradient.
  gradient_writers_.assign(slot_count, 0);
  if (training) {
    for (std::size_t n = 0; n < nodes.size(); ++n) {
      if (!runs_backward_[n]) continue;
      for (int slot : input_slots_[n]) {
        if (requires_grad_[static_cast<std::size_t>(slot)]) ++gradient_writers_[static_cast<std::size_t>(slot)];
      }
    }
    ++gradient_writers_[static_cast<std::size_t>(loss_slot_)];
    for (std::size_t c = 0; c < slot_count; ++c) {
      if (copy_of_[c] >= 0 && requires_grad_[c]) ++gradient_writers_[static_cast<std::size_t>(copy_of_[c])];
    }
  }

  // The op sequence.
  for (std::size_t n = 0; n < nodes.size(); ++n) {
    if (!elided_[n]) ops_.push_back({OpKind::forward, static_cast<int>(n)});
    const int out = output_slot_[n];
    if (plain_copy_[static_cast<std::size_t>(out)] >= 0) {
      ops_.push_back({OpKind::reorder_to_plain, plain_copy_[static_cast<std::size_t>(out)]});
    }
  }
  ops_.push_back({OpKind::loss, loss_slot_});
  if (training) {
    for (std::size_t i = nodes.size(); i-- > 0;) {
      const int out = output_slot_[i];
      const int copy = plain_copy_[static_cast<std::size_t>(out)];
      if (copy >= 0 && requires_grad_[static_cast<std::size_t>(copy)]) {
        ops_.push_back({OpKind::reorder_grad_to_blocked, copy});
      }
      if (runs_backward_[i]) ops_.push_back({OpKind::backward, static_cast<int>(i)});
    }
  }

  // Tensors and lifetimes.
  std::vector<TensorLifetime>& tensors = report_.tensors;
  auto add_tensor = [&](std::string name, std::size_t bytes, const ValueInfo* value = nullptr) -> int {
    if (bytes == 0) return -1;
    tensors.push_back({std::move(name), bytes, std::numeric_limits<int>::max(), -1});
    report_.shapes.push_back(value == nullptr ? "-" : value->shape.str() + (value->blocked ? " blocked" : ""));
    return static_cast<int>(tensors.size()) - 1;
  };
  auto slot_name = [&](std::size_t slot) {
    if (slot == 0) return std::string("input");
    if (copy_of_[slot] >= 0) {
      return nodes[static_cast<std::size_t>(graph_.producer(copy_of_[slot]))].name + ".plain";
    }
    return nodes[static_cast<std::size_t>(graph_.producer(static_cast<ValueId>(slot)))].name;
  };
  std::vector<int> value_tensor(slot_count, -1), grad_tensor(slot_count, -1);
  std::vector<std::vector<int>> partial_tensors(slot_count);
  // A pointwise layer may write its output over its input when nothing else reads that
  // input later: the two slots then share one tensor (its lifetime is the union).
  std::vector<int> readers(slot_count, 0);
  for (const auto& slots : input_slots_) {
    for (int slot : slots) ++readers[static_cast<std::size_t>(slot)];
  }
  ++readers[static_cast<std::size_t>(loss_slot_)];
  auto in_place_input = [&](std::size_t slot) -> int {
    if (copy_of_[slot] >= 0) return -1;
    const auto n = static_cast<std::size_t>(graph_.producer(static_cast<ValueId>(slot)));
    if (elided_[n]) return input_slots_[n][0];  // a fused ReLU: its output is its input
    const PreparedLayer& layer = *layers_[n];
    if (!layer.can_run_in_place) return -1;
    for (int candidate : input_slots_[n]) {
      const auto input = static_cast<std::size_t>(candidate);
      if (input == 0 || copy_of_[input] >= 0 || readers[input] != 1) continue;
      if (slots_[input].bytes() != slots_[slot].bytes()) continue;
      if (training) {
        // Backward must not need the overwritten input, neither this layer's nor its producer's.
        const auto producer = static_cast<std::size_t>(graph_.producer(static_cast<ValueId>(input)));
        if (layer.backward_reads_inputs || elided_[producer] || layers_[producer]->backward_reads_output) continue;
      }
      return candidate;
    }
    return -1;
  };
  for (std::size_t slot = 1; slot < slot_count; ++slot) {
    const int shared = in_place_input(slot);
    value_tensor[slot] = shared >= 0 ? value_tensor[static_cast<std::size_t>(shared)]
                                     : add_tensor(slot_name(slot), slots_[slot].bytes(), &slots_[slot]);
    if (training && requires_grad_[slot]) {
      grad_tensor[slot] = add_tensor(slot_name(slot) + ".grad", slots_[slot].bytes(), &slots_[slot]);
      if (gradient_writers_[slot] > 1) {
        // One partial buffer per occurrence of the slot among one layer's inputs (add(x, x)
        // writes two gradients of x at once).
        int occurrences = 1;
        for (const auto& slots : input_slots_) {
          occurrences = std::max(occurrences, static_cast<int>(std::count(slots.begin(), slots.end(), static_cast<int>(slot))));
        }
        for (int k = 0; k < occurrences; ++k) {
          partial_tensors[slot].push_back(add_tensor(slot_name(slot) + ".grad_partial" + (k > 0 ? std::to_string(k) : ""),
                                                     slots_[slot].bytes(), &slots_[slot]));
        }
      }
    }
  }
  std::vector<int> saved_tensor(nodes.size()), forward_scratch_tensor(nodes.size()), backward_scratch_tensor(nodes.size());
  for (std::size_t n = 0; n < nodes.size(); ++n) {
    if (elided_[n]) {
      saved_tensor[n] = forward_scratch_tensor[n] = backward_scratch_tensor[n] = -1;
      continue;
    }
    saved_tensor[n] = training ? add_tensor(nodes[n].name + ".saved", layers_[n]->saved_bytes) : -1;
    forward_scratch_tensor[n] = add_tensor(nodes[n].name + ".scratch", layers_[n]->forward_scratch_bytes);
    backward_scratch_tensor[n] = training ? add_tensor(nodes[n].name + ".backward_scratch", layers_[n]->backward_scratch_bytes) : -1;
  }
  auto touch = [&](int tensor, int position) {
    if (tensor < 0) return;
    auto& t = tensors[static_cast<std::size_t>(tensor)];
    t.first_use = std::min(t.first_use, position);
    t.last_use = std::max(t.last_use, position);
  };
  auto touch_partials = [&](std::size_t slot, int position) {
    for (int tensor : partial_tensors[slot]) touch(tensor, position);
  };
  for (std::size_t p = 0; p < ops_.size(); ++p) {
    const Op op = ops_[p];
    const int pos = static_cast<int>(p);
    switch (op.kind) {
      case OpKind::forward: {
        const auto n = static_cast<std::size_t>(op.index);
        for (int slot : input_slots_[n]) touch(value_tensor[static_cast<std::size_t>(slot)], pos);
        touch(value_tensor[static_cast<std::size_t>(output_slot_[n])], pos);
        touch(saved_tensor[n], pos);
        touch(forward_scratch_tensor[n], pos);
        break;
      }
      case OpKind::reorder_to_plain:
        touch(value_tensor[static_cast<std::size_t>(op.index)], pos);
        touch(value_tensor[static_cast<std::size_t>(copy_of_[static_cast<std::size_t>(op.index)])], pos);
        break;
      case OpKind::loss:
        touch(value_tensor[static_cast<std::size_t>(op.index)], pos);
        touch(grad_tensor[static_cast<std::size_t>(op.index)], pos);
        touch_partials(static_cast<std::size_t>(op.index), pos);
        break;
      case OpKind::backward: {
        const auto n = static_cast<std::size_t>(op.index);
        const auto out = static_cast<std::size_t>(output_slot_[n]);
        touch(grad_tensor[out], pos);
        if (layers_[n]->backward_reads_output) touch(value_tensor[out], pos);
        for (int slot : input_slots_[n]) {
          if (layers_[n]->backward_reads_inputs) touch(value_tensor[static_cast<std::size_t>(slot)], pos);
          touch(grad_tensor[static_cast<std::size_t>(slot)], pos);
          touch_partials(static_cast<std::size_t>(slot), pos);
        }
        touch(saved_tensor[n], pos);
        touch(backward_scratch_tensor[n], pos);
        break;
      }
      case OpKind::reorder_grad_to_blocked: {
        const auto c = static_cast<std::size_t>(op.index);
        const auto from = static_cast<std::size_t>(copy_of_[c]);
        touch(grad_tensor[c], pos);
        touch(grad_tensor[from], pos);
        touch_partials(from, pos);
        break;
      }
    }
  }
  // The output is copied out after the last op.
  touch(value_tensor[static_cast<std::size_t>(loss_slot_)], static_cast<int>(ops_.size()));
  for (auto& t : tensors) {
    if (t.last_use < 0) t.first_use = t.last_use = 0;  // never touched: keep it valid
  }

  report_.plan = plan_memory(tensors, strategy);
#ifndef NDEBUG
  validate_memory_plan(tensors, report_.plan);
#endif
  auto offset_of = [&](int tensor) { return tensor < 0 ? no_tensor : report_.plan.offsets[static_cast<std::size_t>(tensor)]; };
  value_offset_.resize(slot_count);
  grad_offset_.resize(slot_count);
  partial_offsets_.resize(slot_count);
  for (std::size_t slot = 0; slot < slot_count; ++slot) {
    value_offset_[slot] = offset_of(value_tensor[slot]);
    grad_offset_[slot] = offset_of(grad_tensor[slot]);
    for (int tensor : partial_tensors[slot]) partial_offsets_[slot].push_back(offset_of(tensor));
  }
  saved_offset_.resize(nodes.size());
  forward_scratch_offset_.resize(nodes.size());
  backward_scratch_offset_.resize(nodes.size());
  for (std::size_t n = 0; n < nodes.size(); ++n) {
    saved_offset_[n] = offset_of(saved_tensor[n]);
    forward_scratch_offset_[n] = offset_of(forward_scratch_tensor[n]);
    backward_scratch_offset_[n] = offset_of(backward_scratch_tensor[n]);
  }
}


StepProgram::~StepProgram() = default;

StepResult StepProgram::run(const StepRun& run, std::byte* arena, std::span<char> written, dnnl::stream& stream) const {
  const bool training = mode_ == Mode::training;

  auto slot_tensor = [&](int slot) {
    if (slot == 0) {
      return Tensor{const_cast<float*>(run.input), slots_[0].shape, nullptr};
    }
    return view(arena, value_offset_[static_cast<std::size_t>(slot)], slots_[static_cast<std::size_t>(slot)]);
  };
  auto grad_tensor = [&](int slot) {
    return view(arena, grad_offset_[static_cast<std::size_t>(slot)], slots_[static_cast<std::size_t>(slot)]);
  };
  auto floats_of = [&](int slot) {
    return static_cast<std::int64_t>(slots_[static_cast<std::size_t>(slot)].bytes() / sizeof(float));
  };
  // A gradient with several writers: the first writes the gradient buffer, the others
  // write a partial buffer that is then added in. `occurrence` counts earlier appearances
  // of the slot among one layer's inputs: each needs a buffer of its own.
  if (written.size() < slots_.size()) throw Error("step program: flag buffer too small");
  std::fill(written.begin(), written.begin() + static_cast<std::ptrdiff_t>(slots_.size()), 0);
  auto grad_buffer = [&](int slot, int occurrence) {  // -1: the gradient itself, else a partial
    return occurrence - (written[static_cast<std::size_t>(slot)] ? 0 : 1);
  };
  auto partial = [&](int slot, int buffer) {
    return view(arena, partial_offsets_[static_cast<std::size_t>(slot)][static_cast<std::size_t>(buffer)],
                slots_[static_cast<std::size_t>(slot)]);
  };
  auto begin_grad = [&](int slot, int buffer) -> Tensor { return buffer < 0 ? grad_tensor(slot) : partial(slot, buffer); };
  auto end_grad = [&](int slot, int buffer) {
    if (buffer >= 0) {
      float* grad = grad_tensor(slot).data;
      simd::elementwise_kernels().add(grad, grad, partial(slot, buffer).data, floats_of(slot));
    }
    written[static_cast<std::size_t>(slot)] = 1;
  };

  // Anomaly detection: each tensor an op writes is checked right after the op, so the
  // first non-finite value is reported at the op that made it; everything it read was
  // checked before. `describe_tensor` is called only to report one.
  const auto& nodes = graph_.nodes();
  auto found_anomaly = [&](const Tensor& tensor, bool per_sample, const char* phase, int node, auto describe_tensor,
                           const char* note) {
    if (run.anomaly == nullptr) return false;
    stream.wait();
    const std::optional<NonFiniteElement> bad = first_non_finite(tensor, engine_, stream);
    if (!bad) return false;
    Anomaly a;
    a.phase = phase;
    a.layer = node >= 0 ? nodes[static_cast<std::size_t>(node)].name : std::string("loss");
    a.kind = std::string(node >= 0 ? nodes[static_cast<std::size_t>(node)].layer->kind() : run.loss->name());
    a.tensor = describe_tensor();
    a.index = bad->index;
    a.value = bad->value;
    if (per_sample) {  // an activation or its gradient: report the element in the whole batch
      const std::int64_t sample_elements = tensor.shape.sample_elements();
      a.index += run.first_sample * sample_elements;
      a.sample = run.first_sample + bad->index / sample_elements;
    }
    a.micro_batch = run.micro_batch_index;
    a.note = note;
    *run.anomaly = std::move(a);
    return true;
  };
  auto input_gradient_name = [](std::size_t k, std::size_t count) {
    return count == 1 ? std::string("input gradient") : "input " + std::to_string(k) + " gradient";
  };
  auto parameter_gradient_name = [&](std::size_t n, std::size_t k) {
    const int entry = parameters_.node_entries(static_cast<int>(n))[k];
    return parameters_.entries()[static_cast<std::size_t>(entry)].name + " gradient";
  };

  StepResult result;
  result.samples = micro_batch_;
  std::array<Tensor, max_layer_inputs> inputs{};
  std::array<Tensor, max_layer_inputs> input_grads{};
  std::array<int, max_layer_inputs> buffers{};
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

  for (const Op& op : ops_) {
    switch (op.kind) {
      case OpKind::forward: {
        const auto n = static_cast<std::size_t>(op.index);
        const auto& slots = input_slots_[n];
        for (std::size_t k = 0; k < slots.size(); ++k) inputs[k] = slot_tensor(slots[k]);
        const std::size_t param_count = gather_params(n, false);
        ForwardArgs args;
        args.inputs = std::span<const Tensor>(inputs.data(), slots.size());
        args.output = slot_tensor(output_slot_[n]);
        args.params = std::span<const Tensor>(params.data(), param_count);
        args.saved = at(arena, saved_offset_[n]);
        args.scratch = at(arena, forward_scratch_offset_[n]);
        args.stream = &stream;
        args.mode = mode_;
        args.random = run.random.derive(n);
        args.first_sample = run.first_sample;
        layers_[n]->forward(args);
        if (found_anomaly(args.output, true, "forward", op.index, [] { return std::string("output"); },
                          "its inputs and parameters were finite")) {
          return result;
        }
        break;
      }
      case OpKind::reorder_to_plain: {
        const auto c = static_cast<std::size_t>(op.index);
        const int from = copy_of_[c];
        const Tensor src = slot_tensor(from);
        const Tensor dst = slot_tensor(op.index);
        dnnl_util::PrimitiveArguments(engine_, "reorder to plain")
            .add(DNNL_ARG_FROM, src.blocked->desc, src.data)
            .add(DNNL_ARG_TO, plain_desc_[c], dst.data)
            .execute(to_plain_[c], stream);
        break;
      }
      case OpKind::loss: {
        const Tensor prediction = slot_tensor(op.index);
        if (run.output != nullptr) {
          std::memcpy(run.output + run.first_sample * prediction.shape.sample_elements(), prediction.data,
                      static_cast<std::size_t>(prediction.elements()) * sizeof(float));
        }
        if (run.loss == nullptr) break;
        const Targets part = slice_targets(*run.targets, run.first_sample, micro_batch_, prediction.shape.sample_elements());
        Tensor grad{};
        const int buffer = training ? grad_buffer(op.index, 0) : -1;
        if (training) grad = begin_grad(op.index, buffer);
        const LossResult loss = run.loss->compute(prediction, part, run.grad_scale, training ? grad.data : nullptr);
        if (training) end_grad(op.index, buffer);
        if (run.anomaly != nullptr && !std::isfinite(loss.loss_sum)) {
          Anomaly a;
          a.phase = "forward";
          a.layer = "loss";
          a.kind = std::string(run.loss->name());
          a.tensor = "loss";
          a.value = static_cast<float>(loss.loss_sum);
          a.micro_batch = run.micro_batch_index;
          a.note = "the predictions were finite";
          *run.anomaly = std::move(a);
          return result;
        }
        if (training && found_anomaly(grad_tensor(op.index), true, "backward", -1,
                                      [] { return std::string("prediction gradient"); },
                                      "the predictions were finite")) {
          return result;
        }
        result.loss_sum = loss.loss_sum;
        result.correct = loss.correct;
        break;
      }
      case OpKind::backward: {
        const auto n = static_cast<std::size_t>(op.index);
        const int out = output_slot_[n];
        if (!written[static_cast<std::size_t>(out)]) {
          // Nothing downstream produced a gradient (an unused branch): it is zero.
          std::memset(grad_tensor(out).data, 0, slots_[static_cast<std::size_t>(out)].bytes());
          written[static_cast<std::size_t>(out)] = 1;
        }
        const auto& slots = input_slots_[n];
        for (std::size_t k = 0; k < slots.size(); ++k) {
          inputs[k] = slot_tensor(slots[k]);
          buffers[k] = grad_buffer(slots[k], static_cast<int>(std::count(slots.begin(), slots.begin() + static_cast<std::ptrdiff_t>(k), slots[k])));
          input_grads[k] = requires_grad_[static_cast<std::size_t>(slots[k])] ? begin_grad(slots[k], buffers[k]) : Tensor{};
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
        args.saved = at(arena, saved_offset_[n]);
        args.scratch = at(arena, backward_scratch_offset_[n]);
        args.stream = &stream;
        layers_[n]->backward(args);
        for (std::size_t k = 0; k < slots.size(); ++k) {
          if (requires_grad_[static_cast<std::size_t>(slots[k])]) end_grad(slots[k], buffers[k]);
        }
        if (run.anomaly != nullptr) {
          // An input gradient is checked once complete (summed over its readers so far).
          const char* note = "its output gradient, inputs and parameters were finite";
          for (std::size_t k = 0; k < slots.size(); ++k) {
            if (requires_grad_[static_cast<std::size_t>(slots[k])] &&
                found_anomaly(grad_tensor(slots[k]), true, "backward", op.index,
                              [&] { return input_gradient_name(k, slots.size()); }, note)) {
              return result;
            }
          }
          for (std::size_t k = 0; k < param_count; ++k) {
            if (found_anomaly(param_grads[k], false, "backward", op.index, [&] { return parameter_gradient_name(n, k); },
                              run.accumulate ? "its output gradient, inputs and parameters were finite; the gradient "
                                               "includes this lane's earlier micro-batches"
                                             : note)) {
              return result;
            }
          }
        }
        break;
      }
      case OpKind::reorder_grad_to_blocked: {
        const auto c = static_cast<std::size_t>(op.index);
        const int from = copy_of_[c];
        if (!written[c]) break;  // no plain consumer produced a gradient
        const Tensor src = grad_tensor(op.index);
        const int buffer = grad_buffer(from, 0);
        const Tensor dst = begin_grad(from, buffer);
        dnnl_util::PrimitiveArguments(engine_, "reorder of a gradient to blocked")
            .add(DNNL_ARG_FROM, plain_desc_[c], src.data)
            .add(DNNL_ARG_TO, slots_[static_cast<std::size_t>(from)].blocked->desc, dst.data)
            .execute(grad_to_blocked_[c], stream);
        end_grad(from, buffer);
        // Only the sum of several readers' gradients can be new here (a reorder keeps values).
        if (found_anomaly(grad_tensor(from), true, "backward", graph_.producer(from),
                          [] { return std::string("output gradient"); }, "the sum of its readers' finite gradients")) {
          return result;
        }
        break;
      }
    }
  }
  stream.wait();
  return result;
}

}  // namespace ember
