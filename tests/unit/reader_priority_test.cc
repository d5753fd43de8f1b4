// ReaderPriority: the reader idles while the ring has room, is raised when it fills, and
// is left at normal priority when the governor stops. An eventfd stands in for the ring's
// map (its writes are the kernel's wake-ups) and a number for what waits in the ring.
#include "agent/loader/reader_priority.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace flowtracer::loader {
namespace {

constexpr uint64_t kRingBytes = 4 << 20;

// A thread that only waits, standing in for the session's reading thread.
class IdleThread {
 public:
  IdleThread() : thread_([this] {
      tid_ = gettid();
      std::unique_lock lock(mutex_);
      started_.notify_all();
      stop_.wait(lock, [this] { return stopping_; });
    }) {
    std::unique_lock lock(mutex_);
    started_.wait(lock, [this] { return tid_.load() != 0; });
  }
  ~IdleThread() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    stop_.notify_all();
    thread_.join();
  }
  pid_t tid() const { return tid_; }

 private:
  std::mutex mutex_;
  std::condition_variable started_, stop_;
  bool stopping_ = false;
  std::atomic<pid_t> tid_{0};
  std::thread thread_;
};

// Whether `check()` holds within `limit`.
template <typename Check>
bool Within(std::chrono::milliseconds limit, Check check) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!check()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}
constexpr std::chrono::milliseconds kBound(5000);  // generous: CI shares two CPUs

struct FakeRing {
  FakeRing() : fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  ~FakeRing() { close(fd); }
  void WakeUp() const {
    const uint64_t one = 1;
    ASSERT_EQ(write(fd, &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
  }
  int fd;
  std::atomic<uint64_t> queued{0};
};

// Only the kernel's wake-up can raise the reader: the periodic checks are out of reach.
ReaderPriority::Options WakeUpOnly() {
  ReaderPriority::Options options;
  options.lowered_check_ms = 60000;
  options.stall_ms = 600000;
  return options;
}

class ReaderPriorityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why_not;
    if (!ReaderPriority::Possible(&why_not)) GTEST_SKIP() << why_not;  // the agent says so too
  }
  std::unique_ptr<ReaderPriority> Govern(pid_t tid, ReaderPriority::Options options) {
    std::string why_not;
    auto priority =
        ReaderPriority::Start(tid, ring.fd, kRingBytes, [this] { return ring.queued.load(); }, &why_not, options);
    EXPECT_TRUE(priority) << why_not;
    return priority;
  }
  FakeRing ring;
};

TEST_F(ReaderPriorityTest, IdlesRisesWhileTheRingFillsAndIsLeftNormal) {
  IdleThread reader;
  auto priority = Govern(reader.tid(), WakeUpOnly());
  ASSERT_TRUE(priority);
  EXPECT_EQ(sched_getscheduler(reader.tid()), SCHED_IDLE);
  EXPECT_EQ(sched_getscheduler(gettid()), SCHED_OTHER) << "only the reader idles";

  // An eighth of the ring waits and the kernel wakes the governor.
  ring.queued = kRingBytes / 8;
  ring.WakeUp();
  EXPECT_TRUE(Within(kBound, [&] { return sched_getscheduler(reader.tid()) == SCHED_OTHER; }));
  EXPECT_TRUE(Within(kBound, [&] { return priority->raises() == 1; }));

  // Still above a thirty-second: stays raised.
  ring.queued = kRingBytes / 16;
  std::this_thread::sleep_for(std::chrono::milliseconds(20 * ReaderPriority::Options().raised_check_ms));
  EXPECT_EQ(sched_getscheduler(reader.tid()), SCHED_OTHER);

  // Drained: back to idle, no wake-up needed.
  ring.queued = kRingBytes / 64;
  EXPECT_TRUE(Within(kBound, [&] { return sched_getscheduler(reader.tid()) == SCHED_IDLE; }));

  // Stopping leaves the reader at normal priority.
  priority.reset();
  EXPECT_EQ(sched_getscheduler(reader.tid()), SCHED_OTHER);
}

TEST_F(ReaderPriorityTest, WakeUpsWithRoomLeftDoNotRaise) {
  IdleThread reader;
  auto priority = Govern(reader.tid(), WakeUpOnly());
  ASSERT_TRUE(priority);
  ring.queued = kRingBytes / 8 - 1;
  for (int i = 0; i < 5; ++i) {
    ring.WakeUp();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(sched_getscheduler(reader.tid()), SCHED_IDLE);
  EXPECT_EQ(priority->raises(), 0u);
}

TEST_F(ReaderPriorityTest, AFillingRingIsNoticedWithoutTheKernelsWakeUp) {
  IdleThread reader;
  ReaderPriority::Options options = WakeUpOnly();
  options.lowered_check_ms = 20;
  auto priority = Govern(reader.tid(), options);
  ASSERT_TRUE(priority);
  ring.queued = kRingBytes / 2;
  EXPECT_TRUE(Within(kBound, [&] { return sched_getscheduler(reader.tid()) == SCHED_OTHER; }));
}

TEST_F(ReaderPriorityTest, AStalledReaderIsRaisedUntilItRunsAgain) {
  IdleThread reader;  // never reports itself alive
  ReaderPriority::Options options;
  options.lowered_check_ms = 20;
  options.stall_ms = 200;
  auto priority = Govern(reader.tid(), options);
  ASSERT_TRUE(priority);
  EXPECT_EQ(sched_getscheduler(reader.tid()), SCHED_IDLE);
  EXPECT_TRUE(Within(kBound, [&] { return sched_getscheduler(reader.tid()) == SCHED_OTHER; }))
      << "the ring is empty: only the stall raises it";
  // Alive again with nothing queued: lowered.
  EXPECT_TRUE(Within(kBound, [&] {
    priority->ReaderAlive();
    return sched_getscheduler(reader.tid()) == SCHED_IDLE;
  }));
}

TEST_F(ReaderPriorityTest, TheReaderGovernsItselfAndTheGovernorNeverIdles) {
  // As in the session: the reading thread starts the governor on itself.
  std::unique_ptr<ReaderPriority> priority;
  pid_t reader_tid = 0;
  std::thread reader([&] {
    reader_tid = gettid();
    priority = Govern(reader_tid, WakeUpOnly());
  });
  reader.join();
  ASSERT_TRUE(priority);
  ASSERT_TRUE(Within(kBound, [&] { return priority->governor_tid() != 0; }));
  EXPECT_EQ(sched_getscheduler(priority->governor_tid()), SCHED_OTHER);
}

TEST_F(ReaderPriorityTest, APolicyChosenByTheOperatorIsKept) {
  std::atomic<pid_t> tid{0};
  std::atomic<bool> done{false};
  std::thread reader([&] {
    sched_param param{};
    ASSERT_EQ(sched_setscheduler(0, SCHED_BATCH, &param), 0);
    tid = gettid();
    while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  ASSERT_TRUE(Within(kBound, [&] { return tid.load() != 0; }));
  std::string why_not;
  auto priority = ReaderPriority::Start(tid, ring.fd, kRingBytes, [] { return uint64_t{0}; }, &why_not);
  EXPECT_FALSE(priority);
  EXPECT_NE(why_not.find("SCHED_BATCH"), std::string::npos) << why_not;
  EXPECT_EQ(sched_getscheduler(tid), SCHED_BATCH);
  done = true;
  reader.join();
}

}  // namespace
}  // namespace flowtracer::loader
