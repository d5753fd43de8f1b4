#include "exporters/prometheus/prometheus_text.h"

#include <map>
#include <vector>

#include <spdlog/fmt/fmt.h>

namespace flowtracer::exporters {
namespace {

using metrics::Label;
using metrics::Labels;
using metrics::Metric;
using metrics::MetricKind;
using metrics::Point;

bool IsNameChar(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!first && c >= '0' && c <= '9');
}

// Invalid characters become '_', runs of '_' collapse, a leading digit gets a prefix.
std::string Sanitize(std::string_view text, std::string_view digit_prefix) {
  std::string out;
  for (char c : text) {
    const char mapped = IsNameChar(c, false) ? c : '_';
    if (mapped == '_' && !out.empty() && out.back() == '_') continue;
    out += mapped;
  }
  if (!out.empty() && out[0] >= '0' && out[0] <= '9') out = std::string(digit_prefix) + out;
  return out;
}

// UCUM units the translation spells out; annotations ("{request}") carry no unit.
std::string_view UnitSuffix(std::string_view unit) {
  static const std::map<std::string_view, std::string_view> kUnits = {
      {"s", "seconds"}, {"ms", "milliseconds"}, {"us", "microseconds"}, {"ns", "nanoseconds"},
      {"By", "bytes"},  {"1", "ratio"},         {"%", "percent"}};
  if (unit.empty() || unit.front() == '{') return "";
  auto found = kUnits.find(unit);
  return found == kUnits.end() ? "" : found->second;
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string EscapeHelp(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string LabelValueText(const metrics::LabelValue& value) {
  if (auto s = std::get_if<std::string>(&value)) return *s;
  if (auto i = std::get_if<int64_t>(&value)) return std::to_string(*i);
  return std::get<bool>(value) ? "true" : "false";
}

// `{a="x",b="y"` without the closing brace, so "le" can follow.
std::string OpenLabels(std::string_view service, const Labels& labels) {
  std::string out;
  auto add = [&](std::string_view key, std::string_view value) {
    out += out.empty() ? "{" : ",";
    out += key;
    out += "=\"";
    out += EscapeLabelValue(value);
    out += '"';
  };
  if (!service.empty()) add("service_name", service);
  for (const Label& label : labels) add(PrometheusLabelName(label.key), LabelValueText(label.value));
  return out;
}

std::string CloseLabels(const std::string& open) { return open.empty() ? "" : open + "}"; }

std::string FormatDouble(double value) { return fmt::format("{}", value); }

struct Family {
  std::string help;
  MetricKind kind;
  std::vector<std::pair<std::string_view, const Point*>> points;  // service, point
};

}  // namespace

std::string PrometheusLabelName(std::string_view key) { return Sanitize(key, "key_"); }

std::string PrometheusMetricName(std::string_view name, std::string_view unit, MetricKind kind) {
  std::string out = Sanitize(name, "_");
  auto ends_with = [&](std::string_view suffix) {
    return out.size() >= suffix.size() + 1 && out.ends_with(suffix) && out[out.size() - suffix.size() - 1] == '_';
  };
  const std::string_view suffix = UnitSuffix(unit);
  if (kind == MetricKind::kCounter && ends_with("total")) out.resize(out.size() - 6);
  if (!suffix.empty() && !ends_with(suffix)) out += "_" + std::string(suffix);
  if (kind == MetricKind::kCounter) out += "_total";
  return out;
}

std::string PrometheusText(const metrics::MetricsSnapshot& snapshot) {
  // One family per name across services: Prometheus wants each name's HELP/TYPE once.
  std::map<std::string, Family> families;
  for (const metrics::ResourceMetrics& resource : snapshot.resources) {
    for (const Metric& metric : resource.metrics) {
      const std::string name = PrometheusMetricName(metric.name, metric.unit, metric.kind);
      Family& family = families.try_emplace(name, Family{metric.description, metric.kind, {}}).first->second;
      if (family.kind != metric.kind) continue;  // a clash of translated names: keep the first kind
      for (const Point& point : metric.points) family.points.push_back({resource.service_name, &point});
    }
  }
  std::string out;
  for (const auto& [name, family] : families) {
    if (family.points.empty()) continue;
    const char* type = family.kind == MetricKind::kCounter ? "counter"
                       : family.kind == MetricKind::kGauge ? "gauge"
                                                           : "histogram";
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, EscapeHelp(family.help), name, type);
    for (const auto& [service, point] : family.points) {
      const std::string labels = OpenLabels(service, point->labels);
      if (family.kind != MetricKind::kHistogram) {
        out += fmt::format("{}{} {}\n", name, CloseLabels(labels), point->value);
        continue;
      }
      const std::string bucket_open = labels.empty() ? "{" : labels + ",";
      uint64_t cumulative = 0;
      for (size_t i = 0; i < metrics::kDurationBucketsSeconds.size(); ++i) {
        cumulative += point->histogram.bucket_counts[i];
        out += fmt::format("{}_bucket{}le=\"{}\"}} {}\n", name, bucket_open,
                           FormatDouble(metrics::kDurationBucketsSeconds[i]), cumulative);
      }
      out += fmt::format("{}_bucket{}le=\"+Inf\"}} {}\n", name, bucket_open, point->histogram.count);
      out += fmt::format("{}_sum{} {}\n", name, CloseLabels(labels), FormatDouble(point->histogram.sum));
      out += fmt::format("{}_count{} {}\n", name, CloseLabels(labels), point->histogram.count);
    }
  }
  return out;
}

}  // namespace flowtracer::exporters
