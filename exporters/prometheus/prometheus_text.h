// Metrics in the Prometheus text exposition format (0.0.4), named by the standard
// OpenTelemetry -> Prometheus translation: dots become underscores, the unit becomes a
// suffix ("s" -> "_seconds"), counters end in "_total", histograms expand into
// _bucket{le=...}/_sum/_count. The traced service is the `service_name` label.
#pragma once

#include <string>
#include <string_view>

#include "agent/metrics/metric_data.h"

namespace flowtracer::exporters {

// "http.server.request.duration" + "s" (histogram) -> "http_server_request_duration_seconds".
std::string PrometheusMetricName(std::string_view name, std::string_view unit, metrics::MetricKind kind);
// "http.request.method" -> "http_request_method".
std::string PrometheusLabelName(std::string_view key);

std::string PrometheusText(const metrics::MetricsSnapshot& snapshot);

}  // namespace flowtracer::exporters
