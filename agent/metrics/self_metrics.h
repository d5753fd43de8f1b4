// The agent's own counters as metrics (resource: the agent), exported with the span
// metrics through Prometheus and OTLP. Names are a contract (README, docs/metrics.md).
#pragma once

#include <cstdint>
#include <vector>

#include "agent/metrics/metric_data.h"
#include "agent/metrics/span_metrics.h"
#include "agent/telemetry/self_telemetry.h"

namespace flowtracer::metrics {

// What the metrics pipeline itself counts, beside SelfTelemetry.
struct MetricsPipelineCounters {
  SpanMetricsStats span_metrics;
  uint64_t otlp_exports = 0;
  uint64_t otlp_export_failures = 0;
  uint64_t otlp_points_exported = 0;
  uint64_t otlp_points_dropped = 0;
};

// Self-telemetry values become counters/gauges named as in SelfTelemetry, per-reason
// values carry a `reason` attribute; `start_unix_ns` is when the agent started.
ResourceMetrics SelfMetrics(const std::vector<telemetry::SelfTelemetry::Value>& values,
                            const MetricsPipelineCounters& pipeline, uint64_t start_unix_ns);

// Appends `self` to the agent's resource (service_name "") of `snapshot`.
void MergeAgentResource(ResourceMetrics self, MetricsSnapshot* snapshot);

}  // namespace flowtracer::metrics
