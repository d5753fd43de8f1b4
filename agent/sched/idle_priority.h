// Threads whose work can wait give the CPU to the programs the agent traces: they run as
// SCHED_IDLE, which any other thread waking on their CPU preempts at once, and are raised
// back to normal priority when their backlog grows, since SCHED_IDLE alone starves on busy
// CPUs. The ring reader (loader/reader_priority.h) and the OTLP span exporter's thread
// use this (docs/performance.md, ninth and tenth rounds).
//
// A thread inherits its creator's policy: a lowered thread must not start threads that are
// meant to keep up on their own.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace flowtracer::sched {

// Sets `tid`'s policy (SCHED_OTHER or SCHED_IDLE), keeping its nice value.
bool SetPolicy(pid_t tid, int policy);

// Whether this process may lower a thread to SCHED_IDLE and raise it back (CAP_SYS_NICE,
// or RLIMIT_NICE high enough for the thread's nice value); if not, `why_not` says so,
// naming `who` ("the ring reader").
bool CanLowerAndRaise(std::string_view who, std::string* why_not);

// Empty when `tid` runs under SCHED_OTHER; else why `who` keeps the policy whoever started
// the agent chose (`chrt`).
std::string KeepsChosenPolicy(pid_t tid, std::string_view who);

// A worker thread at SCHED_IDLE while its backlog is small. Producers report the backlog
// they leave and raise the worker once it reaches `raise_at`; the worker reports what is
// left after each piece of work and lowers itself once that is at most `lower_at`. No
// lock: a worker preempted at SCHED_IDLE while holding one would hold up the producer.
class BacklogPriority {
 public:
  BacklogPriority(size_t raise_at, size_t lower_at) : raise_at_(raise_at), lower_at_(lower_at) {}
  BacklogPriority(const BacklogPriority&) = delete;
  BacklogPriority& operator=(const BacklogPriority&) = delete;

  // Lowers thread `worker_tid`, once, and governs it from then on. False, with `why_not`,
  // when the worker keeps its priority (then every other call does nothing).
  bool Lower(pid_t worker_tid, std::string_view who, std::string* why_not);

  // By a producer: one relaxed load unless the worker must be raised.
  void Produced(size_t backlog) {
    if (backlog >= raise_at_ && lowered_.load(std::memory_order_relaxed)) Raise();
  }
  // By the worker after a piece of work.
  void Worked(size_t backlog);
  // Any thread: the worker's work must not wait (a flush, a stall).
  void Raise();
  // Any thread: raised, and it lowers itself no more (shutdown).
  void RaiseForGood();

  bool lowered() const { return lowered_.load(std::memory_order_relaxed); }
  uint64_t raises() const { return raises_.load(std::memory_order_relaxed); }

 private:
  bool LowerWorker();  // false when the policy could not be set (errno says why)

  const size_t raise_at_, lower_at_;
  std::atomic<pid_t> worker_tid_{0};  // 0: not governed
  // Set after the worker is lowered and cleared before it is raised: once the calls in
  // progress end, the worker is not idle while this says raised. A raise that misses a
  // lowering in progress (it reads false) falls to the next report, and the backlog that
  // called for it is still there.
  std::atomic<bool> lowered_{false};
  std::atomic<bool> raised_for_good_{false};
  std::atomic<uint64_t> raises_{0};
};

}  // namespace flowtracer::sched
