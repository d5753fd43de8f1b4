// What `flowtracer capture` prints: spans as JSON lines (a stable schema, see README)
// or as aligned text lines, and the closing caller -> callee table.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/spans/call_summary.h"
#include "agent/spans/span.h"

namespace flowtracer::exporters {

nlohmann::json SpanToJson(const spans::Span& span);

// One line of at most 80 columns: time, service, kind, name, status, duration, peer.
std::string SpanTextHeader();
std::string SpanToText(const spans::Span& span);

std::string SummaryTable(const std::vector<spans::CallSummaryRow>& rows);

}  // namespace flowtracer::exporters
