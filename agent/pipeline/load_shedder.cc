#include "agent/pipeline/load_shedder.h"

#include <algorithm>
#include <cmath>

namespace flowtracer::pipeline {
namespace {
// Aim below the budget: part of the agent's cost does not shrink with the share
// (exports, timers), and the load moves between intervals.
constexpr double kTargetOfBudget = 0.8;
// Grow back by at most this factor a second once well under budget, so a burst that
// ends does not swing the share from a few percent to everything in one step.
constexpr double kMaxGrowthPerUpdate = 1.5;
constexpr double kGrowBelowOfBudget = 0.6;
constexpr double kMinIntervalSeconds = 0.5;
}  // namespace

uint32_t LoadShedder::Update(double cpu_seconds, uint64_t now_ns) {
  if (!enabled()) return share_;
  if (!have_sample_ || now_ns <= last_ns_) {
    Prime(cpu_seconds, now_ns);
    return share_;
  }
  const double wall_seconds = static_cast<double>(now_ns - last_ns_) / 1e9;
  // Too short an interval measures a burst, not a load (the first one, primed by the
  // first record, may end a few milliseconds later): keep measuring.
  if (wall_seconds < kMinIntervalSeconds) return share_;
  const double used = std::max(0.0, cpu_seconds - last_cpu_seconds_) / wall_seconds;
  last_cpu_seconds_ = cpu_seconds;
  last_ns_ = now_ns;
  last_cpu_ = used;

  double share = static_cast<double>(share_);
  if (used > max_cpu_) {
    // Cost follows the traced share: scale it to land under the budget.
    share *= kTargetOfBudget * max_cpu_ / used;
  } else if (used < kGrowBelowOfBudget * max_cpu_ && share_ < conntrack::kAllConnectionsTraced) {
    share *= used > 0 ? std::min(kMaxGrowthPerUpdate, kTargetOfBudget * max_cpu_ / used)
                      : kMaxGrowthPerUpdate;
  }
  share_ = static_cast<uint32_t>(std::clamp(std::round(share), static_cast<double>(kMinShare),
                                            static_cast<double>(conntrack::kAllConnectionsTraced)));
  return share_;
}

}  // namespace flowtracer::pipeline
