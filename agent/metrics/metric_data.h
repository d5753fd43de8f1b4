// A point-in-time copy of every metric the agent keeps, in the OpenTelemetry data model
// (resource -> metric -> points with attributes). Exporters (Prometheus text, OTLP) read
// only this, never the aggregator's internals.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace flowtracer::metrics {

// The explicit bucket boundaries the HTTP and messaging semantic conventions recommend
// for durations in seconds.
inline constexpr std::array<double, 14> kDurationBucketsSeconds = {
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10};

using LabelValue = std::variant<std::string, int64_t, bool>;
struct Label {
  std::string key;
  LabelValue value;
  bool operator==(const Label&) const = default;
  bool operator<(const Label& o) const {
    return key != o.key ? key < o.key : value < o.value;
  }
};
using Labels = std::vector<Label>;  // sorted by key, keys unique

struct HistogramData {
  // bucket_counts[i] counts values in (bounds[i-1], bounds[i]]; the last counts the rest.
  std::array<uint64_t, kDurationBucketsSeconds.size() + 1> bucket_counts{};
  uint64_t count = 0;
  double sum = 0;
  double min = 0;  // meaningful when count > 0
  double max = 0;

  void Record(double value);
};

enum class MetricKind {
  kCounter,    // monotonic cumulative sum, integer
  kGauge,      // last value, integer
  kHistogram,  // explicit buckets (kDurationBucketsSeconds)
};

struct Point {
  Labels labels;
  uint64_t start_unix_ns = 0;  // when this series began (cumulative start)
  int64_t value = 0;           // counter or gauge
  HistogramData histogram;     // histogram
};

struct Metric {
  std::string name;  // OpenTelemetry name: "http.server.request.duration"
  std::string description;
  std::string unit;  // UCUM: "s", "{request}"
  MetricKind kind = MetricKind::kCounter;
  std::vector<Point> points;
};

// service_name "" holds the agent's own metrics (service graph, self-metrics).
struct ResourceMetrics {
  std::string service_name;
  std::vector<Metric> metrics;
};

struct MetricsSnapshot {
  uint64_t time_unix_ns = 0;
  std::vector<ResourceMetrics> resources;
};

}  // namespace flowtracer::metrics
