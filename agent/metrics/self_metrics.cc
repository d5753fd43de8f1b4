#include "agent/metrics/self_metrics.h"

#include <map>

namespace flowtracer::metrics {
namespace {

std::string UnitOf(const std::string& name) {
  if (name.ends_with("_bytes")) return "By";
  if (name.ends_with("_percent")) return "%";
  if (name.find(".spans") != std::string::npos || name.find("queue_depth") != std::string::npos) return "{span}";
  if (name.find(".events") != std::string::npos) return "{event}";
  return "{request}";
}

}  // namespace

ResourceMetrics SelfMetrics(const std::vector<telemetry::SelfTelemetry::Value>& values,
                            const MetricsPipelineCounters& pipeline, uint64_t start_unix_ns) {
  ResourceMetrics resource{"", {}};
  std::map<std::string, size_t> index;  // name -> position, so reasons share one metric
  auto add = [&](const std::string& name, const std::string& description, const std::string& unit,
                 MetricKind kind, const std::string& reason, uint64_t value) {
    auto [it, inserted] = index.emplace(name, resource.metrics.size());
    if (inserted) resource.metrics.push_back({name, description, unit, kind, {}});
    Point point;
    if (!reason.empty()) point.labels = {{"reason", reason}};
    point.start_unix_ns = start_unix_ns;
    point.value = static_cast<int64_t>(value);
    resource.metrics[it->second].points.push_back(std::move(point));
  };
  for (const telemetry::SelfTelemetry::Value& value : values) {
    const bool gauge = value.kind == telemetry::SelfTelemetry::Kind::kGauge;
    add(value.name, "flowtracer self-telemetry (README, Self-telemetry).", UnitOf(value.name),
        gauge ? MetricKind::kGauge : MetricKind::kCounter, value.reason, value.value);
  }
  const SpanMetricsStats& s = pipeline.span_metrics;
  const std::string folded = "Metric data folded to bound cardinality or memory, by cause.";
  add("flowtracer.metrics.folded", folded, "{span}", MetricKind::kCounter, "series_limit", s.series_overflowed);
  add("flowtracer.metrics.folded", folded, "{span}", MetricKind::kCounter, "service_limit", s.services_overflowed);
  add("flowtracer.metrics.folded", folded, "{span}", MetricKind::kCounter, "edge_limit", s.edges_overflowed);
  add("flowtracer.metrics.folded", folded, "{span}", MetricKind::kCounter, "pending_full", s.pending_evicted);
  const std::string graph = "Service graph requests by how they were seen.";
  add("flowtracer.service_graph.requests", graph, "{request}", MetricKind::kCounter, "paired", s.graph_pairs);
  add("flowtracer.service_graph.requests", graph, "{request}", MetricKind::kCounter, "one_end", s.graph_unpaired);
  const std::string requests = "OTLP metrics export requests, by outcome.";
  add("flowtracer.metrics.export.requests", requests, "{request}", MetricKind::kCounter, "sent",
      pipeline.otlp_exports);
  add("flowtracer.metrics.export.requests", requests, "{request}", MetricKind::kCounter, "failed",
      pipeline.otlp_export_failures);
  const std::string points = "OTLP metric data points, by outcome.";
  add("flowtracer.metrics.export.points", points, "{point}", MetricKind::kCounter, "sent",
      pipeline.otlp_points_exported);
  add("flowtracer.metrics.export.points", points, "{point}", MetricKind::kCounter, "dropped",
      pipeline.otlp_points_dropped);
  return resource;
}

void MergeAgentResource(ResourceMetrics self, MetricsSnapshot* snapshot) {
  for (ResourceMetrics& resource : snapshot->resources) {
    if (!resource.service_name.empty()) continue;
    for (Metric& metric : self.metrics) resource.metrics.push_back(std::move(metric));
    return;
  }
  snapshot->resources.push_back(std::move(self));
}

}  // namespace flowtracer::metrics
