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

bool BacklogPriority::Lower(pid_t worker_tid, std::string_view who, std::string* why_not) {
  if (!CanLowerAndRaise(who, why_not)) return false;
  if (std::string chosen = KeepsChosenPolicy(worker_tid, who); !chosen.empty()) {
    *why_not = std::move(chosen);
    return false;
  }
  worker_tid_.store(worker_tid);
  if (LowerWorker()) return true;
  *why_not = std::string(who) + " keeps normal priority: " + strerror(errno);
  worker_tid_.store(0);
  return false;
}

void BacklogPriority::Worked(size_t backlog) {
  if (backlog <= lower_at_ && !lowered_.load(std::memory_order_relaxed)) LowerWorker();
}

bool BacklogPriority::LowerWorker() {
  const pid_t tid = worker_tid_.load();  // 0 would name the calling thread
  if (tid == 0) return false;
  if (raised_for_good_.load()) return true;  // stopping already
  if (!SetPolicy(tid, SCHED_IDLE)) return false;
  lowered_.store(true);
  // RaiseForGood sets its flag before it reads lowered_: one of the two sees the other.
  if (raised_for_good_.load()) Raise();
  return true;
}

void BacklogPriority::Raise() {
  const pid_t tid = worker_tid_.load();
  if (tid == 0 || !lowered_.exchange(false)) return;
  if (SetPolicy(tid, SCHED_OTHER)) raises_.fetch_add(1, std::memory_order_relaxed);
  else lowered_.store(true);  // it is still idle
}

void BacklogPriority::RaiseForGood() {
  raised_for_good_.store(true);
  Raise();
}

}  // namespace flowtracer::sched
