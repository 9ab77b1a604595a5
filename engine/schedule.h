#pragma once
// Learning-rate schedules as pure functions of the optimizer step: the rate of step s
// depends on s and the options only, so a run resumed from a checkpoint at step s gets
// exactly the rates an uninterrupted run would have.
//
// With base rate b and t the schedule's clock (t = s counting steps, or t = floor(s /
// steps_per_epoch) counting epochs, i.e. PyTorch's scheduler.step() once per epoch):
//   constant: b
//   step:     b * gamma^floor(t / step_size)                          (StepLR)
//   cosine:   eta_min + (b - eta_min) * (1 + cos(pi * t / t_max)) / 2  (CosineAnnealingLR's
//             closed form; past t_max it follows the same cosine back up, as PyTorch's)
//   one_cycle: OneCycleLR's two cosine phases (anneal_strategy "cos", three_phase off)
//             over total_steps: with u = pct_start * total_steps - 1 (the step where the
//             first phase ends; it may be fractional), the rate rises from b / div_factor
//             at t = 0 to b at t = u, then falls to b / (div_factor * final_div_factor)
//             at t = total_steps - 1; each phase is end + (start - end) * (1 + cos(pi *
//             p)) / 2 with p the fraction of the phase done. Past the last step the rate
//             stays at its final value (PyTorch refuses to step there). A phase of zero
//             length (u = 0, where PyTorch divides by zero) gives its end rate. Only the
//             rate is scheduled: it matches OneCycleLR(cycle_momentum=False).
// Warmup multiplies that by min(1, (s + 1) / warmup_steps), counted in optimizer steps
// whatever the unit: the first step runs at 1/warmup_steps of the rate, step
// warmup_steps - 1 at the full rate. This is PyTorch's LinearLR(start_factor =
// 1/warmup_steps, end_factor = 1, total_iters = warmup_steps - 1) stepped every
// optimizer step and chained (multiplied) with the main schedule.
#include <cstdint>
#include <string_view>

namespace ember {

enum class ScheduleKind { constant, step, cosine, one_cycle };
enum class ScheduleUnit { steps, epochs };

struct ScheduleOptions {
  ScheduleKind kind = ScheduleKind::constant;
  // What step_size and t_max count; epochs need steps_per_epoch.
  ScheduleUnit unit = ScheduleUnit::steps;
  std::int64_t steps_per_epoch = 1;  // >= 1
  // step
  std::int64_t step_size = 1;  // >= 1
  double gamma = 0.1;          // > 0
  // cosine
  std::int64_t t_max = 1;  // >= 1
  double eta_min = 0.0;    // >= 0
  // one_cycle (PyTorch's names and defaults); total_steps counts the unit too.
  std::int64_t total_steps = 1;    // >= 1
  double pct_start = 0.3;          // in [0, 1]
  double div_factor = 25.0;        // > 0: the first rate is b / div_factor
  double final_div_factor = 1e4;   // > 0: the last is b / (div_factor * final_div_factor)
  // Linear warmup over this many optimizer steps; 0 or 1: none.
  std::int64_t warmup_steps = 0;
};

class LearningRateSchedule {
 public:
  // Validates the options; base_learning_rate > 0 (the optimizer's configured rate).
  LearningRateSchedule(double base_learning_rate, const ScheduleOptions& options);

  // The rate of optimizer step `step` (0 for the first step), >= 0.
  double at(std::int64_t step) const;

  double base_learning_rate() const { return base_learning_rate_; }
  const ScheduleOptions& options() const { return options_; }

 private:
  double base_learning_rate_;
  ScheduleOptions options_;
};

// "constant" | "step" | "cosine" | "onecycle"; any other name is an error that lists the valid ones.
ScheduleKind schedule_kind_from_name(std::string_view name);
std::string_view schedule_kind_name(ScheduleKind kind);
// "steps" | "epochs"
ScheduleUnit schedule_unit_from_name(std::string_view name);

}  // namespace ember
