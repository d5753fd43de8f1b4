// The ring reader yields the CPU to the programs it traces. Every 10 ms it processes what
// the programs queued, and at normal priority that batch holds the CPU a traced program
// wakes up on until the scheduler's slice ends: with nginx at 10 000 evenly spaced
// requests/s, capture added 240 us to its p99, and 13 with the reader at SCHED_IDLE
// (docs/performance.md, ninth round). SCHED_IDLE is preempted at once by any other thread
// waking on its CPU.
//
// SCHED_IDLE alone starves when the CPUs are busy and the ring would overflow, so a
// governor thread at normal priority raises the reader back to SCHED_OTHER from the
// moment an eighth of the ring waits (the kernel programs wake the governor then:
// capture.bpf.h, wakeup_flags) until it has drained to a thirty-second.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace flowtracer::loader {

class ReaderPriority {
 public:
  static constexpr int kRaisedCheckMs = 5;   // how often a raised reader's backlog is read
  static constexpr int kLoweredCheckMs = 100;  // a safety net beside the kernel's wake-up

  // Lowers thread `reader_tid` and governs it. `ring_fd` is the ring buffer map (waited on
  // for the kernel's wake-ups), `queued_bytes` how much of it waits to be read. Returns
  // null with `why_not` set when this process could not raise the thread back (no
  // CAP_SYS_NICE, RLIMIT_NICE below 20): the reader then keeps its normal priority.
  static std::unique_ptr<ReaderPriority> Start(pid_t reader_tid, int ring_fd, uint64_t ring_bytes,
                                               std::function<uint64_t()> queued_bytes, std::string* why_not);
  // Stops the governor and leaves the reader at normal priority.
  ~ReaderPriority();
  ReaderPriority(const ReaderPriority&) = delete;
  ReaderPriority& operator=(const ReaderPriority&) = delete;

  // Times the reader was raised because the ring was filling.
  uint64_t raises() const { return raises_.load(std::memory_order_relaxed); }

 private:
  ReaderPriority() = default;
  void Run();
  bool SetReaderPolicy(int policy);

  pid_t reader_tid_ = 0;
  int epoll_fd_ = -1;
  int stop_fd_ = -1;  // an eventfd: the destructor's wake-up
  uint64_t ring_bytes_ = 0;
  std::function<uint64_t()> queued_bytes_;
  std::atomic<uint64_t> raises_{0};
  std::thread thread_;
};

}  // namespace flowtracer::loader
