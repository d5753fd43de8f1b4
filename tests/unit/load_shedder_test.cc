#include "agent/pipeline/load_shedder.h"

#include <gtest/gtest.h>

namespace flowtracer::pipeline {
namespace {

constexpr uint64_t kSecond = 1000000000ull;
constexpr uint32_t kAll = conntrack::kAllConnectionsTraced;

TEST(LoadShedderTest, WithoutABudgetEverythingIsTraced) {
  LoadShedder shedder(0);
  EXPECT_FALSE(shedder.enabled());
  EXPECT_EQ(shedder.Update(0, kSecond), kAll);
  EXPECT_EQ(shedder.Update(5, 2 * kSecond), kAll);  // a whole core, still everything
}

TEST(LoadShedderTest, OverBudgetTheShareShrinksToLandUnderIt) {
  LoadShedder shedder(5);
  EXPECT_EQ(shedder.Update(10.0, kSecond), kAll);  // the first call only starts measuring
  // 50% of a core against 5%: a tenth, with headroom (80% of the budget).
  uint32_t share = shedder.Update(10.5, 2 * kSecond);
  EXPECT_NEAR(shedder.last_cpu(), 0.5, 1e-9);
  EXPECT_NEAR(share, kAll * 0.08, 2);
  // Cost that follows the share lands at 4%: within the budget, so the share holds.
  EXPECT_EQ(shedder.Update(10.54, 3 * kSecond), share);
}

TEST(LoadShedderTest, TheShareHasAFloor) {
  LoadShedder shedder(1);
  shedder.Update(0, kSecond);
  uint32_t share = shedder.Update(1.0, 2 * kSecond);  // a whole core against 1%
  share = shedder.Update(2.0, 3 * kSecond);
  share = shedder.Update(3.0, 4 * kSecond);
  EXPECT_EQ(share, LoadShedder::kMinShare);
}

TEST(LoadShedderTest, WellUnderBudgetTheShareGrowsBackGradually) {
  LoadShedder shedder(10);
  shedder.Update(0, kSecond);
  uint32_t share = shedder.Update(0.8, 2 * kSecond);  // 80%: down to a tenth
  ASSERT_NEAR(share, kAll * 0.1, 2);
  // The load is gone: at most 1.5x a second, never past everything.
  uint32_t next = shedder.Update(0.8, 3 * kSecond);
  EXPECT_NEAR(next, share * 1.5, 2);
  double cpu = 0.8;
  for (int second = 4; second < 30; ++second) next = shedder.Update(cpu, second * kSecond);
  EXPECT_EQ(next, kAll);
}

TEST(LoadShedderTest, PrimedTheFirstUpdateAlreadyDecides) {
  LoadShedder shedder(5);
  EXPECT_FALSE(shedder.primed());
  shedder.Prime(2.0, kSecond);
  EXPECT_TRUE(shedder.primed());
  EXPECT_NEAR(shedder.Update(2.5, 2 * kSecond), kAll * 0.08, 2);
}

TEST(LoadShedderTest, AnIntervalTooShortToMeasureALoadIsExtended) {
  // Primed by a record just before a tick: a few milliseconds of a burst must not decide.
  LoadShedder shedder(5);
  shedder.Prime(1.0, kSecond);
  EXPECT_EQ(shedder.Update(1.01, kSecond + 10'000'000), kAll);  // 100% of a core over 10 ms
  // The decision comes over the whole interval: 0.03 s of CPU in 1 s, within budget.
  EXPECT_EQ(shedder.Update(1.03, 2 * kSecond), kAll);
  EXPECT_NEAR(shedder.last_cpu(), 0.03, 1e-9);
}

TEST(LoadShedderTest, ATimeThatDoesNotMoveChangesNothing) {
  LoadShedder shedder(5);
  shedder.Update(0, kSecond);
  EXPECT_EQ(shedder.Update(1.0, kSecond), kAll);
}

}  // namespace
}  // namespace flowtracer::pipeline
