// Running a compiled step: the ops in order, each over views into the workspace's arena.
#include "engine/step_program.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/anomaly.h"
#include "engine/error.h"
#include "engine/profile.h"
#include "engine/step_reorder.h"
#include "engine/threading.h"
#include "engine/workspace.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

constexpr int max_layer_inputs = 8;
constexpr int max_layer_params = 8;

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

// One run of a program: views into the arena, and one function per op kind. Each op
// returns false when anomaly detection found a non-finite value (the run then stops).
class StepProgram::Runner {
 public:
  Runner(const StepProgram& program, const StepRun& run, Workspace& workspace, StepMemoryViews memory)
      : p_(program), run_(run), arena_(workspace.arena.data()), memory_(memory), stream_(*workspace.stream) {}

  StepResult run(int phase) {
    for (const StepOp& op : p_.ops_) {
      if (op.phase == phase && !(run_.profile == nullptr ? run_op(op) : run_timed(op))) return result_;
    }
    stream_.wait();
    return result_;
  }

 private:
  bool run_op(const StepOp& op) {
    switch (op.kind) {
      case OpKind::forward: return forward(op, false);
      case OpKind::forward_partial: return forward(op, true);
      case OpKind::to_plain: return to_plain(op);
      case OpKind::loss: return loss(op);
      case OpKind::backward: return backward(op, false);
      case OpKind::backward_partial: return backward(op, true);
      case OpKind::gradient_to_blocked: return gradient_to_blocked(op);
      case OpKind::reduce_forward:
      case OpKind::reduce_backward:
        return true;  // once per step, between phases: StepProgram::reduce
    }
    return true;
  }

  // Profiling: the op's time on this thread, its arithmetic and the bytes it moves.
  bool run_timed(const StepOp& op) {
    if (op.kind == OpKind::reduce_forward || op.kind == OpKind::reduce_backward) return true;  // timed in reduce()
    const auto start = std::chrono::steady_clock::now();
    const bool finished = run_op(op);
    stream_.wait();  // the time is the op's own, whatever oneDNN left queued
    const auto nanoseconds =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
    run_.profile->add(static_cast<std::size_t>(&op - p_.ops_.data()), nanoseconds, op_flops(op), op_bytes(op));
    return finished;
  }

  // What the layer states for one call (PreparedLayer::forward_flops); batch-level partial
  // stages and copies state none.
  double op_flops(const StepOp& op) const {
    const PreparedLayer* layer = op.node >= 0 ? p_.layers_[static_cast<std::size_t>(op.node)].get() : nullptr;
    if (layer == nullptr) return 0.0;
    if (op.kind == OpKind::forward) return static_cast<double>(layer->forward_flops);
    if (op.kind == OpKind::backward) return static_cast<double>(layer->backward_flops);
    return 0.0;
  }

  // Each tensor the op reads or writes, once: values, their gradients, parameters and
  // parameter gradients (read too when accumulated). Partial stages count none.
  double op_bytes(const StepOp& op) const {
    auto value_bytes = [&](int v) { return v < 0 ? 0.0 : static_cast<double>(value(v).info.bytes()); };
    double total = 0.0;
    switch (op.kind) {
      case OpKind::forward:
        if (is_view(op)) return 0.0;
        for (int v : op.inputs) total += value_bytes(v);
        return total + value_bytes(op.output) + parameter_bytes(op.node);
      case OpKind::to_plain:
      case OpKind::gradient_to_blocked:
        return value_bytes(op.inputs[0]) + value_bytes(op.output);
      case OpKind::loss:
        return value_bytes(op.inputs[0]) * (op.input_grads.empty() ? 1.0 : 2.0);
      case OpKind::backward: {
        const PreparedLayer& layer = *p_.layers_[static_cast<std::size_t>(op.node)];
        for (std::size_t k = 0; k < op.inputs.size(); ++k) {
          if (layer.backward_reads_inputs) total += value_bytes(op.inputs[k]);
          total += value_bytes(op.input_grads[k].value);
        }
        if (layer.backward_reads_output) total += value_bytes(op.output);
        return total + value_bytes(op.output) + parameter_bytes(op.node) * (run_.accumulate ? 3.0 : 2.0);
      }
      default:
        return 0.0;
    }
  }
  // In place with no arithmetic (flatten in inference): the output is the input, nothing moves.
  bool is_view(const StepOp& op) const {
    const PreparedLayer* layer = p_.layers_[static_cast<std::size_t>(op.node)].get();
    return layer != nullptr && layer->forward_flops == 0 && op.inputs.size() == 1 && value(op.output).tensor >= 0 &&
           value(op.output).tensor == value(op.inputs[0]).tensor;
  }
  double parameter_bytes(int node) const {
    double total = 0.0;
    for (int entry : p_.parameters_.node_entries(node)) {
      total += static_cast<double>(p_.parameters_.entries()[static_cast<std::size_t>(entry)].spec.shape.elements()) * sizeof(float);
    }
    return total;
  }

