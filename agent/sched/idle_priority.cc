#include "agent/sched/idle_priority.h"

#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace flowtracer::sched {

bool SetPolicy(pid_t tid, int policy) {
  sched_param param{};
  param.sched_priority = 0;
  return sched_setscheduler(tid, policy, &param) == 0;
}

bool CanLowerAndRaise(std::string_view who, std::string* why_not) {
  // Tried on a thread made for the purpose: a thread lowered for good would starve.
  int error = 0;
  std::thread probe([&error] {
    if (!SetPolicy(gettid(), SCHED_IDLE) || !SetPolicy(gettid(), SCHED_OTHER)) error = errno;
  });
  probe.join();
  if (error == 0) return true;
  *why_not = std::string(who) + " keeps normal priority: a thread cannot leave SCHED_IDLE here (" +
             strerror(error) + "; CAP_SYS_NICE allows it, or an RLIMIT_NICE of 20 minus the nice value)";
  return false;
}

std::string KeepsChosenPolicy(pid_t tid, std::string_view who) {
  const int policy = sched_getscheduler(tid);
  if (policy == SCHED_OTHER) return {};
  return std::string(who) + " keeps the scheduling policy it was started with (" +
         (policy == SCHED_BATCH ? "SCHED_BATCH"
          : policy == SCHED_IDLE ? "SCHED_IDLE"
          : policy < 0           ? strerror(errno)
                                 : "real-time") +
         ")";
}

bool BacklogPriority::LowerThisThread(std::string_view who, std::string* why_not) {
  if (!CanLowerAndRaise(who, why_not)) return false;
  const pid_t tid = gettid();
  if (std::string chosen = KeepsChosenPolicy(tid, who); !chosen.empty()) {
    *why_not = std::move(chosen);
    return false;
  }
  std::lock_guard lock(mutex_);
  if (raised_for_good_) return true;  // stopping already
  if (!SetPolicy(tid, SCHED_IDLE)) {
    *why_not = std::string(who) + " keeps normal priority: " + strerror(errno);
    return false;
  }
  worker_tid_ = tid;
  lowered_.store(true, std::memory_order_relaxed);
  return true;
}

void BacklogPriority::Worked(size_t backlog) {
  if (backlog > lower_at_ || lowered_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(mutex_);
  // A producer that saw it raised and the backlog high in between raises it at its next
  // report: a backlog at raise_at grows until then.
  if (worker_tid_ && !raised_for_good_ && SetPolicy(worker_tid_, SCHED_IDLE))
    lowered_.store(true, std::memory_order_relaxed);
}

void BacklogPriority::Raise() {
  std::lock_guard lock(mutex_);
  RaiseLocked();
}

void BacklogPriority::RaiseForGood() {
  std::lock_guard lock(mutex_);
  RaiseLocked();
  raised_for_good_ = true;
}

void BacklogPriority::RaiseLocked() {
  if (!lowered_.load(std::memory_order_relaxed)) return;
  if (SetPolicy(worker_tid_, SCHED_OTHER)) {
    lowered_.store(false, std::memory_order_relaxed);
    raises_.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace flowtracer::sched
