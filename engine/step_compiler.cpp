// The step compiler: StepProgram's constructor, as a sequence of passes over one state.
// Each pass reads what the earlier ones produced and adds its own part; the plan report
// (StepProgram::report) shows the result of each: fused pairs, the op sequence with its
// reorders and gradient ops, and every tensor with its lifetime and offset.
#include <algorithm>
#include <string>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/aligned_buffer.h"
#include "engine/blocked_layout.h"
#include "engine/error.h"
#include "engine/step_program.h"
#include "engine/step_reorder.h"
#include "engine/threading.h"

namespace ember {

struct StepProgram::Compiler {
  Compiler(StepProgram& program_, bool computes_loss)
      : program(program_),
        graph(program_.graph_),
        nodes(program_.graph_.nodes()),
        training(program_.mode_ == Mode::training),
        with_loss(computes_loss) {}

  StepProgram& program;
  const Graph& graph;
  const std::vector<Node>& nodes;
  bool training;
  bool with_loss;
  std::vector<FusedActivation> fused_activation;  // per node: the activation reader fused into it
  std::vector<char> fuse_max_pool;  // per node: its max pool reader (after the activation) was fused into it
  std::vector<std::string> fused_pool_name;  // per node: that pool's name, or empty
  std::vector<char> elided;       // per node: an activation or max pool fused into its producer
  std::vector<std::vector<int>> node_inputs;  // per node: the values it reads
  std::vector<char> runs_backward;            // per node
  std::vector<int> partial_count;             // per value: partial gradient buffers needed
  int phase = 0;                              // the phase ops are being added to
  static constexpr int not_made = -2;
  std::vector<int> saved_tensor;              // per node: its saved bytes' tensor, once made
  std::vector<int> partial_tensor;            // per node: the partial of the reduction being staged
  std::vector<std::size_t> batch_offset;      // per node: its results in the batch memory

  std::vector<StepValue>& values() { return program.values_; }
  StepValue& value(int v) { return program.values_[static_cast<std::size_t>(v)]; }

  // 1. In inference, a layer that can apply an activation to its own output (oneDNN
  //    post-op, GEMM epilogue) does so when that activation is the output's only reader;
  //    the activation node then runs nothing.
  void fuse_activations() {
    fused_activation.assign(nodes.size(), FusedActivation::none);
    elided.assign(nodes.size(), 0);
    if (training) return;
    const std::vector<int> readers = reader_counts();
    for (std::size_t n = 0; n < nodes.size(); ++n) {
      const Node& node = nodes[n];
      const FusedActivation activation = node.layer->activation();
      if (activation == FusedActivation::none || node.inputs.size() != 1 || node.inputs[0] == graph.input()) continue;
      const auto producer = static_cast<std::size_t>(graph.producer(node.inputs[0]));
      if (readers[static_cast<std::size_t>(node.inputs[0])] == 1 && nodes[producer].layer->fuses_following(activation)) {
        fused_activation[producer] = activation;
        elided[n] = 1;
        program.report_.fused.push_back(nodes[producer].name + "+" + node.name);
      }
    }
  }

  // A node's name in the op list: with the max pool it applies, "conv1+pool1", so a profile
  // says where the pool's time went.
  std::string op_name(std::size_t n) const {
    return fused_pool_name[n].empty() ? nodes[n].name : nodes[n].name + "+" + fused_pool_name[n];
  }

  // Per value: how many nodes read it (the graph's output counts one more).
  std::vector<int> reader_counts() const {
    std::vector<int> readers(static_cast<std::size_t>(graph.value_count()), 0);
    for (const Node& node : nodes) {
      for (ValueId v : node.inputs) ++readers[static_cast<std::size_t>(v)];
    }
    ++readers[static_cast<std::size_t>(graph.output())];
    return readers;
  }

