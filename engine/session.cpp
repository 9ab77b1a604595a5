#include "engine/session.h"

#include <algorithm>
#include <array>
#include <exception>
#include <string>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/error.h"
#include "engine/fold_batch_norm.h"
#include "engine/memory_limit.h"
#include "engine/step_memory.h"
#include "engine/step_program.h"
#include "engine/text.h"
#include "engine/threading.h"
#include "engine/training_state.h"
#include "engine/worker_pool.h"
#include "engine/workspace.h"

namespace ember {
namespace {

// "(batch, 1, 28, 28)"
std::string batched_text(const Shape& sample) {
  return "(batch" + (sample.dims().empty() ? std::string() : ", " + join(sample.dims())) + ")";
}

}  // namespace

std::unique_ptr<InferenceSession> InferenceSession::open(const std::string& checkpoint, SessionOptions options) {
  TrainedModel model = load_trained_model(checkpoint, options.memory_limit);
  return std::make_unique<InferenceSession>(std::move(model.graph), std::move(model.parameters), options);
}

InferenceSession::InferenceSession(std::unique_ptr<Graph> graph, std::unique_ptr<ParameterStore> parameters,
                                   SessionOptions options)
    : graph_(std::move(graph)), parameters_(std::move(parameters)), options_(options) {
  if (!graph_ || !parameters_) throw Error("inference session: no model given");
  if (options_.max_batch < 1) {
    throw Error("inference session: max batch must be at least 1, found " + std::to_string(options_.max_batch));
  }
  if (options_.micro_batch < 1) {
    throw Error("inference session: micro-batch must be at least 1, found " + std::to_string(options_.micro_batch));
  }
  if (options_.workspaces < 1) {
    throw Error("inference session: workspaces must be at least 1, found " + std::to_string(options_.workspaces));
  }
  if (options_.threads < 1 || options_.threads > max_compute_threads) {
    throw Error("inference session: threads must be 1 to " + std::to_string(max_compute_threads) + ", found " +
                std::to_string(options_.threads));
  }
  options_.micro_batch = std::min(options_.micro_batch, options_.max_batch);
  const std::size_t limit = resolve_memory_limit(options_.memory_limit);
  check_model_memory(*graph_, parameters_->total_floats(), options_.micro_batch, limit, "inference session");
  // Weights never change in a session: a BatchNorm after a convolution folds into it.
  // After the memory check: the fold copies the weights once.
  FoldedModel folded = fold_batch_norm(*graph_, *parameters_);
  if (!folded.folded.empty()) {
    graph_ = std::make_unique<Graph>(std::move(folded.graph));
    parameters_ = std::make_unique<ParameterStore>(std::move(folded.parameters));
  }
  engine_ = std::make_unique<dnnl::engine>(dnnl::engine::kind::cpu, 0);
  for (std::int64_t size = 1; size <= options_.micro_batch; ++size) {
    programs_.push_back(std::make_unique<StepProgram>(*graph_, *parameters_, size, Mode::inference, *engine_,
                                                      PlanStrategy::best_fit, /*computes_loss=*/false));
    arena_bytes_ = std::max(arena_bytes_, programs_.back()->arena_bytes());
  }
  if (options_.threads > 1 && programs_[0]->phase_count() == 1) {
    for (std::int64_t size = 1; size <= options_.micro_batch; ++size) {
      wide_programs_.push_back(std::make_unique<StepProgram>(*graph_, *parameters_, size, Mode::inference, *engine_,
                                                             PlanStrategy::best_fit, /*computes_loss=*/false, options_.threads));
      arena_bytes_ = std::max(arena_bytes_, wide_programs_.back()->arena_bytes());
    }
    workers_ = std::make_unique<WorkerPool>(options_.threads);
  }
  // The store's two blocks (values, and gradients it holds in every mode) and the first
  // workspaces must fit; further workspaces are made while they fit.
  const std::size_t weights = 2 * parameters_->values().size_bytes() + parameters_->buffers().size_bytes();
  make_constants(limit, weights);
  const std::size_t resident = weights + constant_bytes();
  const std::size_t workspace = std::max<std::size_t>(1, align_up(arena_bytes_));
  check_memory_limit(resident + static_cast<std::size_t>(options_.workspaces) * workspace, limit, "inference session",
                     "weights and gradients " + format_bytes(weights) + ", prepared weights " +
                         format_bytes(constant_bytes()) + ", " + std::to_string(options_.workspaces) +
                         " workspace(s) of " + format_bytes(workspace));
  max_workspaces_ = std::max(static_cast<std::size_t>(options_.workspaces), (limit - resident) / workspace);
  for (int i = 0; i < options_.workspaces; ++i) give_back(take_workspace(/*wait=*/true));
}

// Every layer's constants, made once per node and layout and handed to every program that
// reads them (layouts that do not depend on the micro-batch size are shared by all).
void InferenceSession::make_constants(std::size_t limit, std::size_t weights) {
  struct Made {
    int node;
    std::string key;
    std::size_t index;
  };
  std::vector<Made> made;
  std::size_t total = 0;
  std::vector<StepProgram*> programs;
  for (const auto& program : programs_) programs.push_back(program.get());
  for (const auto& program : wide_programs_) programs.push_back(program.get());
  for (StepProgram* program : programs) {
    for (const StepProgram::ConstantsRequest& request : program->constants_requests()) {
      const std::string key = request.layer->constants_key();
      auto found = std::find_if(made.begin(), made.end(), [&](const Made& m) { return m.node == request.node && m.key == key; });
      if (found == made.end()) {
        made.push_back({request.node, key, made.size()});
        total += align_up(request.layer->constant_bytes);
      }
    }
  }
  check_memory_limit(weights + total, limit, "inference session",
                     "weights and gradients " + format_bytes(weights) + ", prepared weights " + format_bytes(total));
  Workspace workspace(*engine_);  // for its stream
  constants_.reserve(made.size());
  for (StepProgram* program : programs) {
    for (const StepProgram::ConstantsRequest& request : program->constants_requests()) {
      const std::string key = request.layer->constants_key();
      const Made& m = *std::find_if(made.begin(), made.end(), [&](const Made& x) { return x.node == request.node && x.key == key; });
      if (m.index == constants_.size()) {
        constants_.emplace_back(request.layer->constant_bytes);
        std::vector<Tensor> params;
        for (int entry : parameters_->node_entries(request.node)) params.push_back(parameters_->value(entry));
        request.layer->prepare_constants(ConstantArgs{params, constants_.back().data(), workspace.stream.get()});
      }
      program->use_constants(request.node, constants_[m.index].data());
    }
  }
  workspace.stream->wait();
}

InferenceSession::~InferenceSession() = default;

std::int64_t InferenceSession::output_sample_elements() const {
  return graph_->value_shape(graph_->output()).sample_elements();
}

std::size_t InferenceSession::constant_bytes() const {
  std::size_t total = 0;
  for (const AlignedBuffer& buffer : constants_) total += align_up(buffer.size());
  return total;
}

std::size_t InferenceSession::workspace_count() const {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  return workspaces_made_;
}

// A pooled workspace, or a new one while the memory limit allows it; otherwise waits for
// one to come back (wait) or returns null (!wait).
std::unique_ptr<Workspace> InferenceSession::take_workspace(bool wait) const {
  {
    std::unique_lock<std::mutex> lock(pool_mutex_);
    const auto available = [&] { return !pool_.empty() || workspaces_made_ < max_workspaces_; };
    if (!wait && !available()) return nullptr;
    workspace_returned_.wait(lock, available);
    if (!pool_.empty()) {
      std::unique_ptr<Workspace> workspace = std::move(pool_.back());
      pool_.pop_back();
      return workspace;
    }
    ++workspaces_made_;
    pool_.reserve(workspaces_made_);  // so giving it back never allocates
  }
  try {
    return std::make_unique<Workspace>(*engine_, arena_bytes_);
  } catch (...) {
    // Not made after all: a caller waiting for room may make it instead.
    {
      std::lock_guard<std::mutex> lock(pool_mutex_);
      --workspaces_made_;
    }
    workspace_returned_.notify_one();
    throw;
  }
}

void InferenceSession::give_back(std::unique_ptr<Workspace> workspace) const {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    pool_.push_back(std::move(workspace));
  }
  workspace_returned_.notify_one();
}

