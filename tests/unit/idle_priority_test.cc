// BacklogPriority: a worker idles while its backlog is small, producers raise it at
// raise_at, it lowers itself at lower_at, and stays raised once raised for good.
#include "agent/sched/idle_priority.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace flowtracer::sched {
namespace {

// A worker thread that runs `first` and then waits for the test to finish.
class Worker {
 public:
  explicit Worker(std::function<void()> first) : thread_([this, first] {
      first();
      std::unique_lock lock(mutex_);
      tid_ = gettid();
      changed_.notify_all();
      changed_.wait(lock, [this] { return stopping_; });
    }) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return tid_ != 0; });
  }
  ~Worker() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }
  int policy() const { return sched_getscheduler(tid_); }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  pid_t tid_ = 0;
  std::thread thread_;
};

class BacklogPriorityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why_not;
    if (!CanLowerAndRaise("the test", &why_not)) GTEST_SKIP() << why_not;  // the agent says so too
  }
};

TEST_F(BacklogPriorityTest, RaisedAtTheBacklogThatCountsAndLoweredWhenItHasGone) {
  BacklogPriority priority(/*raise_at=*/100, /*lower_at=*/10);
  bool lowered = false;
  std::string why_not;
  Worker worker([&] { lowered = priority.Lower(gettid(), "the worker", &why_not); });
  ASSERT_TRUE(lowered) << why_not;
  EXPECT_EQ(worker.policy(), SCHED_IDLE);
  priority.Produced(99);
  EXPECT_EQ(worker.policy(), SCHED_IDLE);
  priority.Produced(100);
  EXPECT_EQ(worker.policy(), SCHED_OTHER);
  EXPECT_EQ(priority.raises(), 1u);
  priority.Produced(500);  // already raised: nothing to do
  EXPECT_EQ(priority.raises(), 1u);
  priority.Worked(11);
  EXPECT_EQ(worker.policy(), SCHED_OTHER);
  priority.Worked(10);
  EXPECT_EQ(worker.policy(), SCHED_IDLE);
  EXPECT_TRUE(priority.lowered());
}

TEST_F(BacklogPriorityTest, RaisedForGoodStaysRaised) {
  BacklogPriority priority(100, 10);
  std::string why_not;
  Worker worker([&] { priority.Lower(gettid(), "the worker", &why_not); });
  priority.RaiseForGood();
  EXPECT_EQ(worker.policy(), SCHED_OTHER);
  priority.Worked(0);
  EXPECT_EQ(worker.policy(), SCHED_OTHER);
  // A worker that starts after the stop is not lowered at all.
  BacklogPriority stopped(100, 10);
  stopped.RaiseForGood();
  Worker late([&] { EXPECT_TRUE(stopped.Lower(gettid(), "the late worker", &why_not)); });
  EXPECT_EQ(late.policy(), SCHED_OTHER);
}

TEST_F(BacklogPriorityTest, AWorkerNeverLoweredIsLeftAlone) {
  BacklogPriority priority(100, 10);
  Worker worker([&] { priority.Worked(0); });  // as a worker that was never lowered
  EXPECT_EQ(worker.policy(), SCHED_OTHER);
  priority.Worked(0);  // nor is whoever else reports
  EXPECT_EQ(sched_getscheduler(0), SCHED_OTHER);
  priority.Produced(1000);
  EXPECT_EQ(priority.raises(), 0u);
}

TEST_F(BacklogPriorityTest, APolicyChosenByTheOperatorIsKept) {
  BacklogPriority priority(100, 10);
  bool lowered = true;
  std::string why_not;
  Worker worker([&] {
    sched_param param{};
    ASSERT_EQ(sched_setscheduler(0, SCHED_BATCH, &param), 0);  // as under `chrt --batch`
    lowered = priority.Lower(gettid(), "the worker", &why_not);
  });
  EXPECT_FALSE(lowered);
  EXPECT_EQ(why_not, "the worker keeps the scheduling policy it was started with (SCHED_BATCH)");
  priority.Produced(1000);
  priority.Worked(0);
  EXPECT_EQ(worker.policy(), SCHED_BATCH);
}

}  // namespace
}  // namespace flowtracer::sched