  // 1b. A layer reading the model's input that can max-pool its own output (the direct
  //     conv kernel) does so when a 2x2 max pool is that output's only reader, directly or
  //     (inference) through a ReLU fused in 1; the pool node then runs nothing. Training
  //     keeps the pool's value (its name, its readers, its gradient: the producer's output
  //     gradient, see assign_tensors); the training graph has already moved a ReLU between
  //     the two after the pool (engine/training_graph.h).
  void fuse_max_pools() {
    fuse_max_pool.assign(nodes.size(), 0);
    fused_pool_name.assign(nodes.size(), std::string());
    const std::vector<int> readers = reader_counts();
    for (std::size_t n = 0; n < nodes.size(); ++n) {
      const Node& node = nodes[n];
      if (!node.layer->is_max_pool_2x2() || node.inputs[0] == graph.input()) continue;
      if (readers[static_cast<std::size_t>(node.inputs[0])] != 1) continue;
      auto producer = static_cast<std::size_t>(graph.producer(node.inputs[0]));
      if (elided[producer]) producer = static_cast<std::size_t>(graph.producer(nodes[producer].inputs[0]));  // a fused ReLU
      const Node& conv = nodes[producer];
      if (conv.inputs.size() == 1 && conv.inputs[0] == graph.input() && conv.layer->fuses_following_max_pool()) {
        fuse_max_pool[producer] = 1;
        fused_pool_name[producer] = node.name;
        elided[n] = 1;
        program.report_.fused.push_back(conv.name + "+" + node.name);
      }
    }
  }

  // A layer prepared under the OpenMP budget it will run with: oneDNN sizes a primitive's
  // work split (and its scratchpad) by the threads it is created under, and a primitive
  // created for one thread runs on one. With max_threads > 1, a layer big enough to be
  // given them (forward_work, as the runner decides) keeps the wide preparation; the rest
  // are prepared again for the one thread they will run with.
  std::unique_ptr<PreparedLayer> prepare_with_threads(const Layer& layer, const PrepareContext& context) {
    if (program.max_threads_ == 1) return layer.prepare(context);
    std::unique_ptr<PreparedLayer> wide;
    {
      const ThreadBudget budget(program.max_threads_);
      wide = layer.prepare(context);
    }
    if (wide->forward_work >= min_parallel_forward_work) return wide;
    PrepareContext narrow = context;
    narrow.max_threads = 1;
    return layer.prepare(narrow);
  }

  // A value a reader that needs plain row-major data can read: the value itself, or its
  // plain copy (made once, shared by every such reader).
  int plain_value_for(int v) {
    if (!value(v).info.blocked) return v;
    if (value(v).plain_copy >= 0) return value(v).plain_copy;
    StepValue copy;
    copy.info.shape = value(v).info.shape;
    copy.name = value(v).name + ".plain";
    copy.copy_of = v;
    copy.requires_grad = value(v).requires_grad;
    values().push_back(std::move(copy));
    const int c = static_cast<int>(values().size()) - 1;
    value(v).plain_copy = c;
    return c;
  }

  // 2. Prepare every layer with the 1-thread budget it will run under, in graph order:
  //    each layer's inputs are then known, and plain copies are made where a layer cannot
  //    read its input's blocked layout.
  void prepare_layers() {
    values().resize(static_cast<std::size_t>(graph.value_count()));
    value(graph.input()).info.shape = graph.value_shape(graph.input()).with_batch(program.micro_batch_);
    value(graph.input()).name = "input";
    program.layers_.resize(nodes.size());
    node_inputs.resize(nodes.size());
    runs_backward.assign(nodes.size(), 0);
    std::string failure;
    parallel_region(1, [&](int, int) {
      try {
        for (std::size_t n = 0; n < nodes.size(); ++n) prepare_node(n);
      } catch (const std::exception& e) {
        failure = e.what();
      }
    });
    if (!failure.empty()) {
      throw Error("preparing the model at micro-batch " + std::to_string(program.micro_batch_) + ": " + failure);
    }
    program.loss_value_ = plain_value_for(graph.output());
  }

