// The ring reader yields the CPU to the programs it traces. Every 10 ms it processes what
// the programs queued, and at normal priority that batch holds the CPU a traced program
// wakes up on until the scheduler's slice ends: with nginx at 10 000 evenly spaced
// requests/s, capture added 240 us to its p99, and 13 with the reader at SCHED_IDLE
// (docs/performance.md, ninth round). SCHED_IDLE is preempted at once by any other thread
// waking on its CPU.
//
// SCHED_IDLE alone starves when the CPUs are busy, so a governor thread at normal priority
// raises the reader back to SCHED_OTHER when
// - an eighth of the ring waits (the kernel programs wake the governor then:
//   capture.bpf.h, wakeup_flags), until it has drained to a thirty-second; or
// - the reader has not finished a loop for Options::stall_ms: its once-a-second work
//   (health, timeouts, the stop request) must not wait for the ring to fill.
// The policy changes themselves are sched::BacklogPriority's, the ring's bytes its backlog.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "agent/sched/idle_priority.h"

namespace flowtracer::loader {

class ReaderPriority {
 public:
  struct Options {
    int raised_check_ms = 5;     // how often a raised reader's backlog is read
    int lowered_check_ms = 100;  // the stall check, and a safety net beside the wake-up
    int stall_ms = 500;          // a reader this late is raised
  };

  // Whether this process may lower a thread to SCHED_IDLE and raise it back (CAP_SYS_NICE,
  // or RLIMIT_NICE high enough for the thread's nice value); if not, `why_not` says so.
  static bool Possible(std::string* why_not);

  // Lowers thread `reader_tid` and governs it. `ring_fd` is the ring buffer map (waited on
  // for the kernel's wake-ups), `queued_bytes` how much of it waits to be read. Returns
  // null with `why_not` set when the reader keeps its priority: not Possible, a policy
  // other than SCHED_OTHER chosen by whoever started the agent, or no epoll.
  static std::unique_ptr<ReaderPriority> Start(pid_t reader_tid, int ring_fd, uint64_t ring_bytes,
                                               std::function<uint64_t()> queued_bytes, std::string* why_not,
                                               Options options);
  static std::unique_ptr<ReaderPriority> Start(pid_t reader_tid, int ring_fd, uint64_t ring_bytes,
                                               std::function<uint64_t()> queued_bytes, std::string* why_not) {
    return Start(reader_tid, ring_fd, ring_bytes, std::move(queued_bytes), why_not, Options());
  }
  // Stops the governor and leaves the reader at normal priority.
  ~ReaderPriority();
  ReaderPriority(const ReaderPriority&) = delete;
  ReaderPriority& operator=(const ReaderPriority&) = delete;

  // The reader calls this once per loop: a reader that stops calling it is raised.
  void ReaderAlive();

  // Times the reader was raised because the ring was filling or it stalled.
  uint64_t raises() const { return priority_.raises(); }
  pid_t governor_tid() const { return governor_tid_.load(); }

 private:
  explicit ReaderPriority(uint64_t ring_bytes) : priority_(ring_bytes / 8, ring_bytes / 32) {}
  void Run();

  Options options_;
  sched::BacklogPriority priority_;  // raised at an eighth of the ring, lowered at a thirty-second
  int epoll_fd_ = -1;
  int stop_fd_ = -1;  // an eventfd: the destructor's wake-up
  std::function<uint64_t()> queued_bytes_;
  std::atomic<int64_t> reader_alive_ns_{0};  // CLOCK_MONOTONIC
  std::atomic<pid_t> governor_tid_{0};
  std::thread thread_;
};

}  // namespace flowtracer::loader