  std::byte* bytes(int tensor) const {
    if (tensor < 0) return nullptr;
    const StepTensor& t = p_.tensors_[static_cast<std::size_t>(tensor)];
    return (t.kept ? memory_.kept : arena_) + t.offset;
  }
  std::byte* batch_bytes(const StepOp& op) const { return memory_.batch == nullptr ? nullptr : memory_.batch + op.batch_offset; }
  Tensor view(int tensor, const ValueInfo& info) const {
    return Tensor{reinterpret_cast<float*>(bytes(tensor)), info.shape, info.blocked.get()};
  }
  const StepValue& value(int v) const { return p_.values_[static_cast<std::size_t>(v)]; }
  Tensor value_view(int v) const {
    if (v == p_.graph_.input()) return Tensor{const_cast<float*>(run_.input), value(v).info.shape, nullptr};
    return view(value(v).tensor, value(v).info);
  }
  Tensor gradient_view(int v) const { return view(value(v).gradient, value(v).info); }

  // Where a gradient write goes (the gradient itself or a partial buffer), and once the
  // op has written it, the partial added in.
  Tensor begin_gradient(const GradientWrite& write) const {
    if (write.value < 0) return Tensor{};
    const StepValue& v = value(write.value);
    return write.partial < 0 ? gradient_view(write.value) : view(v.partials[static_cast<std::size_t>(write.partial)], v.info);
  }
  void end_gradient(const GradientWrite& write) const {
    if (write.value < 0 || write.partial < 0) return;
    const StepValue& v = value(write.value);
    float* gradient = gradient_view(write.value).data;
    const float* partial = view(v.partials[static_cast<std::size_t>(write.partial)], v.info).data;
    simd::elementwise_kernels().add(gradient, gradient, partial, static_cast<std::int64_t>(v.info.bytes() / sizeof(float)));
  }

  std::span<const Tensor> gather_buffers(int node) {
    const auto entries = p_.parameters_.node_buffer_entries(node);
    for (std::size_t k = 0; k < entries.size(); ++k) buffers_[k] = p_.parameters_.buffer(entries[k]);
    return std::span<const Tensor>(buffers_.data(), entries.size());
  }

  std::size_t gather_params(int node, bool with_grads) {
    const auto entries = p_.parameters_.node_entries(node);
    for (std::size_t k = 0; k < entries.size(); ++k) {
      params_[k] = p_.parameters_.value(entries[k]);
      if (with_grads) {
        const ParameterEntry& e = p_.parameters_.entries()[static_cast<std::size_t>(entries[k])];
        param_grads_[k] = Tensor{run_.gradients + e.offset, e.spec.shape, nullptr};
      }
    }
    return entries.size();
  }