  void prepare_node(std::size_t n) {
    const Node& node = nodes[n];
    StepValue& out = value(node.output);
    out.name = node.name;
    out.producer = static_cast<int>(n);
    if (elided[n]) {  // a fused activation or pool: its output is its producer's
      node_inputs[n] = {node.inputs[0]};
      out.info = value(node.inputs[0]).info;
      out.requires_grad = value(node.inputs[0]).requires_grad;
      return;
    }
    std::vector<ValueInfo> inputs;
    std::vector<char> needs_grad;
    bool any_grad = false;
    for (ValueId v : node.inputs) {
      const int readable = node.layer->accepts_blocked_inputs() ? v : plain_value_for(v);
      node_inputs[n].push_back(readable);
      inputs.push_back(value(readable).info);
      const bool wanted = training && value(readable).requires_grad;
      needs_grad.push_back(wanted ? 1 : 0);
      any_grad = any_grad || wanted;
    }
    PrepareContext context;
    context.mode = program.mode_;
    context.inputs = inputs;
    context.input_needs_grad = needs_grad;
    context.engine = &program.engine_;
    context.fused_activation = fused_activation[n];
    context.fuse_max_pool = fuse_max_pool[n] != 0;
    context.max_threads = program.max_threads_;
    try {
      program.layers_[n] = prepare_with_threads(*node.layer, context);
    } catch (const dnnl::error& e) {
      throw Error("oneDNN could not prepare it: " + std::string(e.what()));
    }
    const bool has_params = !program.parameters_.node_entries(static_cast<int>(n)).empty();
    runs_backward[n] = training && (has_params || any_grad);
    StepValue& output = value(node.output);  // `out` may dangle: plain copies grew the vector
    output.info = program.layers_[n]->output;
    output.requires_grad = runs_backward[n] != 0;
  }

  // 3. Legalize layouts: the reorders between every blocked value and its plain copy, one
  //    place for all of them (the gradient's reorder back is needed in training only).
  void build_reorders() {
    for (StepValue& copy : values()) {
      if (copy.copy_of < 0) continue;
      const BlockedLayout& blocked = *value(copy.copy_of).info.blocked;
      copy.reorder = make_reorder(program.engine_, blocked, copy.info.shape, training && copy.requires_grad);
    }
  }

  void add_op(StepOp op) {
    op.phase = phase;
    const bool sync = op.kind == OpKind::reduce_forward || op.kind == OpKind::reduce_backward;
    program.report_.ops.push_back(op.describe + (sync ? "  (sync point)" : ""));
    program.ops_.push_back(std::move(op));
    if (sync) ++phase;  // the next ops run once every micro-batch reached this one
  }

  // A batch-level layer's three stages: `partial` per micro-batch, `reduce` once per step
  // (a sync point), then `op` itself per micro-batch.
  void add_staged_op(StepOp op, OpKind partial, OpKind reduce, const char* stage) {
    StepOp first;
    first.kind = partial;
    first.node = op.node;
    first.inputs = op.inputs;
    first.output = op.output;
    first.zero_output_grad = op.zero_output_grad;
    first.input_grads.assign(op.input_grads.size(), GradientWrite{});  // input gradients come in the last stage
    first.describe = std::string(stage) + "_partial " + nodes[static_cast<std::size_t>(op.node)].name;
    add_op(std::move(first));
    StepOp sync;
    sync.kind = reduce;
    sync.node = op.node;
    sync.describe = std::string("reduce_") + stage + " " + nodes[static_cast<std::size_t>(op.node)].name;
    add_op(std::move(sync));
    op.zero_output_grad = false;  // the partial stage did it
    add_op(std::move(op));
  }

