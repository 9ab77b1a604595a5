#pragma once
// Optimizers over a ParameterStore's blocks (engine/parameters.h): all values in one span, all
// gradients in another of the same length, and each state tensor (momentum buffer,
// Adam moments) one more block of that layout, so step() is one pass of a fused
// simd::optimizer_kernels() update over everything. The update rules are PyTorch 1.13's
// torch.optim.SGD / Adam / AdamW with foreach=False, maximize=False, amsgrad=False.
//
// Checkpoints: state_tensors() names each state block ("momentum_buffer", "exp_avg",
// "exp_avg_sq") as a span of total_floats() floats laid out like the parameter block
// (entry e of the ParameterStore occupies [offset, offset + elements) of every state
// block, padding stays zero), and step_count() is the number of completed steps. A
// checkpoint stores each block as one F32 safetensors tensor (or slices it per entry)
// and the step in its metadata; import_state() copies them back bitwise, after which
// step() continues exactly as the exporting optimizer would have.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/aligned_buffer.h"

namespace ember {

class ParameterStore;

// Hyper-parameters of every optimizer; each reads the fields it needs.
struct OptimizerOptions {
  float learning_rate = 1e-3f;  // > 0; the schedule may change it per step
  // sgd (torch.optim.SGD)
  float momentum = 0.0f;    // >= 0; 0 keeps no momentum buffer
  float dampening = 0.0f;
  bool nesterov = false;    // needs momentum > 0 and dampening == 0
  // adam, adamw (torch.optim.Adam / AdamW)
  float beta1 = 0.9f;       // in [0, 1)
  float beta2 = 0.999f;     // in [0, 1)
  float epsilon = 1e-8f;    // >= 0
  // >= 0. Unset: PyTorch's default, 0 for sgd and adam, 1e-2 for adamw. Adam adds
  // weight_decay * p to the gradient (L2); AdamW multiplies p by 1 - lr * weight_decay.
  std::optional<float> weight_decay;
};

// A named state block; spans are total_floats() long.
struct OptimizerStateView {
  std::string name;
  std::span<float> values;
};
struct ConstOptimizerStateView {
  std::string name;
  std::span<const float> values;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every value from its gradient, at learning_rate(), on `threads`
  // threads. The update is elementwise, so the result does not depend on the thread count.
  void step(int threads = 1);

  // "sgd", "adam", "adamw"
  virtual std::string_view name() const = 0;
  // Options as validated, weight_decay filled in with the optimizer's default.
  const OptimizerOptions& options() const { return options_; }

  float learning_rate() const { return learning_rate_; }
  // The schedule's value for the next step: finite and >= 0 (a cosine schedule may reach
  // 0); the configured learning rate is left as it was.
  void set_learning_rate(float learning_rate);

  // Steps completed (PyTorch's state['step'] for Adam).
  std::int64_t step_count() const { return step_count_; }
  std::int64_t total_floats() const { return static_cast<std::int64_t>(values_.size()); }
  // Bytes one step() moves, each block once: values and state read and written, gradients
  // read (for the profiler's GB/s, engine/profile.h).
  double step_bytes() const {
    return static_cast<double>(3 + 2 * state_.size()) * static_cast<double>(total_floats()) * sizeof(float);
  }

  // Views over the state blocks, in a fixed order; writing through them changes the state.
  std::vector<OptimizerStateView> state_tensors();
  std::vector<ConstOptimizerStateView> state_tensors() const;
  // The names state_tensors() returns, in its order.
  std::vector<std::string> state_names() const;
  // Restores a state exported by an optimizer of the same kind and options over a block of
  // the same length: every named tensor must be present, once, with total_floats() floats.
  void import_state(std::int64_t step_count, std::span<const ConstOptimizerStateView> tensors);

  // Values [begin, end) of the block that step() leaves alone, values and state bitwise
  // (parameters frozen for fine-tuning, as PyTorch's optimizer over the others only).
  // Ranges sorted, not overlapping and within the block; replaces any earlier ones.
  struct Range {
    std::int64_t begin = 0, end = 0;
  };
  void freeze(std::vector<Range> frozen);

 protected:
  // values and gradients: the ParameterStore's blocks (equal length, not owned).
  Optimizer(std::span<float> values, std::span<const float> gradients, OptimizerOptions options,
            std::vector<std::string> state_names);
  // One update of values [begin, begin + count); `step` is 1 for the first update.
  virtual void update(std::int64_t step, std::int64_t begin, std::int64_t count) = 0;
  float* state_block(std::size_t index);

  std::span<float> values_;
  std::span<const float> gradients_;
  OptimizerOptions options_;

 private:
  float learning_rate_;
  std::int64_t step_count_ = 0;
  std::vector<std::string> state_names_;
  std::vector<AlignedBuffer> state_;
  std::vector<Range> trainable_;  // the complement of the frozen ranges; empty block: none
  // update() over [begin, end) where it overlaps the trainable ranges.
  void update_trainable(std::int64_t step, std::int64_t begin, std::int64_t end);
};

// torch.optim.SGD(lr, momentum, dampening, weight_decay, nesterov). State:
// "momentum_buffer" when momentum != 0 (initialized to the first step's gradient).
class SgdOptimizer final : public Optimizer {
 public:
  SgdOptimizer(std::span<float> values, std::span<const float> gradients, const OptimizerOptions& options);
  std::string_view name() const override { return "sgd"; }

 private:
  void update(std::int64_t step, std::int64_t begin, std::int64_t count) override;
};

// torch.optim.Adam (decoupled = false) or AdamW (decoupled = true). State: "exp_avg",
// "exp_avg_sq".
class AdamOptimizer final : public Optimizer {
 public:
  AdamOptimizer(std::span<float> values, std::span<const float> gradients, const OptimizerOptions& options,
                bool decoupled_weight_decay);
  std::string_view name() const override { return decoupled_weight_decay_ ? "adamw" : "adam"; }

 private:
  void update(std::int64_t step, std::int64_t begin, std::int64_t count) override;
  bool decoupled_weight_decay_;
};

// The state blocks the optimizer `name` keeps with these options, in state_tensors()
// order: what it will allocate, known before it is made (estimate_step_memory).
std::vector<std::string> optimizer_state_names(std::string_view name, const OptimizerOptions& options);

// "sgd" | "adam" | "adamw"; any other name is an error that lists the valid ones.
std::unique_ptr<Optimizer> make_optimizer(std::string_view name, const OptimizerOptions& options,
                                          std::span<float> values, std::span<const float> gradients);
std::unique_ptr<Optimizer> make_optimizer(std::string_view name, const OptimizerOptions& options,
                                          ParameterStore& parameters);

}  // namespace ember
