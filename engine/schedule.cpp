#include "engine/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "engine/error.h"
#include "engine/text.h"

namespace ember {

namespace {

void require_at_least(std::string_view what, std::int64_t value, std::int64_t minimum) {
  if (value < minimum) {
    throw Error("learning-rate schedule: " + std::string(what) + " must be >= " + std::to_string(minimum) + ", found " +
                std::to_string(value));
  }
}

void require_positive(std::string_view what, double value) {
  if (!(value > 0.0) || !std::isfinite(value)) {
    throw Error("learning-rate schedule: " + std::string(what) + " must be positive and finite, found " +
                format_number(value));
  }
}

// PyTorch's _annealing_cos: from `start` at fraction 0 to `end` at fraction 1.
double cosine_between(double start, double end, double fraction) {
  return end + (start - end) * (1.0 + std::cos(std::numbers::pi * fraction)) / 2.0;
}

double one_cycle_rate(double base, const ScheduleOptions& o, std::int64_t t) {
  const double initial = base / o.div_factor;
  const double final_rate = initial / o.final_div_factor;
  const double last = static_cast<double>(o.total_steps - 1);
  const double peak = o.pct_start * static_cast<double>(o.total_steps) - 1.0;  // where the first phase ends
  const double step = std::min(static_cast<double>(t), last);
  // The phase of `step` as PyTorch picks it: the first whose end it has not passed.
  const bool rising = step <= peak;
  const double start_step = rising ? 0.0 : peak;
  const double end_step = rising ? peak : last;
  const double start_rate = rising ? initial : base;
  const double end_rate = rising ? base : final_rate;
  if (end_step <= start_step) return end_rate;
  return cosine_between(start_rate, end_rate, (step - start_step) / (end_step - start_step));
}

}  // namespace

LearningRateSchedule::LearningRateSchedule(double base_learning_rate, const ScheduleOptions& options)
    : base_learning_rate_(base_learning_rate), options_(options) {
  if (!(base_learning_rate > 0.0) || !std::isfinite(base_learning_rate)) {
    throw Error("learning-rate schedule: learning rate must be positive, found " + format_number(base_learning_rate));
  }
  if (options.unit == ScheduleUnit::epochs) require_at_least("steps_per_epoch", options.steps_per_epoch, 1);
  require_at_least("warmup_steps", options.warmup_steps, 0);
  switch (options.kind) {
    case ScheduleKind::constant: break;
    case ScheduleKind::step:
      require_at_least("step_size", options.step_size, 1);
      if (!(options.gamma > 0.0) || !std::isfinite(options.gamma)) {
        throw Error("learning-rate schedule: step gamma must be positive and finite, found " +
                    format_number(options.gamma));
      }
      break;
    case ScheduleKind::cosine:
      require_at_least("t_max", options.t_max, 1);
      if (!(options.eta_min >= 0.0) || !std::isfinite(options.eta_min)) {
        throw Error("learning-rate schedule: cosine eta_min must be finite and >= 0, found " +
                    format_number(options.eta_min));
      }
      break;
    case ScheduleKind::one_cycle:
      require_at_least("total_steps", options.total_steps, 1);
      if (!(options.pct_start >= 0.0 && options.pct_start <= 1.0)) {
        throw Error("learning-rate schedule: one-cycle pct_start must be in [0, 1], found " + format_number(options.pct_start));
      }
      require_positive("one-cycle div_factor", options.div_factor);
      require_positive("one-cycle final_div_factor", options.final_div_factor);
      break;
  }
}

double LearningRateSchedule::at(std::int64_t step) const {
  if (step < 0) throw Error("learning-rate schedule: step must be >= 0, found " + std::to_string(step));
  const std::int64_t t = options_.unit == ScheduleUnit::epochs ? step / options_.steps_per_epoch : step;
  double rate = base_learning_rate_;
  switch (options_.kind) {
    case ScheduleKind::constant: break;
    case ScheduleKind::step:
      rate = base_learning_rate_ * std::pow(options_.gamma, static_cast<double>(t / options_.step_size));
      break;
    case ScheduleKind::cosine:
      rate = options_.eta_min + (base_learning_rate_ - options_.eta_min) *
                                    (1.0 + std::cos(std::numbers::pi * static_cast<double>(t) /
                                                    static_cast<double>(options_.t_max))) /
                                    2.0;
      break;
    case ScheduleKind::one_cycle: rate = one_cycle_rate(base_learning_rate_, options_, t); break;
  }
  if (step < options_.warmup_steps) {
    rate *= static_cast<double>(step + 1) / static_cast<double>(options_.warmup_steps);
  }
  return rate;
}

ScheduleKind schedule_kind_from_name(std::string_view name) {
  if (name == "constant") return ScheduleKind::constant;
  if (name == "step") return ScheduleKind::step;
  if (name == "cosine") return ScheduleKind::cosine;
  if (name == "onecycle") return ScheduleKind::one_cycle;
  throw Error("unknown learning-rate schedule '" + std::string(name) + "'; valid schedules: constant, step, cosine, onecycle");
}

std::string_view schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::constant: return "constant";
    case ScheduleKind::step: return "step";
    case ScheduleKind::cosine: return "cosine";
    case ScheduleKind::one_cycle: return "onecycle";
  }
  return "unknown";
}

ScheduleUnit schedule_unit_from_name(std::string_view name) {
  if (name == "steps") return ScheduleUnit::steps;
  if (name == "epochs") return ScheduleUnit::epochs;
  throw Error("unknown learning-rate schedule unit '" + std::string(name) + "'; valid units: steps, epochs");
}

}  // namespace ember