  // 4. The forward ops in graph order, each blocked output's plain copy right after it,
  //    then the loss (or, in inference, the copy of the output).
  void schedule_forward() {
    for (std::size_t n = 0; n < nodes.size(); ++n) {
      const int out = nodes[n].output;
      if (!elided[n]) {
        StepOp op;
        op.kind = OpKind::forward;
        op.node = static_cast<int>(n);
        op.inputs = node_inputs[n];
        op.output = out;
        op.describe = "forward " + op_name(n);
        if (program.layers_[n]->forward_reduces) {
          add_staged_op(std::move(op), OpKind::forward_partial, OpKind::reduce_forward, "forward");
        } else {
          add_op(std::move(op));
        }
      }
      if (value(out).plain_copy >= 0) {
        StepOp op;
        op.kind = OpKind::to_plain;
        op.inputs = {out};
        op.output = value(out).plain_copy;
        op.describe = "to_plain " + nodes[n].name;
        add_op(std::move(op));
      }
    }
    StepOp loss;
    loss.kind = OpKind::loss;
    loss.inputs = {program.loss_value_};
    if (training) loss.input_grads = {GradientWrite{program.loss_value_, -1}};
    loss.describe = "loss";
    add_op(std::move(loss));
  }

  // Where the next gradient of value v goes. The first writer writes the gradient itself;
  // later ones write a partial buffer that is added in. `occurrence` counts earlier
  // appearances of v among one op's inputs (add(x, x)): each needs a buffer of its own.
  GradientWrite next_gradient_write(int v, int occurrence, const std::vector<char>& written) {
    const int partial = occurrence - (written[static_cast<std::size_t>(v)] ? 0 : 1);
    auto& count = partial_count[static_cast<std::size_t>(v)];
    count = std::max(count, partial + 1);
    return GradientWrite{v, partial};
  }

  // 5. Differentiate: the backward ops in reverse graph order, each with where it writes
  //    every input gradient. Which writer comes first is known here, so a run needs no
  //    flags: the ops say whether they write, add to, or zero a gradient.
  void differentiate() {
    partial_count.assign(values().size(), 0);
    if (!training) return;
    std::vector<char> written(values().size(), 0);
    written[static_cast<std::size_t>(program.loss_value_)] = 1;  // the loss op
    for (std::size_t i = nodes.size(); i-- > 0;) {
      const int out = nodes[i].output;
      const int copy = value(out).plain_copy;
      if (copy >= 0 && written[static_cast<std::size_t>(copy)]) {
        // The plain readers' gradient, reordered back into the blocked value's gradient.
        StepOp op;
        op.kind = OpKind::gradient_to_blocked;
        op.inputs = {copy};
        op.output = out;
        op.input_grads = {next_gradient_write(out, 0, written)};
        op.describe = "gradient_to_blocked " + nodes[i].name;
        written[static_cast<std::size_t>(out)] = 1;
        add_op(std::move(op));
      }
      // A fused pool's gradient is its producer's output gradient (one tensor).
      if (elided[i] && written[static_cast<std::size_t>(out)]) written[static_cast<std::size_t>(node_inputs[i][0])] = 1;
      if (runs_backward[i]) add_backward(i, written);
    }
  }

  void add_backward(std::size_t n, std::vector<char>& written) {
    StepOp op;
    op.kind = OpKind::backward;
    op.node = static_cast<int>(n);
    op.inputs = node_inputs[n];
    op.output = nodes[n].output;
    op.zero_output_grad = !written[static_cast<std::size_t>(op.output)];
    op.describe = "backward " + op_name(n);
    for (std::size_t k = 0; k < op.inputs.size(); ++k) {
      const int v = op.inputs[k];
      if (!value(v).requires_grad) {
        op.input_grads.push_back(GradientWrite{});
        continue;
      }
      const auto occurrence = static_cast<int>(std::count(op.inputs.begin(), op.inputs.begin() + static_cast<std::ptrdiff_t>(k), v));
      op.input_grads.push_back(next_gradient_write(v, occurrence, written));
    }
    for (const GradientWrite& write : op.input_grads) {
      if (write.value >= 0) written[static_cast<std::size_t>(write.value)] = 1;
    }
    if (program.layers_[n]->backward_reduces) {
      add_staged_op(std::move(op), OpKind::backward_partial, OpKind::reduce_backward, "backward");
    } else {
      add_op(std::move(op));
    }
  }

