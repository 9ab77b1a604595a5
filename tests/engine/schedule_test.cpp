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

// OneCycleLR(max_lr=0.1, total_steps=10, cycle_momentum=False): the first phase ends at step 2.
constexpr double golden_one_cycle[10] = {0.0040000000000000036, 0.052000000000000005, 0.1, 0.09504846320134738,
                                         0.0811745653949763, 0.06112620219362893, 0.03887419780637107,
                                         0.0188258346050237, 0.004951936798652629, 4e-07};
// OneCycleLR(max_lr=0.02, total_steps=7, pct_start=0.25, div_factor=10, final_div_factor=100,
// cycle_momentum=False): the first phase ends at step 0.75, between steps.
constexpr double golden_one_cycle_fractional[7] = {0.0019999999999999983, 0.019888419953989035, 0.017333188199579963,
                                                   0.01223298413022358, 0.006360243166579714, 0.0017558746445832133,
                                                   2e-05};

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

TEST(LearningRateSchedule, OneCycleMatchesPyTorchOneCycleLR) {
  ScheduleOptions options;
  options.kind = ScheduleKind::one_cycle;
  options.total_steps = 10;
  expect_rates(LearningRateSchedule(0.1, options), golden_one_cycle, 10, "one-cycle");
  options.total_steps = 7;
  options.pct_start = 0.25;
  options.div_factor = 10.0;
  options.final_div_factor = 100.0;
  expect_rates(LearningRateSchedule(0.02, options), golden_one_cycle_fractional, 7, "one-cycle, fractional peak");
}

TEST(LearningRateSchedule, OneCycleEndpointsAndBeyond) {
  ScheduleOptions options;
  options.kind = ScheduleKind::one_cycle;
  options.total_steps = 938;
  const LearningRateSchedule schedule(0.004, options);
  // Endpoints to 1e-12: `end + (start - end) * (1 + cos(pi p)) / 2` lands a few ulps from
  // the exact quotients, as PyTorch's does.
  EXPECT_NEAR(schedule.at(0), 0.004 / 25, 1e-12 * (0.004 / 25));
  // The peak is at 0.3 * 938 - 1 = 280.4: the steps either side are just below it.
  EXPECT_LT(schedule.at(280), 0.004);
  EXPECT_LT(schedule.at(281), 0.004);
  EXPECT_GT(schedule.at(280), 0.004 * 0.9999);
  for (std::int64_t s = 1; s <= 280; ++s) EXPECT_GT(schedule.at(s), schedule.at(s - 1)) << s;
  for (std::int64_t s = 282; s < 938; ++s) EXPECT_LT(schedule.at(s), schedule.at(s - 1)) << s;
  EXPECT_NEAR(schedule.at(937), 0.004 / 25 / 1e4, 1e-12 * (0.004 / 25 / 1e4));
  // Past the last step the rate stays at its final value.
  EXPECT_EQ(schedule.at(938), schedule.at(937));
  EXPECT_EQ(schedule.at(100000), schedule.at(937));
  // Counted in epochs, the rate holds for each epoch: 4 epochs of 5 steps.
  options.unit = ScheduleUnit::epochs;
  options.steps_per_epoch = 5;
  options.total_steps = 4;
  options.pct_start = 0.5;  // the peak at epoch 1
  const LearningRateSchedule epochs(1.0, options);
  for (std::int64_t s = 0; s < 5; ++s) EXPECT_NEAR(epochs.at(s), 1.0 / 25, 1e-12 * (1.0 / 25)) << s;
  for (std::int64_t s = 5; s < 10; ++s) EXPECT_NEAR(epochs.at(s), 1.0, 1e-12 * (1.0)) << s;
  EXPECT_NEAR(epochs.at(15), 1.0 / 25 / 1e4, 1e-12 * (1.0 / 25 / 1e4));
}

