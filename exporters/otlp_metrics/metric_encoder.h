// Metric snapshots to OTLP: one ResourceMetrics per traced service (service.name, host.name,
// telemetry.distro.*, then the agent-wide resource attributes) and one for the agent itself,
// scope "flowtracer". Cumulative by default; delta subtracts the previous export.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

#include <opentelemetry/proto/collector/metrics/v1/metrics_service.pb.h>

#include "agent/metrics/metric_data.h"
#include "exporters/otlp/otlp_options.h"

namespace flowtracer::exporters::otlp_metrics {

enum class Temporality { kCumulative, kDelta };

// "cumulative" or "delta" (case-insensitive, as OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE).
bool ParseTemporality(const std::string& text, Temporality* temporality);

struct ResourceOptions {
  std::string host_name;
  std::string version;                    // telemetry.distro.version
  otlp::KeyValues agent_attributes;       // OTEL_RESOURCE_ATTRIBUTES and the config's
  std::string agent_service_name = "flowtracer";  // the resource of the agent's own metrics
};

class MetricsEncoder {
 public:
  MetricsEncoder(Temporality temporality, ResourceOptions resource);

  // Fills `request` from `snapshot`; returns the number of data points. In delta mode each
  // call is one interval: points with nothing new since the last call are left out.
  size_t Encode(const metrics::MetricsSnapshot& snapshot,
                opentelemetry::proto::collector::metrics::v1::ExportMetricsServiceRequest* request);

 private:
  struct Previous {
    uint64_t time_unix_ns = 0;
    int64_t value = 0;
    metrics::HistogramData histogram;
  };

  Temporality temporality_;
  ResourceOptions resource_;
  // Delta mode: the last cumulative value of each series, keyed by resource, metric and
  // attributes. Bounded because the series themselves are.
  std::unordered_map<std::string, Previous> previous_;
};

}  // namespace flowtracer::exporters::otlp_metrics