  int add_tensor(std::string name, std::size_t bytes, const ValueInfo* info = nullptr) {
    if (bytes == 0) return -1;
    StepTensor tensor;
    tensor.name = std::move(name);
    tensor.bytes = bytes;
    tensor.shape = info == nullptr ? "-" : info->shape.str() + (info->blocked ? " blocked" : "");
    program.tensors_.push_back(std::move(tensor));
    return static_cast<int>(program.tensors_.size()) - 1;
  }

  // A pointwise layer may write its output over its input when nothing else reads that
  // input: the two values then share one tensor. Returns that input, or -1.
  int in_place_input(int v, const std::vector<int>& readers) {
    const StepValue& out = value(v);
    if (out.copy_of >= 0) return -1;
    const auto n = static_cast<std::size_t>(out.producer);
    if (elided[n]) return node_inputs[n][0];  // a fused activation or pool: its output is its input
    const PreparedLayer& layer = *program.layers_[n];
    if (!layer.can_run_in_place) return -1;
    for (int candidate : node_inputs[n]) {
      const StepValue& input = value(candidate);
      if (candidate == graph.input() || input.copy_of >= 0 || readers[static_cast<std::size_t>(candidate)] != 1) continue;
      if (input.info.bytes() != out.info.bytes()) continue;
      // In training, backward must not need the overwritten input, neither this layer's nor its producer's.
      const auto producer = static_cast<std::size_t>(input.producer);
      if (training && (layer.backward_reads_inputs || elided[producer] || program.layers_[producer]->backward_reads_output)) {
        continue;
      }
      return candidate;
    }
    return -1;
  }

  // 6. Tensors: every value, gradient and partial gradient, and each layer's saved and
  //    scratch bytes, that the plan must place.
  void assign_tensors() {
    std::vector<int> readers(values().size(), 0);
    for (const auto& inputs : node_inputs) {
      for (int v : inputs) ++readers[static_cast<std::size_t>(v)];
    }
    ++readers[static_cast<std::size_t>(program.loss_value_)];
    for (std::size_t v = 0; v < values().size(); ++v) {
      if (static_cast<int>(v) == graph.input()) continue;  // read in place from the caller's batch
      StepValue& val = values()[v];
      const int shared = in_place_input(static_cast<int>(v), readers);
      val.tensor = shared >= 0 ? value(shared).tensor : add_tensor(val.name, val.info.bytes(), &val.info);
      if (!training || !val.requires_grad) continue;
      const bool fused_pool = val.copy_of < 0 && val.producer >= 0 && elided[static_cast<std::size_t>(val.producer)];
      val.gradient = fused_pool ? value(shared).gradient : add_tensor(val.name + ".grad", val.info.bytes(), &val.info);
      for (int k = 0; k < partial_count[v]; ++k) {
        val.partials.push_back(
            add_tensor(val.name + ".grad_partial" + (k > 0 ? std::to_string(k) : ""), val.info.bytes(), &val.info));
      }
    }
    const bool loss_scratch = with_loss && !training;  // without a gradient buffer the loss needs scratch
    for (StepOp& op : program.ops_) {
      if (op.kind == OpKind::loss && loss_scratch) {
        op.scratch = add_tensor("loss.scratch", value(program.loss_value_).info.bytes());
      }
      if (op.node >= 0) assign_layer_tensors(op);
    }
  }

