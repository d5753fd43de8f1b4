#include "agent/loader/reader_priority.h"

#include "agent/sched/idle_priority.h"

#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace flowtracer::loader {
namespace {

constexpr std::string_view kWho = "the ring reader";

int64_t MonotonicNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

bool ReaderPriority::Possible(std::string* why_not) { return sched::CanLowerAndRaise(kWho, why_not); }

std::unique_ptr<ReaderPriority> ReaderPriority::Start(pid_t reader_tid, int ring_fd, uint64_t ring_bytes,
                                                      std::function<uint64_t()> queued_bytes,
                                                      std::string* why_not, Options options) {
  if (!Possible(why_not)) return nullptr;
  if (std::string chosen = sched::KeepsChosenPolicy(reader_tid, kWho); !chosen.empty()) {
    *why_not = std::move(chosen);
    return nullptr;
  }
  std::unique_ptr<ReaderPriority> governor(new ReaderPriority());
  governor->options_ = options;
  governor->reader_tid_ = reader_tid;
  governor->ring_bytes_ = ring_bytes;
  governor->queued_bytes_ = std::move(queued_bytes);
  governor->reader_alive_ns_ = MonotonicNs();
  governor->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  governor->stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  // Edge-triggered: only the kernel's wake-ups count, not every record waiting (the
  // programs queue records without waking anyone until an eighth of the ring waits).
  epoll_event ring_event{};
  ring_event.events = EPOLLIN | EPOLLET;
  ring_event.data.fd = ring_fd;
  epoll_event stop_event{};
  stop_event.events = EPOLLIN;
  stop_event.data.fd = governor->stop_fd_;
  if (governor->epoll_fd_ < 0 || governor->stop_fd_ < 0 ||
      epoll_ctl(governor->epoll_fd_, EPOLL_CTL_ADD, ring_fd, &ring_event) ||
      epoll_ctl(governor->epoll_fd_, EPOLL_CTL_ADD, governor->stop_fd_, &stop_event)) {
    *why_not = std::string("the ring reader keeps normal priority: cannot watch the ring (") + strerror(errno) + ")";
    return nullptr;
  }
  // Lowered before the governor starts, so that the governor's first look sees it lowered.
  if (!governor->SetReaderPolicy(SCHED_IDLE)) {
    *why_not = std::string("the ring reader keeps normal priority: ") + strerror(errno);
    return nullptr;
  }
  governor->thread_ = std::thread([raw = governor.get()] { raw->Run(); });
  return governor;
}

ReaderPriority::~ReaderPriority() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    if (write(stop_fd_, &one, sizeof(one)) < 0) {
      // An eventfd write fails only when the counter would overflow: it is already set.
    }
    thread_.join();
  }
  if (reader_tid_) SetReaderPolicy(SCHED_OTHER);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
}

void ReaderPriority::ReaderAlive() { reader_alive_ns_.store(MonotonicNs(), std::memory_order_relaxed); }

bool ReaderPriority::SetReaderPolicy(int policy) { return sched::SetPolicy(reader_tid_, policy); }

void ReaderPriority::Run() {
  // A thread inherits its creator's policy: the governor itself must never idle. Possible()
  // showed this process may raise a thread from SCHED_IDLE.
  sched::SetPolicy(gettid(), SCHED_OTHER);
  governor_tid_ = gettid();
  const uint64_t raise_at = ring_bytes_ / 8, lower_at = ring_bytes_ / 32;
  const int64_t stall_ns = int64_t{options_.stall_ms} * 1000000;
  bool raised = false;
  while (true) {
    epoll_event events[2];
    const int ready =
        epoll_wait(epoll_fd_, events, 2, raised ? options_.raised_check_ms : options_.lowered_check_ms);
    for (int i = 0; i < ready; ++i)
      if (events[i].data.fd == stop_fd_) return;
    const uint64_t queued = queued_bytes_();
    const bool stalled = MonotonicNs() - reader_alive_ns_.load(std::memory_order_relaxed) > stall_ns;
    if (!raised && (queued >= raise_at || stalled) && SetReaderPolicy(SCHED_OTHER)) {
      raised = true;
      raises_.fetch_add(1, std::memory_order_relaxed);
    } else if (raised && queued <= lower_at && !stalled && SetReaderPolicy(SCHED_IDLE)) {
      raised = false;
    }
  }
}

}  // namespace flowtracer::loader