  bool forward(const StepOp& op, bool partial_stage) {
    for (std::size_t k = 0; k < op.inputs.size(); ++k) inputs_[k] = value_view(op.inputs[k]);
    ForwardArgs args;
    args.inputs = std::span<const Tensor>(inputs_.data(), op.inputs.size());
    args.output = value_view(op.output);
    args.params = std::span<const Tensor>(params_.data(), gather_params(op.node, false));
    args.saved = bytes(op.saved);
    args.scratch = bytes(op.scratch);
    args.stream = &stream_;
    args.mode = p_.mode_;
    args.random = run_.random.derive(static_cast<std::uint64_t>(op.node));
    args.first_sample = run_.first_sample;
    args.partial = bytes(op.partial);
    args.batch = batch_bytes(op);
    args.buffers = gather_buffers(op.node);
    args.constants = p_.constants_[static_cast<std::size_t>(op.node)];
    const PreparedLayer& layer = *p_.layers_[static_cast<std::size_t>(op.node)];
    const std::int64_t min_work = run_.runner != nullptr ? min_pooled_forward_work : min_parallel_forward_work;
    args.threads = layer.forward_work >= min_work ? std::min(run_.threads, p_.max_threads_) : 1;
    args.runner = args.threads > 1 ? run_.runner : nullptr;
    if (partial_stage) {
      layer.forward_partial(args);
      return true;
    }
    if (run_.threads > 1) {
      // oneDNN primitives open as many threads as the budget says.
      const ThreadBudget budget(args.threads);
      layer.forward(args);
    } else {
      layer.forward(args);
    }
    return !found_anomaly(args.output, true, "forward", op.node, [] { return std::string("output"); },
                          "its inputs and parameters were finite");
  }

  bool to_plain(const StepOp& op) {
    value(op.output).reorder->run_to_plain(value_view(op.inputs[0]).data, value_view(op.output).data, p_.engine_, stream_);
    return true;
  }

  bool loss(const StepOp& op) {
    const Tensor prediction = value_view(op.inputs[0]);
    result_.samples = p_.micro_batch_;
    if (run_.output != nullptr) {
      std::memcpy(run_.output + run_.first_sample * prediction.shape.sample_elements(), prediction.data,
                  static_cast<std::size_t>(prediction.elements()) * sizeof(float));
    }
    if (run_.loss == nullptr) return true;
    const Targets part =
        slice_targets(*run_.targets, run_.first_sample, p_.micro_batch_, prediction.shape.sample_elements());
    const bool training = !op.input_grads.empty();
    const Tensor gradient = training ? begin_gradient(op.input_grads[0]) : Tensor{};
    const LossResult loss = run_.loss->compute(prediction, part, run_.grad_scale, gradient.data,
                                               reinterpret_cast<float*>(bytes(op.scratch)));
    if (training) end_gradient(op.input_grads[0]);
    if (run_.anomaly != nullptr && !std::isfinite(loss.loss_sum)) {
      Anomaly a;
      a.phase = "forward";
      a.layer = "loss";
      a.kind = std::string(run_.loss->name());
      a.tensor = "loss";
      a.value = static_cast<float>(loss.loss_sum);
      a.micro_batch = run_.micro_batch_index;
      a.note = "the predictions were finite";
      *run_.anomaly = std::move(a);
      return false;
    }
    if (training && found_anomaly(gradient_view(op.inputs[0]), true, "backward", -1,
                                  [] { return std::string("prediction gradient"); }, "the predictions were finite")) {
      return false;
    }
    result_.loss_sum = loss.loss_sum;
    result_.correct = loss.correct;
    return true;
  }

  bool backward(const StepOp& op, bool partial_stage) {
    if (op.zero_output_grad) {  // nothing downstream produced a gradient (an unused branch): it is zero
      std::memset(gradient_view(op.output).data, 0, value(op.output).info.bytes());
    }
    for (std::size_t k = 0; k < op.inputs.size(); ++k) {
      inputs_[k] = value_view(op.inputs[k]);
      input_grads_[k] = begin_gradient(op.input_grads[k]);
    }
    const std::size_t param_count = gather_params(op.node, true);
    BackwardArgs args;
    args.inputs = std::span<const Tensor>(inputs_.data(), op.inputs.size());
    args.output = value_view(op.output);
    args.output_grad = gradient_view(op.output);
    args.input_grads = std::span<const Tensor>(input_grads_.data(), op.inputs.size());
    args.params = std::span<const Tensor>(params_.data(), param_count);
    args.param_grads = std::span<const Tensor>(param_grads_.data(), param_count);
    args.accumulate_param_grads = run_.accumulate;
    args.saved = bytes(op.saved);
    args.scratch = bytes(op.scratch);
    args.stream = &stream_;
    args.partial = bytes(op.partial);
    args.batch = batch_bytes(op);
    args.constants = p_.constants_[static_cast<std::size_t>(op.node)];
    const PreparedLayer& layer = *p_.layers_[static_cast<std::size_t>(op.node)];
    if (partial_stage) {  // a batch-level layer writes its parameter gradients here, its input gradients later
      layer.backward_partial(args);
      return run_.anomaly == nullptr || !backward_anomaly(op, param_count);
    }
    layer.backward(args);
    if (run_.parameters_written != nullptr && param_count > 0) (*run_.parameters_written)(op.node);
    for (const GradientWrite& write : op.input_grads) end_gradient(write);
    return run_.anomaly == nullptr || !backward_anomaly(op, param_count);
  }

