// ReaderPriority: the reader idles while the ring has room, is raised when it fills, and
// is left at normal priority when the governor stops. An eventfd stands in for the ring's
// map (its writes are the kernel's wake-ups) and a number for what waits in the ring.
#include "agent/loader/reader_priority.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
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
      tid_ = static_cast<pid_t>(syscall(SYS_gettid));
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

// Whether `tid`'s policy becomes `policy` within `limit`.
bool BecomesPolicy(pid_t tid, int policy, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (sched_getscheduler(tid) == policy) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return sched_getscheduler(tid) == policy;
}

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

TEST(ReaderPriorityTest, IdlesRisesWhileTheRingFillsAndIsLeftNormal) {
  IdleThread reader;
  FakeRing ring;
  std::string why_not;
  auto priority = ReaderPriority::Start(reader.tid(), ring.fd, kRingBytes, [&ring] { return ring.queued.load(); },
                                        &why_not);
  if (!priority) GTEST_SKIP() << why_not;  // not root: the reader keeps its priority, said so
  EXPECT_EQ(sched_getscheduler(reader.tid()), SCHED_IDLE);
  EXPECT_EQ(sched_getscheduler(static_cast<pid_t>(syscall(SYS_gettid))), SCHED_OTHER) << "only the reader idles";

  // An eighth of the ring waits and the kernel wakes the governor: raised at once.
  ring.queued = kRingBytes / 8;
  ring.WakeUp();
  EXPECT_TRUE(BecomesPolicy(reader.tid(), SCHED_OTHER, std::chrono::milliseconds(90)))
      << "before the 100 ms safety net: the wake-up raised it";
  EXPECT_EQ(priority->raises(), 1u);

  // Still above a thirty-second: stays raised.
  ring.queued = kRingBytes / 16;
  std::this_thread::sleep_for(std::chrono::milliseconds(4 * ReaderPriority::kRaisedCheckMs));
  EXPECT_EQ(sched_getscheduler(reader.tid()), SCHED_OTHER);

  // Drained: back to idle within a few checks, no wake-up needed.
  ring.queued = kRingBytes / 64;
  EXPECT_TRUE(BecomesPolicy(reader.tid(), SCHED_IDLE, std::chrono::milliseconds(20 * ReaderPriority::kRaisedCheckMs)));

  // Stopping leaves the reader at normal priority.
  priority.reset();
  EXPECT_EQ(sched_getscheduler(reader.tid()), SCHED_OTHER);
}

TEST(ReaderPriorityTest, AFillingRingIsNoticedWithoutTheKernelsWakeUp) {
  IdleThread reader;
  FakeRing ring;
  std::string why_not;
  auto priority = ReaderPriority::Start(reader.tid(), ring.fd, kRingBytes, [&ring] { return ring.queued.load(); },
                                        &why_not);
  if (!priority) GTEST_SKIP() << why_not;
  ring.queued = kRingBytes / 2;
  EXPECT_TRUE(BecomesPolicy(reader.tid(), SCHED_OTHER, std::chrono::milliseconds(20 * ReaderPriority::kLoweredCheckMs)));
  EXPECT_EQ(priority->raises(), 1u);
}

TEST(ReaderPriorityTest, WakeUpsWithRoomLeftDoNotRaise) {
  IdleThread reader;
  FakeRing ring;
  std::string why_not;
  auto priority = ReaderPriority::Start(reader.tid(), ring.fd, kRingBytes, [&ring] { return ring.queued.load(); },
                                        &why_not);
  if (!priority) GTEST_SKIP() << why_not;
  ring.queued = kRingBytes / 8 - 1;
  for (int i = 0; i < 5; ++i) {
    ring.WakeUp();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(sched_getscheduler(reader.tid()), SCHED_IDLE);
  EXPECT_EQ(priority->raises(), 0u);
}

}  // namespace
}  // namespace flowtracer::loader