  // A layer's saved bytes (one tensor from its first forward stage to its last backward
  // stage), its scratch per op, its partial sums per reduction and its batch memory.
  void assign_layer_tensors(StepOp& op) {
    const auto n = static_cast<std::size_t>(op.node);
    const PreparedLayer& layer = *program.layers_[n];
    const std::string& name = nodes[n].name;
    if (saved_tensor.empty()) {
      saved_tensor.assign(nodes.size(), not_made);
      partial_tensor.assign(nodes.size(), -1);
      batch_offset.assign(nodes.size(), 0);
    }
    if (saved_tensor[n] == not_made) {
      saved_tensor[n] = training ? add_tensor(name + ".saved", layer.saved_bytes) : -1;
      if (layer.batch_bytes > 0) {
        batch_offset[n] = program.report_.batch_bytes;
        program.report_.batch_bytes += align_up(layer.batch_bytes);
      }
    }
    op.saved = saved_tensor[n];
    op.batch_offset = batch_offset[n];
    switch (op.kind) {
      case OpKind::forward_partial:
      case OpKind::backward_partial:
        partial_tensor[n] = add_tensor(name + (op.kind == OpKind::forward_partial ? ".partial" : ".backward_partial"),
                                       layer.partial_bytes);
        op.partial = partial_tensor[n];
        break;
      case OpKind::reduce_forward:
      case OpKind::reduce_backward:
        op.partial = partial_tensor[n];
        return;  // runs on the batch memory only
      default:
        break;
    }
    const bool forward_stage = op.kind == OpKind::forward || op.kind == OpKind::forward_partial;
    op.scratch = forward_stage ? add_tensor(name + ".scratch", layer.forward_scratch_bytes)
                               : add_tensor(name + ".backward_scratch", layer.backward_scratch_bytes);
  }

  // 7. Lifetimes: a tensor lives from the first op that touches it to the last.
  void compute_lifetimes() {
    auto touch = [&](int tensor, int position) {
      if (tensor < 0) return;
      StepTensor& t = program.tensors_[static_cast<std::size_t>(tensor)];
      t.first_use = t.first_use < 0 ? position : std::min(t.first_use, position);
      t.last_use = std::max(t.last_use, position);
    };
    for (std::size_t p = 0; p < program.ops_.size(); ++p) {
      const StepOp& op = program.ops_[p];
      const int position = static_cast<int>(p);
      for (int tensor : tensors_touched(op)) touch(tensor, position);
    }
    // The output is copied out after the last op.
    touch(value(program.loss_value_).tensor, static_cast<int>(program.ops_.size()));
    for (StepTensor& t : program.tensors_) {
      if (t.last_use < 0) t.first_use = t.last_use = 0;  // never touched: keep it valid
    }
    mark_kept_tensors();
  }

  // A tensor that lives across a sync point is kept per micro-batch: every micro-batch
  // runs up to the sync point before any goes on, so the arena a thread reuses from one
  // micro-batch to the next cannot hold it.
  void mark_kept_tensors() {
    std::vector<int> syncs;
    for (std::size_t p = 0; p < program.ops_.size(); ++p) {
      const OpKind kind = program.ops_[p].kind;
      if (kind == OpKind::reduce_forward || kind == OpKind::reduce_backward) syncs.push_back(static_cast<int>(p));
    }
    program.report_.phases = static_cast<int>(syncs.size()) + 1;
    for (StepTensor& t : program.tensors_) {
      for (int sync : syncs) t.kept = t.kept || (t.first_use < sync && sync <= t.last_use);
    }
  }

  std::vector<int> tensors_touched(const StepOp& op) {
    std::vector<int> touched{op.saved, op.scratch, op.partial};
    auto value_tensor = [&](int v) { return value(v).tensor; };
    auto gradient_tensors = [&](const GradientWrite& write) {
      if (write.value < 0) return;
      const StepValue& val = value(write.value);
      touched.push_back(val.gradient);
      if (write.partial >= 0) touched.push_back(val.partials[static_cast<std::size_t>(write.partial)]);
    };
    const PreparedLayer* layer = op.node >= 0 ? program.layers_[static_cast<std::size_t>(op.node)].get() : nullptr;
    switch (op.kind) {
      case OpKind::reduce_forward:
      case OpKind::reduce_backward:
        return {op.partial};  // not saved: a sync point must not extend the saved bytes' life
      case OpKind::forward:
      case OpKind::forward_partial:
      case OpKind::to_plain:
        for (int v : op.inputs) touched.push_back(value_tensor(v));
        touched.push_back(value_tensor(op.output));
        break;
      case OpKind::loss:
        touched.push_back(value_tensor(op.inputs[0]));
        break;
      case OpKind::backward:
      case OpKind::backward_partial:
        touched.push_back(value(op.output).gradient);
        if (layer->backward_reads_output) touched.push_back(value_tensor(op.output));
        if (layer->backward_reads_inputs) {
          for (int v : op.inputs) touched.push_back(value_tensor(v));
        }
        break;
      case OpKind::gradient_to_blocked:
        touched.push_back(value(op.inputs[0]).gradient);
        break;
    }
    for (const GradientWrite& write : op.input_grads) gradient_tensors(write);
    return touched;
  }