  // An input gradient is checked once complete (summed over its readers so far).
  bool backward_anomaly(const StepOp& op, std::size_t param_count) {
    const char* note = "its output gradient, inputs and parameters were finite";
    const std::size_t count = op.inputs.size();
    for (std::size_t k = 0; k < count; ++k) {
      if (op.input_grads[k].value < 0) continue;
      auto name = [&] { return count == 1 ? std::string("input gradient") : "input " + std::to_string(k) + " gradient"; };
      if (found_anomaly(gradient_view(op.inputs[k]), true, "backward", op.node, name, note)) return true;
    }
    for (std::size_t k = 0; k < param_count; ++k) {
      auto name = [&] {
        const int entry = p_.parameters_.node_entries(op.node)[k];
        return p_.parameters_.entries()[static_cast<std::size_t>(entry)].name + " gradient";
      };
      if (found_anomaly(param_grads_[k], false, "backward", op.node, name,
                        run_.accumulate ? "its output gradient, inputs and parameters were finite; the gradient "
                                          "includes this lane's earlier micro-batches"
                                        : note)) {
        return true;
      }
    }
    return false;
  }

  bool gradient_to_blocked(const StepOp& op) {
    const GradientWrite& write = op.input_grads[0];
    value(op.inputs[0]).reorder->run_gradient_to_blocked(gradient_view(op.inputs[0]).data, begin_gradient(write).data,
                                                         p_.engine_, stream_);
    end_gradient(write);
    // Only the sum of several readers' gradients can be new here (a reorder keeps values).
    return !found_anomaly(gradient_view(op.output), true, "backward", value(op.output).producer,
                          [] { return std::string("output gradient"); }, "the sum of its readers' finite gradients");
  }

  // Anomaly detection: each tensor an op writes is checked right after the op, so the
  // first non-finite value is reported at the op that made it; everything it read was
  // checked before. `describe_tensor` is called only to report one.
  template <typename DescribeTensor>
  bool found_anomaly(const Tensor& tensor, bool per_sample, const char* phase, int node, DescribeTensor describe_tensor,
                     const char* note) {
    if (run_.anomaly == nullptr) return false;
    stream_.wait();
    const std::optional<NonFiniteElement> bad = first_non_finite(tensor, p_.engine_, stream_);
    if (!bad) return false;
    const auto& nodes = p_.graph_.nodes();
    Anomaly a;
    a.phase = phase;
    a.layer = node >= 0 ? nodes[static_cast<std::size_t>(node)].name : std::string("loss");
    a.kind = std::string(node >= 0 ? nodes[static_cast<std::size_t>(node)].layer->kind() : run_.loss->name());
    a.tensor = describe_tensor();
    a.index = bad->index;
    a.value = bad->value;
    if (per_sample) {  // an activation or its gradient: report the element in the whole batch
      const std::int64_t sample_elements = tensor.shape.sample_elements();
      a.index += run_.first_sample * sample_elements;
      a.sample = run_.first_sample + bad->index / sample_elements;
    }
    a.micro_batch = run_.micro_batch_index;
    a.note = note;
    *run_.anomaly = std::move(a);
    return true;
  }

  const StepProgram& p_;
  const StepRun& run_;
  std::byte* arena_;
  StepMemoryViews memory_;
  dnnl::stream& stream_;
  StepResult result_;
  std::array<Tensor, max_layer_inputs> inputs_{};
  std::array<Tensor, max_layer_inputs> input_grads_{};
  std::array<Tensor, max_layer_params> params_{};
  std::array<Tensor, max_layer_params> param_grads_{};
  std::array<Tensor, max_layer_params> buffers_{};
};