TEST(LearningRateSchedule, OneCycleDegeneratePhases) {
  ScheduleOptions options;
  options.kind = ScheduleKind::one_cycle;
  // One step: it is the last, at the final rate.
  options.total_steps = 1;
  EXPECT_NEAR(LearningRateSchedule(1.0, options).at(0), 1.0 / 25 / 1e4, 1e-12 * (1.0 / 25 / 1e4));
  // The first phase ends at step 0 (PyTorch divides by zero there): step 0 is the peak.
  options.total_steps = 10;
  options.pct_start = 0.1;
  const LearningRateSchedule peak_first(1.0, options);
  EXPECT_NEAR(peak_first.at(0), 1.0, 1e-12 * (1.0));
  EXPECT_NEAR(peak_first.at(9), 1.0 / 25 / 1e4, 1e-12 * (1.0 / 25 / 1e4));
  // pct_start 1: rising all the way to the peak at the last step.
  options.pct_start = 1.0;
  const LearningRateSchedule rising(1.0, options);
  EXPECT_NEAR(rising.at(0), 1.0 / 25, 1e-12 * (1.0 / 25));
  EXPECT_NEAR(rising.at(9), 1.0, 1e-12 * (1.0));
  // pct_start 0: falling from the first step, which is already below the peak.
  options.pct_start = 0.0;
  const LearningRateSchedule falling(1.0, options);
  EXPECT_LT(falling.at(0), 1.0);
  EXPECT_GT(falling.at(0), falling.at(1));
  EXPECT_NEAR(falling.at(9), 1.0 / 25 / 1e4, 1e-12 * (1.0 / 25 / 1e4));
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
  options = ScheduleOptions{};
  options.kind = ScheduleKind::one_cycle;
  options.total_steps = 0;
  EXPECT_EQ(error_message([&] { LearningRateSchedule(0.1, options); }),
            "learning-rate schedule: total_steps must be >= 1, found 0");
  options.total_steps = 10;
  options.pct_start = 1.5;
  EXPECT_EQ(error_message([&] { LearningRateSchedule(0.1, options); }),
            "learning-rate schedule: one-cycle pct_start must be in [0, 1], found 1.5");
  options.pct_start = 0.3;
  options.div_factor = 0.0;
  EXPECT_EQ(error_message([&] { LearningRateSchedule(0.1, options); }),
            "learning-rate schedule: one-cycle div_factor must be positive and finite, found 0");
  options.div_factor = 25.0;
  options.final_div_factor = -2.0;
  EXPECT_EQ(error_message([&] { LearningRateSchedule(0.1, options); }),
            "learning-rate schedule: one-cycle final_div_factor must be positive and finite, found -2");
  EXPECT_EQ(error_message([] { LearningRateSchedule(0.1, ScheduleOptions{}).at(-1); }),
            "learning-rate schedule: step must be >= 0, found -1");
}

TEST(LearningRateSchedule, Names) {
  EXPECT_EQ(schedule_kind_from_name("constant"), ScheduleKind::constant);
  EXPECT_EQ(schedule_kind_from_name("step"), ScheduleKind::step);
  EXPECT_EQ(schedule_kind_from_name("cosine"), ScheduleKind::cosine);
  EXPECT_EQ(schedule_kind_from_name("onecycle"), ScheduleKind::one_cycle);
  for (ScheduleKind kind : {ScheduleKind::constant, ScheduleKind::step, ScheduleKind::cosine, ScheduleKind::one_cycle}) {
    EXPECT_EQ(schedule_kind_from_name(schedule_kind_name(kind)), kind);
  }
  EXPECT_EQ(schedule_unit_from_name("epochs"), ScheduleUnit::epochs);
  EXPECT_EQ(schedule_unit_from_name("steps"), ScheduleUnit::steps);
  EXPECT_EQ(error_message([] { schedule_kind_from_name("linear"); }),
            "unknown learning-rate schedule 'linear'; valid schedules: constant, step, cosine, onecycle");
  EXPECT_EQ(error_message([] { schedule_unit_from_name("iterations"); }),
            "unknown learning-rate schedule unit 'iterations'; valid units: steps, epochs");
}

}  // namespace
}  // namespace ember
