#include "exporters/service_map.h"

#include <map>

#include <spdlog/fmt/fmt.h>

namespace flowtracer::exporters {
namespace {

// Mermaid labels are quoted; a quote inside is written as an entity.
std::string QuoteLabel(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += "#quot;";
    else if (c == '\n' || c == '\r') out += ' ';
    else out += c;
  }
  return out + "\"";
}

std::string FormatRate(double per_second) {
  if (per_second >= 10) return fmt::format("{:.0f} req/s", per_second);
  if (per_second >= 0.1) return fmt::format("{:.1f} req/s", per_second);
  return fmt::format("{:.2f} req/s", per_second);
}

}  // namespace

std::string MermaidServiceMap(const std::vector<spans::CallSummaryRow>& rows, double seconds) {
  // Node ids are positions in name order, so the same traffic draws the same chart.
  std::map<std::string, size_t> node_ids;
  for (const spans::CallSummaryRow& row : rows) {
    node_ids.emplace(row.caller, 0);
    node_ids.emplace(row.callee, 0);
  }
  std::string out = "flowchart LR\n";
  size_t next_id = 0;
  for (auto& [name, id] : node_ids) {
    id = next_id++;
    out += fmt::format("  n{}[{}]\n", id, QuoteLabel(name));
  }
  for (const spans::CallSummaryRow& row : rows) {
    const double rate = seconds > 0 ? row.count / seconds : 0;
    const std::string errors =
        row.errors == 0 ? "0 errors"
                        : fmt::format("{} errors ({:.1f}%)", row.errors, 100.0 * row.errors / row.count);
    out += fmt::format("  n{} -->|{}| n{}\n", node_ids[row.caller],
                       QuoteLabel(fmt::format("{}, {}, p99 {:.2f} ms", FormatRate(rate), errors, row.p99_ms)),
                       node_ids[row.callee]);
  }
  return out;
}

}  // namespace flowtracer::exporters