StepResult StepProgram::run_phase(int phase, const StepRun& run, Workspace& workspace, StepMemoryViews memory) const {
  if (workspace.arena.size() < arena_bytes()) {
    throw Error("step program: workspace arena of " + std::to_string(workspace.arena.size()) + " bytes, the plan needs " +
                std::to_string(arena_bytes()));
  }
  if ((kept_bytes() > 0 && memory.kept == nullptr) || (batch_bytes() > 0 && memory.batch == nullptr)) {
    throw Error("step program: a program with sync points needs kept and batch memory");
  }
  return Runner(*this, run, workspace, memory).run(phase);
}

StepResult StepProgram::run(const StepRun& run, Workspace& workspace) const {
  if (phase_count() != 1) {
    throw Error("step program: " + std::to_string(phase_count()) + " phases; run them with run_phase and reduce");
  }
  return run_phase(0, run, workspace, {});
}

std::vector<ProfiledOp> StepProgram::profiled_ops() const {
  std::vector<ProfiledOp> ops;
  for (const StepOp& op : ops_) {
    StepPhase phase = StepPhase::backward;
    switch (op.kind) {
      case OpKind::forward:
      case OpKind::forward_partial:
      case OpKind::reduce_forward:
      case OpKind::to_plain: phase = StepPhase::forward; break;
      case OpKind::loss: phase = StepPhase::loss; break;
      case OpKind::backward_partial:
      case OpKind::reduce_backward:
      case OpKind::backward:
      case OpKind::gradient_to_blocked: break;
    }
    ops.push_back({op.describe, phase});
  }
  return ops;
}

std::size_t StepProgram::reduce_op(int phase) const {
  std::size_t index = 0;
  while (index < ops_.size() &&
         !(ops_[index].phase == phase && (ops_[index].kind == OpKind::reduce_forward || ops_[index].kind == OpKind::reduce_backward))) {
    ++index;
  }
  if (index == ops_.size()) throw Error("step program: no sync point ends phase " + std::to_string(phase));
  return index;
}

StepProgram::KeptRange StepProgram::reduced_partials(int phase) const {
  const StepTensor& partial = tensors_[static_cast<std::size_t>(ops_[reduce_op(phase)].partial)];
  return KeptRange{partial.offset, partial.bytes};
}

void StepProgram::reduce(int phase, std::span<const StepProgram* const> programs, std::span<std::byte* const> kept,
                         std::byte* batch, ThreadProfile* profile) {
  if (programs.empty() || programs.size() != kept.size()) throw Error("step program: reduce needs one program per micro-batch");
  const StepProgram& first = *programs[0];
  const std::size_t index = first.reduce_op(phase);
  const StepOp& op = first.ops_[index];
  // Every program of a step has the same ops (one graph, one mode); only sizes differ.
  std::vector<std::byte*> partials(programs.size());
  std::vector<std::int64_t> sizes(programs.size());
  for (std::size_t j = 0; j < programs.size(); ++j) {
    const StepOp& own = programs[j]->ops_[index];
    partials[j] = kept[j] + programs[j]->tensors_[static_cast<std::size_t>(own.partial)].offset;
    sizes[j] = programs[j]->micro_batch();
  }
  const ParameterStore& store = first.parameters_;
  std::vector<Tensor> params, buffers;
  for (int entry : store.node_entries(op.node)) params.push_back(store.value(entry));
  for (int entry : store.node_buffer_entries(op.node)) buffers.push_back(store.buffer(entry));
  ReduceArgs args;
  args.partials = partials;
  args.micro_batch_sizes = sizes;
  args.batch = batch + op.batch_offset;
  args.params = params;
  args.buffers = buffers;
  const PreparedLayer& layer = *first.layers_[static_cast<std::size_t>(op.node)];
  const auto start = profile != nullptr ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  if (op.kind == OpKind::reduce_forward) {
    layer.reduce_forward(args);
  } else {
    layer.reduce_backward(args);
  }
  if (profile != nullptr) {
    profile->add(index, std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count(),
                 0.0, 0.0);
  }
}

}  // namespace ember