  // 8. The memory plans: an offset for every tensor in the arena, or, for tensors kept
  //    across a sync point, in the micro-batch's kept memory.
  void plan(PlanStrategy strategy) {
    StepPlanReport& report = program.report_;
    std::vector<std::size_t*> arena_offsets, kept_offsets;
    for (StepTensor& t : program.tensors_) {
      (t.kept ? report.kept_tensors : report.tensors).push_back({t.name, t.bytes, t.first_use, t.last_use});
      (t.kept ? report.kept_shapes : report.shapes).push_back(t.shape);
      (t.kept ? kept_offsets : arena_offsets).push_back(&t.offset);
    }
    report.plan = plan_memory(report.tensors, strategy);
    report.kept_plan = plan_memory(report.kept_tensors, strategy);
#ifndef NDEBUG
    validate_memory_plan(report.tensors, report.plan);
    validate_memory_plan(report.kept_tensors, report.kept_plan);
#endif
    for (std::size_t t = 0; t < arena_offsets.size(); ++t) *arena_offsets[t] = report.plan.offsets[t];
    for (std::size_t t = 0; t < kept_offsets.size(); ++t) *kept_offsets[t] = report.kept_plan.offsets[t];
  }
};

StepProgram::StepProgram(const Graph& graph, const ParameterStore& parameters, std::int64_t micro_batch, Mode mode,
                         const dnnl::engine& engine, PlanStrategy strategy, bool computes_loss, int max_threads)
    : graph_(graph),
      parameters_(parameters),
      engine_(engine),
      micro_batch_(micro_batch),
      mode_(mode),
      computes_loss_(computes_loss || mode == Mode::training),
      max_threads_(std::max(1, max_threads)) {
  Compiler compiler(*this, computes_loss_);
  compiler.fuse_activations();
  compiler.fuse_max_pools();
  compiler.prepare_layers();
  compiler.build_reorders();
  compiler.schedule_forward();
  compiler.differentiate();
  compiler.assign_tensors();
  compiler.compute_lifetimes();
  compiler.plan(strategy);
  constants_.assign(layers_.size(), nullptr);
}

std::vector<StepProgram::ConstantsRequest> StepProgram::constants_requests() const {
  std::vector<ConstantsRequest> requests;
  for (std::size_t node = 0; node < layers_.size(); ++node) {
    if (layers_[node] && layers_[node]->constant_bytes > 0) requests.push_back({static_cast<int>(node), layers_[node].get()});
  }
  return requests;
}

void StepProgram::use_constants(int node, const std::byte* constants) {
  constants_.at(static_cast<std::size_t>(node)) = constants;
}

std::vector<StepConstants> step_constants(std::span<const StepProgram* const> programs) {
  std::vector<StepConstants> constants;
  for (const StepProgram* program : programs) {
    for (const StepProgram::ConstantsRequest& request : program->constants_requests()) {
      std::string key = request.layer->constants_key();
      auto same = [&](const StepConstants& c) { return c.node == request.node && c.key == key; };
      auto found = std::find_if(constants.begin(), constants.end(), same);
      if (found == constants.end()) {
        constants.push_back({request.node, std::move(key), request.layer->constant_bytes, request.layer});
      } else {
        found->bytes = std::max(found->bytes, request.layer->constant_bytes);
      }
    }
  }
  return constants;
}

StepProgram::~StepProgram() = default;

}  // namespace ember