void InferenceSession::run(std::span<const float> input, const Shape& input_shape, std::span<float> output) const {
  const Shape& sample = input_sample_shape();
  bool matches = input_shape.rank() == sample.rank() + 1;
  for (int axis = 0; matches && axis < sample.rank(); ++axis) matches = input_shape[axis + 1] == sample[axis];
  if (!matches) {
    throw Error("inference session: input shape " + input_shape.str() + " does not match " + batched_text(sample));
  }
  const std::int64_t batch = input_shape[0];
  if (batch < 1 || batch > options_.max_batch) {
    throw Error("inference session: input shape " + input_shape.str() + " has a batch of " + std::to_string(batch) +
                " samples; this session takes 1 to " + std::to_string(options_.max_batch));
  }
  if (static_cast<std::int64_t>(input.size()) != input_shape.elements()) {
    throw Error("inference session: input shape " + input_shape.str() + " has " + std::to_string(input_shape.elements()) +
                " elements, the input holds " + std::to_string(input.size()));
  }
  const std::int64_t output_elements = batch * output_sample_elements();
  if (static_cast<std::int64_t>(output.size()) < output_elements) {
    throw Error("inference session: a batch of " + std::to_string(batch) + " needs an output of " +
                std::to_string(output_elements) + " floats (" + std::to_string(output_sample_elements()) +
                " per sample), the output holds " + std::to_string(output.size()));
  }
  run(input.data(), batch, output.data());
}

