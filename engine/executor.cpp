#include "engine/executor.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/anomaly.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/profile.h"
#include "engine/threading.h"
#include "engine/training_graph.h"
#include "simd/elementwise.h"

namespace ember {

void check_executor_options(const ExecutorOptions& options) {
  const std::string cap = std::to_string(max_compute_threads);
  if (options.threads < 1 || options.threads > max_compute_threads) {
    throw Error("thread count must be between 1 and " + cap + ", found " + std::to_string(options.threads));
  }
  // Lanes are capped too: sum_gradient_lanes gathers them on the stack.
  if (options.gradient_lanes < 1 || options.gradient_lanes > max_compute_threads) {
    throw Error("gradient lanes must be between 1 and " + cap + ", found " + std::to_string(options.gradient_lanes));
  }
  if (options.micro_batch < 1) {
    throw Error("micro-batch size must be at least 1, found " + std::to_string(options.micro_batch));
  }
}

std::int64_t auto_micro_batch(const Graph& graph, std::int64_t parameter_floats, std::int64_t batch) {
  constexpr std::int64_t smallest = 16, largest = 64;
  std::int64_t forward_floats = 0;  // one sample's forward values, the input left out
  for (ValueId v = 1; v < graph.value_count(); ++v) forward_floats += graph.value_shape(v).sample_elements();
  std::int64_t micro_batch = smallest;
  while (micro_batch < largest && batch >= 4 * micro_batch && 4 * parameter_floats >= 2 * micro_batch * forward_floats) {
    micro_batch *= 2;
  }
  return micro_batch;
}

BatchLayout batch_layout(const ExecutorOptions& options, std::int64_t batch, Mode mode) {
  if (batch < 1) throw Error("batch size must be at least 1, found " + std::to_string(batch));
  BatchLayout layout;
  layout.full_size = std::min(options.micro_batch, batch);
  layout.micro_batches = (batch + options.micro_batch - 1) / options.micro_batch;
  layout.last_size = batch - (layout.micro_batches - 1) * options.micro_batch;
  const std::int64_t lanes = std::max(options.gradient_lanes, options.threads);
  layout.gradient_lanes = mode == Mode::training ? std::min(lanes, layout.micro_batches) : 0;
  // Training: whole lanes per thread; inference: whole micro-batches.
  layout.threads = static_cast<int>(
      std::min<std::int64_t>(options.threads, mode == Mode::training ? layout.gradient_lanes : layout.micro_batches));
  return layout;
}

int micro_batch_rank(const BatchLayout& layout, std::int64_t j, int ranks) {
  return lane_rank(layout.gradient_lanes > 0 ? j % layout.gradient_lanes : j, ranks);
}

bool rank_runs_micro_batch(const BatchLayout& layout, std::int64_t j, int rank, int ranks) {
  return micro_batch_rank(layout, j, ranks) == rank;
}

bool step_makes_constants(const BatchLayout& layout) { return layout.gradient_lanes > 0 && layout.micro_batches > 1; }

Executor::Executor(const Graph& graph, ParameterStore& parameters, ExecutorOptions options)
    : graph_(graph), training_graph_(relu_after_max_pools(graph)), parameters_(parameters), options_(options) {
  check_executor_options(options_);
  options_.gradient_lanes = std::max(options_.gradient_lanes, options_.threads);
  engine_ = std::make_unique<dnnl::engine>(dnnl::engine::kind::cpu, 0);
}

Executor::~Executor() = default;

std::int64_t Executor::output_sample_elements() const { return graph_.value_shape(graph_.output()).sample_elements(); }

std::size_t Executor::buffer_bytes() const {
  std::size_t bytes = 0;
  for (const Workspace& workspace : workspaces_) bytes += workspace.bytes();
  for (const AlignedBuffer& kept : kept_) bytes += align_up(kept.size());
  bytes += align_up(batch_memory_.size());
  for (const AlignedBuffer& lane : extra_lanes_) bytes += align_up(lane.size());
  for (const HeldConstants& held : constants_) bytes += align_up(held.memory.size());
  return bytes;
}

StepProgram& Executor::program(std::int64_t micro_batch, Mode mode, bool computes_loss) {
  for (const auto& p : programs_) {
    if (p->micro_batch() == micro_batch && p->mode() == mode && p->computes_loss() == computes_loss) return *p;
  }
  const Graph& graph = mode == Mode::training && training_graph_ != nullptr ? *training_graph_ : graph_;
  programs_.push_back(std::make_unique<StepProgram>(graph, parameters_, micro_batch, mode, *engine_,
                                                    options_.plan_strategy, computes_loss));
  return *programs_.back();
}

void Executor::check_batch_for_anomalies(const float* input, std::int64_t batch) const {
  // What the step reads from outside is checked first: then a non-finite value found
  // later was made by the op that wrote it.
  const std::int64_t sample_elements = graph_.input_sample_shape().elements();
  const std::span<const float> batch_input(input, static_cast<std::size_t>(batch * sample_elements));
  if (const auto bad = first_non_finite(batch_input)) {
    Anomaly a;
    a.phase = "forward";
    a.layer = "input";
    a.tensor = "batch input";
    a.index = bad->index;
    a.sample = bad->index / sample_elements;
    a.value = bad->value;
    throw AnomalyError(a);
  }
  if (auto bad = find_parameter_anomaly(graph_, parameters_, parameters_.values(), "forward", "")) {
    bad->note = "the weight was not finite before the step";
    throw AnomalyError(*bad);
  }
}

// Everything one batch runs with: its programs, memory and per-micro-batch results.
struct Executor::Batch {
  const float* input = nullptr;
  std::int64_t size = 0;
  BatchLayout layout;
  bool training = false;
  const Targets* targets = nullptr;
  const Loss* loss = nullptr;
  CounterRandom random;
  float* output = nullptr;
  std::vector<const StepProgram*> programs;  // per micro-batch: the full or the last size
  std::vector<std::byte*> kept;              // per micro-batch: memory kept across sync points
  std::vector<StepResult> results;           // per micro-batch, summed over the phases
  // Per micro-batch: nothing may throw across the parallel region, so an anomaly is
  // recorded and the lowest micro-batch's thrown after it.
  std::vector<std::optional<Anomaly>> anomalies;
};

void Executor::allocate_batch_memory(Batch& b, const StepProgram& full, const StepProgram& last) {
  // One workspace per thread that runs micro-batches, not per thread of the budget: a
  // batch with fewer micro-batches than threads leaves the rest idle.
  while (workspaces_.size() < static_cast<std::size_t>(b.layout.threads)) workspaces_.emplace_back(*engine_);
  for (Workspace& workspace : workspaces_) workspace.reserve(std::max(full.arena_bytes(), last.arena_bytes()));
  if (b.training) {
    while (static_cast<std::int64_t>(extra_lanes_.size()) + 1 < b.layout.gradient_lanes) {
      extra_lanes_.emplace_back(static_cast<std::size_t>(parameters_.total_floats()) * sizeof(float));
    }
  }
  // A graph with sync points keeps memory for every micro-batch of the batch.
  const std::size_t kept_bytes = std::max(full.kept_bytes(), last.kept_bytes());
  const auto micro_count = static_cast<std::size_t>(b.layout.micro_batches);
  if (kept_bytes > 0) {
    if (kept_.size() < micro_count) kept_.resize(micro_count);
    for (std::size_t j = 0; j < micro_count; ++j) {
      if (kept_[j].size() < kept_bytes) kept_[j] = AlignedBuffer(kept_bytes);
    }
  }
  if (batch_memory_.size() < full.batch_bytes()) batch_memory_ = AlignedBuffer(full.batch_bytes());
  b.programs.assign(micro_count, &full);
  b.programs.back() = &last;
  b.kept.assign(micro_count, nullptr);
  for (std::size_t j = 0; kept_bytes > 0 && j < micro_count; ++j) b.kept[j] = kept_[j].data();
  b.results.assign(micro_count, StepResult{});
}

// The weights are fixed for a whole training step, so what layers make of them (packed
// GEMM operands) is made once here, after the previous step's update and before any
// micro-batch runs, instead of in every micro-batch's forward and backward. The packing
// runs on the executor's threads; the bytes do not depend on their count.
void Executor::make_step_constants(const BatchLayout& layout, StepProgram& full, StepProgram& last) {
  // A step that makes none runs from the weights: no program may keep an earlier step's.
  for (StepProgram* program : {&full, &last}) {
    for (const StepProgram::ConstantsRequest& request : program->constants_requests()) {
      program->use_constants(request.node, nullptr);
    }
  }
  if (!step_makes_constants(layout)) return;
  const std::array<const StepProgram*, 2> programs{&full, &last};
  const std::vector<StepConstants> needed = step_constants(programs);
  if (needed.empty()) return;
  dnnl::stream& stream = *workspaces_.front().stream;
  for (const StepConstants& c : needed) {
    auto same = [&](const HeldConstants& h) { return h.node == c.node && h.key == c.key; };
    auto held = std::find_if(constants_.begin(), constants_.end(), same);
    if (held == constants_.end()) {
      constants_.push_back({c.node, c.key, AlignedBuffer(c.bytes)});
      held = constants_.end() - 1;
    } else if (held->memory.size() < c.bytes) {
      held->memory = AlignedBuffer(c.bytes);
    }
    std::vector<Tensor> params;
    for (int entry : parameters_.node_entries(c.node)) params.push_back(parameters_.value(entry));
    c.layer->prepare_constants(ConstantArgs{params, held->memory.data(), &stream, options_.threads});
    for (StepProgram* program : {&full, &last}) {
      for (const StepProgram::ConstantsRequest& request : program->constants_requests()) {
        if (request.node == c.node && request.layer->constants_key() == c.key) program->use_constants(c.node, held->memory.data());
      }
    }
  }
  stream.wait();
}

float* Executor::lane_gradients(std::int64_t lane) {
  return lane == 0 ? parameters_.gradients().data() : extra_lanes_[static_cast<std::size_t>(lane - 1)].floats();
}

// Runs every micro-batch's ops of one phase. Training: whole lanes per thread and,
// within a lane, micro-batches in order (the first overwrites the lane's gradients, the
// rest add). After an anomaly a lane (training) or a thread (inference) stops: its later
// micro-batches have higher indices, and the lowest anomalous micro-batch of each lane
// does not depend on the thread count, so neither does the one thrown.
void Executor::run_phase(Batch& b, int phase) {
  const std::int64_t micro_count = b.layout.micro_batches;
  const std::int64_t lanes = b.training ? b.layout.gradient_lanes : micro_count;
  std::vector<std::string> failures(static_cast<std::size_t>(b.layout.threads));
  auto run_one = [&](std::int64_t j, int thread, std::int64_t lane) {
    StepRun run;
    run.first_sample = j * options_.micro_batch;
    run.input = b.input + run.first_sample * graph_.input_sample_shape().elements();
    run.gradients = b.training ? lane_gradients(lane) : nullptr;
    run.accumulate = b.training && j != lane;
    run.loss = b.loss;
    run.targets = b.targets;
    run.grad_scale = 1.0f / static_cast<float>(b.size);
    run.random = b.random;
    run.output = b.output;
    run.profile = profile_ != nullptr ? &profile_->thread(thread) : nullptr;
    if (!b.anomalies.empty()) {
      run.anomaly = &b.anomalies[static_cast<std::size_t>(j)];
      run.micro_batch_index = j;
    }
    // Across ranks, the lane's last micro-batch sends each layer's gradients once final.
    const std::function<void(int)> written = [&, lane](int node) {
      communicator_->bucket_ready(lane, static_cast<std::size_t>(node_buckets_[static_cast<std::size_t>(node)]));
    };
    if (b.training && distributed() && !node_buckets_.empty() && j + lanes >= micro_count) run.parameters_written = &written;
    const auto index = static_cast<std::size_t>(j);
    b.results[index] += b.programs[index]->run_phase(phase, run, workspaces_[static_cast<std::size_t>(thread)],
                                                     StepMemoryViews{b.kept[index], batch_memory_.data()});
    return !b.anomalies.empty() && b.anomalies[index].has_value();
  };
  // This rank's lanes (all of them in one process), dealt to the threads in order.
  std::vector<std::int64_t> own_lanes;
  for (std::int64_t lane = 0; lane < lanes; ++lane) {
    if (!distributed() || lane_rank(lane, communicator_->size()) == communicator_->rank()) own_lanes.push_back(lane);
  }
  const auto own = static_cast<std::int64_t>(own_lanes.size());
  // Across ranks, a lane finished by the last phase goes out while the others still run.
  const bool send_lanes = b.training && distributed() && phase + 1 == b.programs.front()->phase_count();
  const ScopedWall wall(profile_, WallPart::step_ops);
  parallel_region(b.layout.threads, [&](int thread, int thread_count) {
    try {
      for (std::int64_t k = thread; k < own; k += thread_count) {
        const std::int64_t lane = own_lanes[static_cast<std::size_t>(k)];
        for (std::int64_t j = lane; j < micro_count; j += lanes) {
          if (run_one(j, thread, b.training ? lane : 0)) break;
        }
        if (send_lanes) communicator_->lane_ready(lane);
      }
    } catch (const std::exception& e) {
      failures[static_cast<std::size_t>(thread)] = e.what();
    }
  });
  for (const std::string& f : failures) {
    if (!f.empty()) throw Error(f);
  }
  for (const std::optional<Anomaly>& anomaly : b.anomalies) {
    if (anomaly) throw AnomalyError(*anomaly);
  }
}

// Sums the lanes into lane 0 (the store's gradient block) in lane order, split by
// parameter ranges across threads: the order per element never changes.
void Executor::sum_gradient_lanes(std::int64_t lanes) {
  const std::int64_t total = parameters_.total_floats();
  constexpr std::int64_t chunk = 16384;
  const std::int64_t chunks = (total + chunk - 1) / chunk;
  parallel_region(options_.threads, [&](int thread, int thread_count) {
    std::array<const float*, max_compute_threads> lane_pointers{};
    for (std::int64_t c = thread; c < chunks; c += thread_count) {
      const std::int64_t begin = c * chunk;
      const std::int64_t n = std::min(chunk, total - begin);
      for (std::int64_t l = 0; l < lanes; ++l) lane_pointers[static_cast<std::size_t>(l)] = lane_gradients(l) + begin;
      simd::elementwise_kernels().sum_lanes(lane_gradients(0) + begin, lane_pointers.data(), lanes, n);
    }
  });
  if (options_.detect_anomaly) {
    // Every lane was finite; only their sum can overflow.
    if (auto bad = find_parameter_anomaly(graph_, parameters_, parameters_.gradients(), "backward", " gradient")) {
      bad->note = "the sum of the micro-batches' finite gradients";
      throw AnomalyError(*bad);
    }
  }
}

// Before a sync point across ranks: every micro-batch's partial sums, from the rank that
// ran it, into every rank's kept memory, so each runs the same reduction over the same
// bytes in micro-batch order and gets the same batch statistics (and running buffers).
void Executor::share_partials(const Batch& b, int phase) {
  const auto micro_count = static_cast<std::size_t>(b.layout.micro_batches);
  const std::size_t bytes = b.programs.front()->reduced_partials(phase).bytes;
  const int ranks = communicator_->size();
  std::vector<std::byte> mine(micro_count * bytes), all(mine.size() * static_cast<std::size_t>(ranks));
  auto owner = [&](std::size_t j) { return micro_batch_rank(b.layout, static_cast<std::int64_t>(j), ranks); };
  for (std::size_t j = 0; j < micro_count; ++j) {
    const StepProgram::KeptRange range = b.programs[j]->reduced_partials(phase);
    if (range.bytes != bytes) throw Error("executor: micro-batches' partial sums differ in size at a sync point");
    if (owner(j) == communicator_->rank()) std::memcpy(mine.data() + j * bytes, b.kept[j] + range.offset, bytes);
  }
  communicator_->all_gather(mine.data(), mine.size(), all.data());
  for (std::size_t j = 0; j < micro_count; ++j) {
    const std::byte* from = all.data() + static_cast<std::size_t>(owner(j)) * mine.size() + j * bytes;
    std::memcpy(b.kept[j] + b.programs[j]->reduced_partials(phase).offset, from, bytes);
  }
}

// The exchange's buckets: one per node with parameters, from its first entry to the next
// node's. If a node's entries did not lie within its bucket, none (whole lanes only).
void Executor::make_buckets() {
  std::vector<std::pair<std::int64_t, int>> starts;  // (first offset, node)
  const auto nodes = static_cast<int>(graph_.nodes().size());
  for (int node = 0; node < nodes; ++node) {
    std::int64_t first = parameters_.total_floats();
    for (int entry : parameters_.node_entries(node)) first = std::min(first, parameters_.entries()[static_cast<std::size_t>(entry)].offset);
    if (!parameters_.node_entries(node).empty()) starts.emplace_back(first, node);
  }
  std::sort(starts.begin(), starts.end());
  node_buckets_.assign(static_cast<std::size_t>(nodes), 0);
  bucket_starts_.assign(1, 0);
  for (std::size_t k = 0; k < starts.size(); ++k) {
    if (k > 0) bucket_starts_.push_back(starts[k].first);
    node_buckets_[static_cast<std::size_t>(starts[k].second)] = static_cast<int>(k);
  }
  for (int node = 0; node < nodes; ++node) {
    const auto k = static_cast<std::size_t>(node_buckets_[static_cast<std::size_t>(node)]);
    const std::int64_t end = k + 1 < bucket_starts_.size() ? bucket_starts_[k + 1] : parameters_.total_floats();
    for (int entry : parameters_.node_entries(node)) {
      const ParameterEntry& e = parameters_.entries()[static_cast<std::size_t>(entry)];
      if (e.offset < bucket_starts_[k] || e.offset + e.spec.shape.elements() > end) {
        node_buckets_.clear();
        bucket_starts_.assign(1, 0);
        return;
      }
    }
  }
}

bool Executor::distributed() const { return communicator_ != nullptr && communicator_->size() > 1; }

// Every micro-batch's results from the rank that ran it, summed in micro-batch order as
// one process sums them.
StepResult Executor::gather_results(const Batch& b) const {
  StepResult total;
  if (!distributed()) {
    for (const StepResult& r : b.results) total += r;
    return total;
  }
  const int ranks = communicator_->size();
  const std::size_t bytes = b.results.size() * sizeof(StepResult);
  std::vector<StepResult> all(b.results.size() * static_cast<std::size_t>(ranks));
  communicator_->all_gather(b.results.data(), bytes, all.data());
  for (std::int64_t j = 0; j < b.layout.micro_batches; ++j) {
    const int owner = micro_batch_rank(b.layout, j, ranks);
    total += all[static_cast<std::size_t>(owner) * b.results.size() + static_cast<std::size_t>(j)];
  }
  return total;
}

StepResult Executor::run_batch(const float* input, std::int64_t batch, Mode mode, const Targets* targets, const Loss* loss,
                               std::uint64_t step_seed, float* output) {
  if (input == nullptr) throw Error("no input given");
  if (targets != nullptr && !targets->labels.empty() && static_cast<std::int64_t>(targets->labels.size()) < batch) {
    throw Error("batch of " + std::to_string(batch) + " samples but only " + std::to_string(targets->labels.size()) +
                " labels");
  }
  Batch b;
  b.input = input;
  b.size = batch;
  b.layout = batch_layout(options_, batch, mode);
  b.training = mode == Mode::training;
  b.targets = targets;
  b.loss = loss;
  b.random = CounterRandom(step_seed);
  b.output = output;
  if (options_.detect_anomaly) {
    check_batch_for_anomalies(input, batch);
    b.anomalies.resize(static_cast<std::size_t>(b.layout.micro_batches));
  }
  // Compile every size this batch needs before entering a parallel region.
  StepProgram& full = program(b.layout.full_size, mode, loss != nullptr);
  StepProgram& last = program(b.layout.last_size, mode, loss != nullptr);
  if (distributed() && output != nullptr) throw Error("inference with outputs runs in one process, not across ranks");
  allocate_batch_memory(b, full, last);
  if (profile_ != nullptr) profile_->prepare(full.profiled_ops(), b.layout.threads);
  if (b.training && distributed()) {
    std::vector<const float*> lanes(static_cast<std::size_t>(b.layout.gradient_lanes));
    for (std::int64_t l = 0; l < b.layout.gradient_lanes; ++l) lanes[static_cast<std::size_t>(l)] = lane_gradients(l);
    if (bucket_starts_.empty()) make_buckets();
    communicator_->begin_lane_sum(b.layout.gradient_lanes, std::move(lanes), lane_gradients(0), parameters_.total_floats(),
                                  bucket_starts_);
  }
  if (b.training) {
    const ScopedWall wall(profile_, WallPart::constants);
    make_step_constants(b.layout, full, last);
  }
  // Phases are separated by sync points: each reduction runs once every micro-batch has
  // written its partial sums, over them in micro-batch order.
  for (int phase = 0; phase < full.phase_count(); ++phase) {
    run_phase(b, phase);
    if (phase + 1 < full.phase_count()) {
      const ScopedWall wall(profile_, WallPart::step_ops);
      if (distributed()) share_partials(b, phase);
      StepProgram::reduce(phase, b.programs, b.kept, batch_memory_.data(), profile_ != nullptr ? &profile_->thread(0) : nullptr);
    }
  }
  if (b.training && distributed()) {
    // What the exchange adds to the step once the lanes are done (begun in run_phase).
    const ScopedWall wall(profile_, WallPart::lane_sum,
                          static_cast<double>((b.layout.gradient_lanes + 1) * parameters_.total_floats()) * sizeof(float));
    communicator_->end_lane_sum();
  } else if (b.training && b.layout.gradient_lanes > 1) {
    // Nominal traffic: every lane read, lane 0 written.
    const ScopedWall wall(profile_, WallPart::lane_sum,
                          static_cast<double>((b.layout.gradient_lanes + 1) * parameters_.total_floats()) * sizeof(float));
    sum_gradient_lanes(b.layout.gradient_lanes);
  }
  return gather_results(b);
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
