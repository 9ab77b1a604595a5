#include "engine/session.h"

#include <algorithm>
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
  // The store's two blocks (values, and gradients it holds in every mode) and the first
  // workspaces must fit; further workspaces are made while they fit.
  const std::size_t weights = 2 * parameters_->values().size_bytes() + parameters_->buffers().size_bytes();
  const std::size_t workspace = std::max<std::size_t>(1, align_up(arena_bytes_));
  check_memory_limit(weights + static_cast<std::size_t>(options_.workspaces) * workspace, limit, "inference session",
                     "weights and gradients " + format_bytes(weights) + ", " + std::to_string(options_.workspaces) +
                         " workspace(s) of " + format_bytes(workspace));
  max_workspaces_ = std::max(static_cast<std::size_t>(options_.workspaces), (limit - weights) / workspace);
  for (int i = 0; i < options_.workspaces; ++i) give_back(take_workspace());
}

InferenceSession::~InferenceSession() = default;

std::int64_t InferenceSession::output_sample_elements() const {
  return graph_->value_shape(graph_->output()).sample_elements();
}

std::size_t InferenceSession::workspace_count() const {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  return workspaces_made_;
}

std::unique_ptr<Workspace> InferenceSession::take_workspace() const {
  {
    std::unique_lock<std::mutex> lock(pool_mutex_);
    workspace_returned_.wait(lock, [&] { return !pool_.empty() || workspaces_made_ < max_workspaces_; });
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

void InferenceSession::run(const float* input, std::int64_t batch, float* output) const {
  if (batch < 1 || batch > options_.max_batch) {
    throw Error("inference session: batch of " + std::to_string(batch) + " samples; this session takes 1 to " +
                std::to_string(options_.max_batch));
  }
  if (input == nullptr || output == nullptr) throw Error("inference session: input or output buffer is null");
  std::unique_ptr<Workspace> workspace = take_workspace();
  try {
    // One compute thread per call: concurrency comes from concurrent callers. The budget
    // also keeps oneDNN from starting threads of its own.
    const OneThreadBudget one_thread;
    if (programs_[0]->phase_count() == 1) {
      StepRun step;
      for (std::int64_t first = 0; first < batch; first += options_.micro_batch) {
        const std::int64_t size = std::min(options_.micro_batch, batch - first);
        step.first_sample = first;
        step.input = input + first * input_sample_elements();
        step.output = output;
        programs_[static_cast<std::size_t>(size - 1)]->run(step, *workspace);
      }
    } else {
      run_in_phases(input, batch, output, *workspace);
    }
  } catch (...) {
    give_back(std::move(workspace));
    throw;
  }
  give_back(std::move(workspace));
}

// A model whose inference needs whole-batch statistics (BatchNorm without running
// statistics): every micro-batch runs up to each sync point before the reduction, so each
// keeps its own memory across it. The workspace keeps that memory for the next call.
void InferenceSession::run_in_phases(const float* input, std::int64_t batch, float* output, Workspace& workspace) const {
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
      programs[j]->run_phase(phase, step, workspace, StepMemoryViews{kept[j], workspace.batch.data()});
    }
    if (phase + 1 < phases) StepProgram::reduce(phase, programs, kept, workspace.batch.data());
  }
}

}  // namespace ember
