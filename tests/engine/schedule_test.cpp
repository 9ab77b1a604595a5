#include "engine/schedule.h"

#include <cmath>
#include <numbers>
#include <string>

#include <gtest/gtest.h>

#include "engine/error.h"

namespace ember {
namespace {

template <class Function>
std::string error_message(Function&& function) {
  try {
    function();
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

// Produced by /usr/bin/python3 tests/engine/schedule_goldens.py (Debian's python3-torch,
// torch 1.13): element s is the rate PyTorch's scheduler gives optimizer step s.
// StepLR(step_size=3, gamma=0.5), base 0.1:
constexpr double golden_step_lr[10] = {0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125};
// CosineAnnealingLR(T_max=10, eta_min=0.001), base 0.1, stepped past T_max:
constexpr double golden_cosine[16] = {0.1, 0.09757729755661011, 0.0905463412215599, 0.07959536998847742,
                                      0.0657963412215599, 0.0505, 0.03520365877844011, 0.02140463001152259,
                                      0.010453658778440109, 0.0034227024433899004, 0.001, 0.0034227024433899004,
                                      0.01045365877844014, 0.02140463001152267, 0.035203658778440255,
                                      0.05050000000000022};
// LinearLR(start_factor=0.25, end_factor=1, total_iters=3), base 0.1 (a 4-step warmup):
constexpr double golden_warmup[7] = {0.025, 0.05, 0.07500000000000001, 0.1, 0.1, 0.1, 0.1};
// ChainedScheduler([that LinearLR, StepLR(step_size=3, gamma=0.5)]), base 0.1:
constexpr double golden_warmup_step[10] = {0.025, 0.05, 0.07500000000000001, 0.05, 0.05,
                                           0.05, 0.025, 0.025, 0.025, 0.0125};

void expect_rates(const LearningRateSchedule& schedule, const double* expected, int count, const std::string& what) {
  for (int s = 0; s < count; ++s) {
    EXPECT_NEAR(schedule.at(s), expected[s], 1e-12 * expected[s]) << what << " step " << s;
  }
}

TEST(LearningRateSchedule, ConstantIsTheBaseRate) {
  ScheduleOptions options;
  const LearningRateSchedule schedule(0.3, options);
  for (std::int64_t s : {0, 1, 7, 1000000}) EXPECT_EQ(schedule.at(s), 0.3);
}

TEST(LearningRateSchedule, StepMatchesPyTorchStepLR) {
  ScheduleOptions options;
  options.kind = ScheduleKind::step;
  options.step_size = 3;
  options.gamma = 0.5;
  const LearningRateSchedule schedule(0.1, options);
  expect_rates(schedule, golden_step_lr, 10, "step");
  EXPECT_DOUBLE_EQ(schedule.at(300), 0.1 * std::pow(0.5, 100));
}

TEST(LearningRateSchedule, CosineMatchesPyTorchCosineAnnealingLR) {
  ScheduleOptions options;
  options.kind = ScheduleKind::cosine;
  options.t_max = 10;
  options.eta_min = 0.001;
  const LearningRateSchedule schedule(0.1, options);
  expect_rates(schedule, golden_cosine, 16, "cosine");
  for (std::int64_t s = 0; s < 40; ++s) {
    const double closed = 0.001 + (0.1 - 0.001) * (1 + std::cos(std::numbers::pi * static_cast<double>(s) / 10.0)) / 2;
    EXPECT_DOUBLE_EQ(schedule.at(s), closed) << s;
  }
  EXPECT_DOUBLE_EQ(schedule.at(10), 0.001);
  EXPECT_DOUBLE_EQ(schedule.at(20), 0.1);
}

TEST(LearningRateSchedule, WarmupMatchesPyTorchLinearLR) {
  ScheduleOptions options;
  options.warmup_steps = 4;
  expect_rates(LearningRateSchedule(0.1, options), golden_warmup, 7, "warmup");
  options.kind = ScheduleKind::step;
  options.step_size = 3;
  options.gamma = 0.5;
  expect_rates(LearningRateSchedule(0.1, options), golden_warmup_step, 10, "warmup and step");
  // One warmup step is no warmup.
  options.warmup_steps = 1;
  EXPECT_EQ(LearningRateSchedule(0.1, options).at(0), 0.1);
}

TEST(LearningRateSchedule, EpochUnitHoldsTheRateForAWholeEpoch) {
  ScheduleOptions options;
  options.kind = ScheduleKind::step;
  options.unit = ScheduleUnit::epochs;
  options.steps_per_epoch = 5;
  options.step_size = 2;  // epochs
  options.gamma = 0.1;
  const LearningRateSchedule schedule(1.0, options);
  for (std::int64_t s = 0; s < 10; ++s) EXPECT_DOUBLE_EQ(schedule.at(s), 1.0) << s;
  for (std::int64_t s = 10; s < 20; ++s) EXPECT_DOUBLE_EQ(schedule.at(s), 0.1) << s;
  EXPECT_DOUBLE_EQ(schedule.at(20), 0.01);

  options.kind = ScheduleKind::cosine;
  options.t_max = 4;  // epochs
  options.eta_min = 0.0;
  const LearningRateSchedule cosine(1.0, options);
  EXPECT_DOUBLE_EQ(cosine.at(4), 1.0);
  EXPECT_DOUBLE_EQ(cosine.at(5), 0.5 * (1 + std::cos(std::numbers::pi / 4)));
  EXPECT_NEAR(cosine.at(20), 0.0, 1e-17);
}

TEST(LearningRateSchedule, IsAPureFunctionOfTheStep) {
  ScheduleOptions options;
  options.kind = ScheduleKind::cosine;
  options.t_max = 100;
  options.warmup_steps = 10;
  const LearningRateSchedule first(0.01, options);
  const LearningRateSchedule resumed(0.01, options);
  // A resumed run asks for step 57 first; it gets what the original gave at step 57.
  const double at_57 = resumed.at(57);
  for (std::int64_t s = 0; s < 57; ++s) first.at(s);
  EXPECT_EQ(first.at(57), at_57);
}

TEST(LearningRateSchedule, BadOptionsAreNamed) {
  ScheduleOptions options;
  EXPECT_EQ(error_message([&] { LearningRateSchedule(-0.1, options); }),
            "learning-rate schedule: learning rate must be positive, found -0.1");
  options.kind = ScheduleKind::step;
  options.step_size = 0;
  EXPECT_EQ(error_message([&] { LearningRateSchedule(0.1, options); }),
            "learning-rate schedule: step_size must be >= 1, found 0");
  options.step_size = 1;
  options.gamma = 0.0;
  EXPECT_EQ(error_message([&] { LearningRateSchedule(0.1, options); }),
            "learning-rate schedule: step gamma must be positive and finite, found 0");
  options = ScheduleOptions{};
  options.kind = ScheduleKind::cosine;
  options.t_max = 0;
  EXPECT_EQ(error_message([&] { LearningRateSchedule(0.1, options); }),
            "learning-rate schedule: t_max must be >= 1, found 0");
  options.t_max = 5;
  options.eta_min = -1.0;
  EXPECT_EQ(error_message([&] { LearningRateSchedule(0.1, options); }),
            "learning-rate schedule: cosine eta_min must be finite and >= 0, found -1");
  options = ScheduleOptions{};
  options.unit = ScheduleUnit::epochs;
  options.steps_per_epoch = 0;
  EXPECT_EQ(error_message([&] { LearningRateSchedule(0.1, options); }),
            "learning-rate schedule: steps_per_epoch must be >= 1, found 0");
  options = ScheduleOptions{};
  options.warmup_steps = -3;
  EXPECT_EQ(error_message([&] { LearningRateSchedule(0.1, options); }),
            "learning-rate schedule: warmup_steps must be >= 0, found -3");
  EXPECT_EQ(error_message([] { LearningRateSchedule(0.1, ScheduleOptions{}).at(-1); }),
            "learning-rate schedule: step must be >= 0, found -1");
}

TEST(LearningRateSchedule, Names) {
  EXPECT_EQ(schedule_kind_from_name("constant"), ScheduleKind::constant);
  EXPECT_EQ(schedule_kind_from_name("step"), ScheduleKind::step);
  EXPECT_EQ(schedule_kind_from_name("cosine"), ScheduleKind::cosine);
  for (ScheduleKind kind : {ScheduleKind::constant, ScheduleKind::step, ScheduleKind::cosine}) {
    EXPECT_EQ(schedule_kind_from_name(schedule_kind_name(kind)), kind);
  }
  EXPECT_EQ(schedule_unit_from_name("epochs"), ScheduleUnit::epochs);
  EXPECT_EQ(schedule_unit_from_name("steps"), ScheduleUnit::steps);
  EXPECT_EQ(error_message([] { schedule_kind_from_name("linear"); }),
            "unknown learning-rate schedule 'linear'; valid schedules: constant, step, cosine");
  EXPECT_EQ(error_message([] { schedule_unit_from_name("iterations"); }),
            "unknown learning-rate schedule unit 'iterations'; valid units: steps, epochs");
}

}  // namespace
}  // namespace ember
