#include "agent/loader/reader_priority.h"

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
  std::unique_ptr<ReaderPriority> governor(new ReaderPriority(ring_bytes));
  governor->options_ = options;
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
    *why_not = std::string(kWho) + " keeps normal priority: cannot watch the ring (" + strerror(errno) + ")";
    return nullptr;
  }
  // Lowered before the governor starts, so that the governor's first look sees it lowered.
  if (!governor->priority_.Lower(reader_tid, kWho, why_not)) return nullptr;
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
  priority_.RaiseForGood();
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
}

void ReaderPriority::ReaderAlive() { reader_alive_ns_.store(MonotonicNs(), std::memory_order_relaxed); }

void ReaderPriority::Run() {
  // A thread inherits its creator's policy: the governor itself must never idle. Lower()
  // showed this process may raise a thread from SCHED_IDLE.
  sched::SetPolicy(gettid(), SCHED_OTHER);
  governor_tid_ = gettid();
  const int64_t stall_ns = int64_t{options_.stall_ms} * 1000000;
  while (true) {
    epoll_event events[2];
    const int ready = epoll_wait(epoll_fd_, events, 2,
                                 priority_.lowered() ? options_.lowered_check_ms : options_.raised_check_ms);
    for (int i = 0; i < ready; ++i)
      if (events[i].data.fd == stop_fd_) return;
    if (MonotonicNs() - reader_alive_ns_.load(std::memory_order_relaxed) > stall_ns) {
      priority_.Raise();  // and not lowered while it stays stalled
      continue;
    }
    const uint64_t queued = queued_bytes_();
    priority_.Produced(queued);
    priority_.Worked(queued);
  }
}

}  // namespace flowtracer::loader
