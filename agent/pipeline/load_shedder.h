// Keeps the agent inside a CPU budget by tracing a share of the connections. When the
// host is saturated, every traced call costs the traced programs CPU they would have
// used; past the budget the agent traces fewer connections rather than slowing the
// host down. Connections are chosen by a hash of their endpoints, so both ends of a
// connection (same host, or two hosts with the same budget) are traced or shed together,
// and a shed connection costs only the kernel's early return.
#pragma once

#include <cstdint>

#include "agent/conntrack/connection_tracker.h"

namespace flowtracer::pipeline {

class LoadShedder {
 public:
  // `max_cpu_percent`: of one core, all the agent's threads together; <= 0 disables.
  explicit LoadShedder(double max_cpu_percent) : max_cpu_(max_cpu_percent / 100.0) {}

  bool enabled() const { return max_cpu_ > 0; }
  double max_cpu() const { return max_cpu_; }  // fraction of one core

  // Called about once a second with the agent's CPU time so far and a monotonic clock;
  // returns the share of connections to trace from now on (ConnectionTracker::SetTracedShare).
  uint32_t Update(double cpu_seconds, uint64_t now_ns);
  // Starts the first interval now rather than at the first Update, so the first decision
  // comes one interval after traffic starts (loading the programs is not counted).
  void Prime(double cpu_seconds, uint64_t now_ns) {
    have_sample_ = true;
    last_cpu_seconds_ = cpu_seconds;
    last_ns_ = now_ns;
  }
  bool primed() const { return have_sample_; }

  uint32_t traced_share() const { return share_; }
  // The CPU use measured over the last interval, as a fraction of one core.
  double last_cpu() const { return last_cpu_; }

  // Never below this share: a few connections keep being traced, so the agent still
  // shows what the host does and measures its own cost.
  static constexpr uint32_t kMinShare = 64;  // ~0.1%

 private:
  double max_cpu_;
  uint32_t share_ = conntrack::kAllConnectionsTraced;
  bool have_sample_ = false;
  double last_cpu_seconds_ = 0;
  uint64_t last_ns_ = 0;
  double last_cpu_ = 0;
};

}  // namespace flowtracer::pipeline