// The threads and workspaces one call holds, given back when it ends (also by an
// exception). At most max_compute_threads, on the stack: a warm call allocates nothing.
// The first workspace may be waited for; the others of a split call are taken only if
// one is free or may be made now (a memory limit may allow fewer workspaces than
// threads, and waiting for a second while holding a first could wait forever), and the
// call runs on as many threads as it got workspaces.
struct InferenceSession::Lease {
  const InferenceSession& session;
  int threads = 0;
  std::array<std::unique_ptr<Workspace>, max_compute_threads> workspaces;

  Lease(const InferenceSession& s, int wanted, bool workspace_per_thread)
      : session(s), threads(s.take_threads(wanted)) {
    try {
      workspaces[0] = session.take_workspace(/*wait=*/true);
      int held = 1;
      while (workspace_per_thread && held < threads) {
        std::unique_ptr<Workspace> more = session.take_workspace(/*wait=*/false);
        if (!more) break;
        workspaces[static_cast<std::size_t>(held++)] = std::move(more);
      }
      if (workspace_per_thread && held < threads) {
        session.give_back_threads(threads - held);
        threads = held;
      }
    } catch (...) {
      release();
      throw;
    }
  }
  ~Lease() { release(); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  void release() {
    for (auto& workspace : workspaces) {
      if (workspace) session.give_back(std::move(workspace));
    }
    session.give_back_threads(threads);
  }
};

// The caller's own thread, plus as many of the budget's others as are free (up to
// `wanted` in all): concurrent callers never run more threads than the budget between
// them, beyond one each.
int InferenceSession::take_threads(int wanted) const {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  const int free = std::max(0, options_.threads - threads_in_use_);
  const int granted = std::max(1, std::min(wanted, free));
  threads_in_use_ += granted;
  return granted;
}

void InferenceSession::give_back_threads(int threads) const {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  threads_in_use_ -= threads;
}

void InferenceSession::run(const float* input, std::int64_t batch, float* output) const {
  if (batch < 1 || batch > options_.max_batch) {
    throw Error("inference session: batch of " + std::to_string(batch) + " samples; this session takes 1 to " +
                std::to_string(options_.max_batch));
  }
  if (input == nullptr || output == nullptr) throw Error("inference session: input or output buffer is null");
  const std::int64_t micro_count = (batch + options_.micro_batch - 1) / options_.micro_batch;
  if (programs_[0]->phase_count() > 1) {
    // Sync points need every micro-batch's kept memory: one workspace, threads per layer.
    Lease lease(*this, 1, false);
    run_in_phases(input, batch, output, *lease.workspaces[0], 1);
    return;
  }
  // Several micro-batches: a workspace per thread, each running whole micro-batches.
  // One: its layers get the threads (and share one workspace).
  const bool split = micro_count > 1;
  Lease lease(*this, split ? static_cast<int>(std::min<std::int64_t>(micro_count, options_.threads)) : options_.threads,
              split);
  run_micro_batches(input, batch, output, lease);
}

// Micro-batch j runs on thread j mod threads: the same cut, and so the same bits, for
// every thread count.
void InferenceSession::run_micro_batches(const float* input, std::int64_t batch, float* output, Lease& lease) const {
  const std::int64_t micro_count = (batch + options_.micro_batch - 1) / options_.micro_batch;
  const bool split = micro_count > 1 && lease.threads > 1;
  // A lone micro-batch with every thread of the budget runs the programs prepared for them.
  const bool wide = !split && lease.threads > 1 && lease.threads == options_.threads && !wide_programs_.empty();
  const auto& programs = wide ? wide_programs_ : programs_;
  auto run_share = [&](int thread, int team, int threads_per_op) {
    StepRun step;
    step.output = output;
    step.threads = wide ? threads_per_op : 1;
    step.runner = wide ? workers_.get() : nullptr;
    for (std::int64_t j = thread; j < micro_count; j += team) {
      const std::int64_t first = j * options_.micro_batch;
      const std::int64_t size = std::min(options_.micro_batch, batch - first);
      step.first_sample = first;
      step.input = input + first * input_sample_elements();
      programs[static_cast<std::size_t>(size - 1)]->run(step, *lease.workspaces[static_cast<std::size_t>(thread)]);
    }
  };
  if (!split) {
    // One thread unless the runner raises it for a layer that repays a team (big GEMMs,
    // attention): small layers, primitives and reorders must not open one.
    const ThreadBudget budget(1);
    run_share(0, 1, lease.threads);
    return;
  }
  std::exception_ptr failure;
  std::mutex failure_mutex;
  parallel_region(lease.threads, [&](int thread, int team) {
    try {
      // A team smaller than asked (the runtime's choice) still runs every micro-batch.
      for (int share = thread; share < lease.threads; share += team) run_share(share, lease.threads, 1);
    } catch (...) {
      std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  });
  if (failure) std::rethrow_exception(failure);
}

// A model whose inference needs whole-batch statistics (BatchNorm without running
// statistics): every micro-batch runs up to each sync point before the reduction, so each
// keeps its own memory across it. The workspace keeps that memory for the next call.
void InferenceSession::run_in_phases(const float* input, std::int64_t batch, float* output, Workspace& workspace,
                                     int threads) const {
  const ThreadBudget budget(threads);
  const auto micro_count = static_cast<std::size_t>((batch + options_.micro_batch - 1) / options_.micro_batch);
  std::vector<const StepProgram*> programs(micro_count);
  std::vector<std::byte*> kept(micro_count);
  if (workspace.kept.size() < micro_count) workspace.kept.resize(micro_count);
  for (std::size_t j = 0; j < micro_count; ++j) {
    const std::int64_t size = std::min(options_.micro_batch, batch - static_cast<std::int64_t>(j) * options_.micro_batch);
    programs[j] = programs_[static_cast<std::size_t>(size - 1)].get();
    if (workspace.kept[j].size() < programs[j]->kept_bytes()) workspace.kept[j] = AlignedBuffer(programs[j]->kept_bytes());
    kept[j] = workspace.kept[j].data();
  }
  if (workspace.batch.size() < programs[0]->batch_bytes()) workspace.batch = AlignedBuffer(programs[0]->batch_bytes());
  const int phases = programs[0]->phase_count();
  for (int phase = 0; phase < phases; ++phase) {
    for (std::size_t j = 0; j < micro_count; ++j) {
      StepRun step;
      step.first_sample = static_cast<std::int64_t>(j) * options_.micro_batch;
      step.input = input + step.first_sample * input_sample_elements();
      step.output = output;
      step.threads = threads;
      programs[j]->run_phase(phase, step, workspace, StepMemoryViews{kept[j], workspace.batch.data()});
    }
    if (phase + 1 < phases) StepProgram::reduce(phase, programs, kept, workspace.batch.data());
  }
}

}  // namespace ember
