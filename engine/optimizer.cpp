#include "engine/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "engine/error.h"
#include "engine/parameters.h"
#include "engine/text.h"
#include "engine/threading.h"
#include "simd/optimizer.h"

namespace ember {

namespace {

void require_finite(std::string_view optimizer, std::string_view what, float value) {
  if (!std::isfinite(value)) {
    throw Error(std::string(optimizer) + ": " + std::string(what) + " must be finite, found " + format_number(value));
  }
}

void check_learning_rate(std::string_view optimizer, float learning_rate) {
  if (!(learning_rate > 0.0f)) {
    throw Error(std::string(optimizer) + ": learning rate must be positive, found " + format_number(learning_rate));
  }
  require_finite(optimizer, "learning rate", learning_rate);
}

void check_weight_decay(std::string_view optimizer, float weight_decay) {
  require_finite(optimizer, "weight decay", weight_decay);
  if (weight_decay < 0.0f) {
    throw Error(std::string(optimizer) + ": weight decay must be >= 0, found " + format_number(weight_decay));
  }
}

// The checks of torch.optim.SGD.__init__, plus finiteness.
OptimizerOptions validated_sgd(OptimizerOptions options) {
  check_learning_rate("sgd", options.learning_rate);
  require_finite("sgd", "momentum", options.momentum);
  require_finite("sgd", "dampening", options.dampening);
  if (options.momentum < 0.0f) {
    throw Error("sgd: momentum must be >= 0, found " + format_number(options.momentum));
  }
  if (!options.weight_decay) options.weight_decay = 0.0f;
  check_weight_decay("sgd", *options.weight_decay);
  if (options.nesterov && (options.momentum <= 0.0f || options.dampening != 0.0f)) {
    throw Error("sgd: nesterov momentum requires momentum > 0 and dampening 0, found momentum " +
                format_number(options.momentum) + " and dampening " + format_number(options.dampening));
  }
  return options;
}

// The checks of torch.optim.Adam / AdamW.__init__, plus finiteness.
OptimizerOptions validated_adam(OptimizerOptions options, bool decoupled) {
  const std::string_view name = decoupled ? "adamw" : "adam";
  check_learning_rate(name, options.learning_rate);
  require_finite(name, "epsilon", options.epsilon);
  if (options.epsilon < 0.0f) {
    throw Error(std::string(name) + ": epsilon must be >= 0, found " + format_number(options.epsilon));
  }
  if (!(options.beta1 >= 0.0f && options.beta1 < 1.0f)) {
    throw Error(std::string(name) + ": beta1 must be in [0, 1), found " + format_number(options.beta1));
  }
  if (!(options.beta2 >= 0.0f && options.beta2 < 1.0f)) {
    throw Error(std::string(name) + ": beta2 must be in [0, 1), found " + format_number(options.beta2));
  }
  if (!options.weight_decay) options.weight_decay = decoupled ? 1e-2f : 0.0f;
  check_weight_decay(name, *options.weight_decay);
  return options;
}

}  // namespace

Optimizer::Optimizer(std::span<float> values, std::span<const float> gradients, OptimizerOptions options,
                     std::vector<std::string> state_names)
    : values_(values),
      gradients_(gradients),
      options_(options),
      learning_rate_(options.learning_rate),
      state_names_(std::move(state_names)) {
  if (values.size() != gradients.size()) {
    throw Error("optimizer: the gradient block must match the value block, found " + std::to_string(gradients.size()) +
                " gradients for " + std::to_string(values.size()) + " values");
  }
  for (std::size_t i = 0; i < state_names_.size(); ++i) state_.emplace_back(values.size() * sizeof(float));
  trainable_.push_back({0, static_cast<std::int64_t>(values.size())});
}

void Optimizer::freeze(std::vector<Range> frozen) {
  std::vector<Range> trainable;
  std::int64_t next = 0;  // the first value not yet assigned to either
  for (const Range& r : frozen) {
    if (r.begin < next || r.end < r.begin || r.end > total_floats()) {
      throw Error(std::string(name()) + ": frozen range [" + std::to_string(r.begin) + ", " + std::to_string(r.end) +
                  ") must be sorted, disjoint and within the block of " + std::to_string(total_floats()) + " values");
    }
    if (r.begin > next) trainable.push_back({next, r.begin});
    next = r.end;
  }
  if (next < total_floats()) trainable.push_back({next, total_floats()});
  trainable_ = std::move(trainable);
}

void Optimizer::update_trainable(std::int64_t step, std::int64_t begin, std::int64_t end) {
  for (const Range& r : trainable_) {
    const std::int64_t from = std::max(begin, r.begin), to = std::min(end, r.end);
    if (from < to) update(step, from, to - from);
  }
}

void Optimizer::step(int threads) {
  if (threads < 1) throw Error(std::string(name()) + ": threads must be at least 1, found " + std::to_string(threads));
  const auto total = static_cast<std::int64_t>(values_.size());
  // Chunks of whole cache lines, few enough that a thread's share stays contiguous.
  constexpr std::int64_t chunk = 16384;
  const std::int64_t chunks = (total + chunk - 1) / chunk;
  const std::int64_t step = step_count_ + 1;
  // Waking a second thread costs about as much as updating a few chunks: small models
  // (LeNet's 61k values) update on one thread, or 2 threads would be slower than 1.
  constexpr std::int64_t min_chunks_per_thread = 4;
  const std::int64_t team = std::min<std::int64_t>(threads, chunks / min_chunks_per_thread);
  if (team < 2) {
    update_trainable(step, 0, total);
  } else {
    parallel_region(static_cast<int>(team), [&](int thread, int thread_count) {
      const std::int64_t first = chunks * thread / thread_count, last = chunks * (thread + 1) / thread_count;
      update_trainable(step, first * chunk, std::min(total, last * chunk));
    });
  }
  ++step_count_;
}

void Optimizer::set_learning_rate(float learning_rate) {
  if (!(learning_rate >= 0.0f) || !std::isfinite(learning_rate)) {
    throw Error(std::string(name()) + ": a scheduled learning rate must be finite and >= 0, found " +
                format_number(learning_rate));
  }
  learning_rate_ = learning_rate;
}

float* Optimizer::state_block(std::size_t index) { return state_[index].floats(); }

std::vector<OptimizerStateView> Optimizer::state_tensors() {
  std::vector<OptimizerStateView> views;
  for (std::size_t i = 0; i < state_names_.size(); ++i) {
    views.push_back({state_names_[i], {state_[i].floats(), values_.size()}});
  }
  return views;
}

std::vector<ConstOptimizerStateView> Optimizer::state_tensors() const {
  std::vector<ConstOptimizerStateView> views;
  for (std::size_t i = 0; i < state_names_.size(); ++i) {
    views.push_back({state_names_[i], {state_[i].floats(), values_.size()}});
  }
  return views;
}

std::vector<std::string> Optimizer::state_names() const { return state_names_; }

void Optimizer::import_state(std::int64_t step_count, std::span<const ConstOptimizerStateView> tensors) {
  const std::string who = "optimizer " + std::string(name());
  if (step_count < 0) throw Error(who + ": step count must be >= 0, found " + std::to_string(step_count));
  std::string expected = join(state_names_);
  if (expected.empty()) expected = "none";
  // Validate everything before copying anything: a rejected import leaves the state as it was.
  std::vector<const ConstOptimizerStateView*> sources(state_names_.size(), nullptr);
  for (const ConstOptimizerStateView& tensor : tensors) {
    std::size_t index = 0;
    while (index < state_names_.size() && state_names_[index] != tensor.name) ++index;
    if (index == state_names_.size()) {
      throw Error(who + " has no state tensor '" + tensor.name + "'; its state tensors are: " + expected);
    }
    if (sources[index] != nullptr) throw Error(who + ": state tensor '" + tensor.name + "' given twice");
    if (tensor.values.size() != values_.size()) {
      throw Error(who + ": state tensor '" + tensor.name + "' must have " + std::to_string(values_.size()) +
                  " floats (the parameter block), found " + std::to_string(tensor.values.size()));
    }
    sources[index] = &tensor;
  }
  for (std::size_t i = 0; i < state_names_.size(); ++i) {
    if (sources[i] == nullptr) {
      throw Error(who + ": state tensor '" + state_names_[i] + "' is missing; expected: " + expected);
    }
  }
  for (std::size_t i = 0; i < state_names_.size(); ++i) {
    if (!values_.empty()) std::memcpy(state_[i].floats(), sources[i]->values.data(), values_.size() * sizeof(float));
  }
  step_count_ = step_count;
}

SgdOptimizer::SgdOptimizer(std::span<float> values, std::span<const float> gradients, const OptimizerOptions& options)
    : Optimizer(values, gradients, validated_sgd(options), optimizer_state_names("sgd", options)) {}

void SgdOptimizer::update(std::int64_t step, std::int64_t begin, std::int64_t count) {
  simd::SgdHyper hyper{};
  hyper.lr = learning_rate();
  hyper.momentum = options_.momentum;
  hyper.dampening = options_.dampening;
  hyper.weight_decay = *options_.weight_decay;
  hyper.nesterov = options_.nesterov;
  // PyTorch's momentum_buffer is None until the first step, which sets it to the gradient.
  hyper.first_step = step == 1;
  float* momentum_buffer = options_.momentum != 0.0f ? state_block(0) + begin : nullptr;
  simd::optimizer_kernels().sgd_step(values_.data() + begin, gradients_.data() + begin, momentum_buffer, count, hyper);
}

AdamOptimizer::AdamOptimizer(std::span<float> values, std::span<const float> gradients, const OptimizerOptions& options,
                             bool decoupled_weight_decay)
    : Optimizer(values, gradients, validated_adam(options, decoupled_weight_decay),
                optimizer_state_names(decoupled_weight_decay ? "adamw" : "adam", options)),
      decoupled_weight_decay_(decoupled_weight_decay) {}

void AdamOptimizer::update(std::int64_t step, std::int64_t begin, std::int64_t count) {
  simd::AdamHyper hyper{};
  hyper.lr = learning_rate();
  hyper.beta1 = options_.beta1;
  hyper.beta2 = options_.beta2;
  hyper.eps = options_.epsilon;
  hyper.weight_decay = *options_.weight_decay;
  hyper.decoupled_weight_decay = decoupled_weight_decay_;
  hyper.step = step;
  simd::optimizer_kernels().adam_step(values_.data() + begin, gradients_.data() + begin, state_block(0) + begin,
                                      state_block(1) + begin, count, hyper);
}

std::vector<std::string> optimizer_state_names(std::string_view name, const OptimizerOptions& options) {
  if (name == "sgd") return options.momentum != 0.0f ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{};
  if (name == "adam" || name == "adamw") return {"exp_avg", "exp_avg_sq"};
  throw Error("unknown optimizer '" + std::string(name) + "'; valid optimizers: sgd, adam, adamw");
}

std::unique_ptr<Optimizer> make_optimizer(std::string_view name, const OptimizerOptions& options,
                                          std::span<float> values, std::span<const float> gradients) {
  if (name == "sgd") return std::make_unique<SgdOptimizer>(values, gradients, options);
  if (name == "adam") return std::make_unique<AdamOptimizer>(values, gradients, options, false);
  if (name == "adamw") return std::make_unique<AdamOptimizer>(values, gradients, options, true);
  throw Error("unknown optimizer '" + std::string(name) + "'; valid optimizers: sgd, adam, adamw");
}

std::unique_ptr<Optimizer> make_optimizer(std::string_view name, const OptimizerOptions& options,
                                          ParameterStore& parameters) {
  return make_optimizer(name, options, parameters.values(), std::as_const(parameters).gradients());
}

}  // namespace ember
