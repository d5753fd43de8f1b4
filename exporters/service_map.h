// The observed service map as a mermaid flowchart, the way architecture docs draw
// service maps: one node per service or peer, one edge per caller -> callee with its
// request rate, errors and p99 latency.
#pragma once

#include <string>
#include <vector>

#include "agent/spans/call_summary.h"

namespace flowtracer::exporters {

// `seconds` is how long the capture ran (the rate's denominator).
std::string MermaidServiceMap(const std::vector<spans::CallSummaryRow>& rows, double seconds);

}  // namespace flowtracer::exporters
