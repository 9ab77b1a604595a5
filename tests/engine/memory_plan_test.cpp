#include "engine/memory_plan.h"

#include <gtest/gtest.h>

#include <random>

#include "engine/error.h"
#include "support/expect_error.h"

namespace ember {
namespace {

std::vector<TensorLifetime> random_lifetimes(std::mt19937& random, int count, int positions) {
  std::vector<TensorLifetime> tensors;
  std::uniform_int_distribution<int> position(0, positions - 1);
  std::uniform_int_distribution<int> size(0, 5000);
  for (int i = 0; i < count; ++i) {
    int a = position(random), b = position(random);
    if (a > b) std::swap(a, b);
    tensors.push_back({std::string("t").append(std::to_string(i)), static_cast<std::size_t>(size(random)), a, b});
  }
  return tensors;
}

TEST(MemoryPlan, RandomLifetimesNeverOverlapAndRespectTheLowerBound) {
  std::mt19937 random(42);
  for (int trial = 0; trial < 300; ++trial) {
    const auto tensors = random_lifetimes(random, 1 + trial % 60, 1 + trial % 25);
    for (PlanStrategy strategy : {PlanStrategy::best_fit, PlanStrategy::best_fit_in_order, PlanStrategy::best_fit_by_size,
                                  PlanStrategy::one_slice_each}) {
      const MemoryPlan plan = plan_memory(tensors, strategy);
      ASSERT_NO_THROW(validate_memory_plan(tensors, plan)) << "trial " << trial;
      EXPECT_GE(plan.arena_bytes, plan.lower_bound_bytes);
      EXPECT_LE(plan.arena_bytes, plan.naive_bytes);
    }
  }
}

TEST(MemoryPlan, ReusesTheMemoryOfDeadTensors) {
  // A chain: each tensor dies when the next is made, so two buffers suffice.
  std::vector<TensorLifetime> chain;
  for (int i = 0; i < 10; ++i) chain.push_back({std::string("t").append(std::to_string(i)), 1024, i, i + 1});
  const MemoryPlan plan = plan_memory(chain);
  EXPECT_EQ(plan.naive_bytes, 10u * 1024u);
  EXPECT_EQ(plan.lower_bound_bytes, 2u * 1024u);
  EXPECT_EQ(plan.arena_bytes, 2u * 1024u);
  const MemoryPlan naive = plan_memory(chain, PlanStrategy::one_slice_each);
  EXPECT_EQ(naive.arena_bytes, 10u * 1024u);
}

// The in-order walk's trap: a small tensor born with a large short-lived one is placed
// above it, so the next large tensor finds the hole too small and grows the arena.
// Placing by size knows every lifetime and reaches the lower bound.
TEST(MemoryPlan, BestFitBySizeAvoidsTheInOrderTrap) {
  const std::vector<TensorLifetime> tensors = {
      {"small_long", 2048, 0, 1}, {"big_first", 524288, 0, 0}, {"big_second", 524416, 1, 1}, {"tail", 128, 1, 2}};
  const MemoryPlan in_order = plan_memory(tensors, PlanStrategy::best_fit_in_order);
  const MemoryPlan by_size = plan_memory(tensors, PlanStrategy::best_fit_by_size);
  const MemoryPlan best = plan_memory(tensors, PlanStrategy::best_fit);
  EXPECT_GT(in_order.arena_bytes, in_order.lower_bound_bytes);
  EXPECT_EQ(by_size.arena_bytes, by_size.lower_bound_bytes);
  EXPECT_EQ(best.arena_bytes, by_size.arena_bytes);
  EXPECT_NO_THROW(validate_memory_plan(tensors, best));
}

TEST(MemoryPlan, OffsetsAre64ByteAligned) {
  std::vector<TensorLifetime> tensors = {{"a", 3, 0, 2}, {"b", 70, 1, 3}, {"c", 1, 2, 4}};
  const MemoryPlan plan = plan_memory(tensors);
  for (std::size_t offset : plan.offsets) EXPECT_EQ(offset % 64, 0u);
}

TEST(MemoryPlan, ValidatorCatchesOverlap) {
  std::vector<TensorLifetime> tensors = {{"a", 128, 0, 2}, {"b", 128, 1, 3}};
  MemoryPlan plan;
  plan.offsets = {0, 64};
  plan.arena_bytes = 192;
  try {
    validate_memory_plan(tensors, plan);
    FAIL() << "overlap not detected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'a' and 'b' are live at the same time"), std::string::npos) << e.what();
  }
}

TEST(MemoryPlan, ValidatorCatchesATensorPastTheArena) {
  std::vector<TensorLifetime> tensors = {{"a", 128, 0, 0}};
  MemoryPlan plan;
  plan.offsets = {64};
  plan.arena_bytes = 128;
  EXPECT_TRUE(testing::throws_error_with([&] { validate_memory_plan(tensors, plan); },
                                         {"tensor 'a'", "ends at 192", "past the arena of 128 bytes"}));
}

TEST(MemoryPlan, ValidatorCatchesAMisalignedOffsetAndAMissingOffset) {
  std::vector<TensorLifetime> tensors = {{"a", 128, 0, 0}, {"b", 64, 1, 1}};
  MemoryPlan plan;
  plan.offsets = {0, 32};
  plan.arena_bytes = 256;
  EXPECT_TRUE(testing::throws_error_with([&] { validate_memory_plan(tensors, plan); },
                                         {"tensor 'b'", "offset 32", "not 64-byte aligned"}));
  plan.offsets = {0};
  EXPECT_TRUE(testing::throws_error_with([&] { validate_memory_plan(tensors, plan); }, {"1 offsets for 2 tensors"}));
}

TEST(MemoryPlan, RefusesALifetimeThatEndsBeforeItStarts) {
  std::vector<TensorLifetime> tensors = {{"bad", 4, 3, 1}};
  EXPECT_TRUE(testing::throws_error_with([&] { plan_memory(tensors); }, {"tensor 'bad'", "lifetime 3..1", "last use >= first use"}));
  tensors = {{"early", 4, -1, 1}};
  EXPECT_TRUE(testing::throws_error_with([&] { plan_memory(tensors); }, {"tensor 'early'", "lifetime -1..1", "first use >= 0"}));
}

}  // namespace
}  // namespace ember
