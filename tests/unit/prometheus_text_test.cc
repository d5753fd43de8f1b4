#include "exporters/prometheus/prometheus_text.h"

#include <gtest/gtest.h>

#include <string>

namespace flowtracer::exporters {
namespace {

using metrics::MetricKind;

TEST(PrometheusNameTest, StandardTranslation) {
  EXPECT_EQ(PrometheusMetricName("http.server.request.duration", "s", MetricKind::kHistogram),
            "http_server_request_duration_seconds");
  EXPECT_EQ(PrometheusMetricName("traces_service_graph_request_total", "{request}", MetricKind::kCounter),
            "traces_service_graph_request_total");
  EXPECT_EQ(PrometheusMetricName("traces_service_graph_request_server_seconds", "s", MetricKind::kHistogram),
            "traces_service_graph_request_server_seconds");
  EXPECT_EQ(PrometheusMetricName("flowtracer.spans", "{span}", MetricKind::kCounter), "flowtracer_spans_total");
  EXPECT_EQ(PrometheusMetricName("flowtracer.queue.size", "By", MetricKind::kGauge), "flowtracer_queue_size_bytes");
  EXPECT_EQ(PrometheusMetricName("a..b-c", "", MetricKind::kGauge), "a_b_c");
  EXPECT_EQ(PrometheusLabelName("http.request.method"), "http_request_method");
  EXPECT_EQ(PrometheusLabelName("2xx"), "key_2xx");
}

TEST(PrometheusTextTest, HistogramsAreCumulativeWithServiceNameAndEscapedValues) {
  metrics::MetricsSnapshot snapshot;
  metrics::Metric metric{"http.server.request.duration", "Duration of HTTP server requests.", "s",
                         MetricKind::kHistogram, {}};
  metrics::Point point;
  point.labels = {{"http.request.method", std::string("GET")},
                  {"http.response.status_code", int64_t{200}},
                  {"http.route", std::string("/a\"b\\c")}};
  point.histogram.Record(0.003);
  point.histogram.Record(0.02);
  point.histogram.Record(20);
  metric.points.push_back(point);
  snapshot.resources.push_back({"billing", {metric}});
  metrics::Metric total{"traces_service_graph_request_total", "Requests.", "{request}", MetricKind::kCounter, {}};
  metrics::Point edge;
  edge.labels = {{"client", std::string("gateway")}, {"connection_type", std::string("")}, {"server", std::string("billing")}};
  edge.value = 7;
  total.points.push_back(edge);
  snapshot.resources.push_back({"", {total}});

  const std::string text = PrometheusText(snapshot);
  const std::string labels =
      "service_name=\"billing\",http_request_method=\"GET\",http_response_status_code=\"200\","
      "http_route=\"/a\\\"b\\\\c\"";
  EXPECT_NE(text.find("# TYPE http_server_request_duration_seconds histogram\n"), std::string::npos) << text;
  EXPECT_NE(text.find("http_server_request_duration_seconds_bucket{" + labels + ",le=\"0.005\"} 1\n"),
            std::string::npos) << text;
  EXPECT_NE(text.find("http_server_request_duration_seconds_bucket{" + labels + ",le=\"0.01\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("http_server_request_duration_seconds_bucket{" + labels + ",le=\"0.025\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("http_server_request_duration_seconds_bucket{" + labels + ",le=\"10\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("http_server_request_duration_seconds_bucket{" + labels + ",le=\"+Inf\"} 3\n"),
            std::string::npos);
  EXPECT_NE(text.find("http_server_request_duration_seconds_sum{" + labels + "} 20.023\n"), std::string::npos);
  EXPECT_NE(text.find("http_server_request_duration_seconds_count{" + labels + "} 3\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE traces_service_graph_request_total counter\n"
                      "traces_service_graph_request_total{client=\"gateway\",connection_type=\"\",server=\"billing\"} 7\n"),
            std::string::npos) << text;
}

TEST(PrometheusTextTest, OneFamilyPerNameAcrossServices) {
  metrics::MetricsSnapshot snapshot;
  for (const char* service : {"a", "b"}) {
    metrics::Metric metric{"http.server.request.duration", "d", "s", MetricKind::kHistogram, {}};
    metric.points.push_back({});
    snapshot.resources.push_back({service, {metric}});
  }
  const std::string text = PrometheusText(snapshot);
  size_t types = 0;
  for (size_t at = text.find("# TYPE"); at != std::string::npos; at = text.find("# TYPE", at + 1)) ++types;
  EXPECT_EQ(types, 1u);
  EXPECT_NE(text.find("_count{service_name=\"a\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("_count{service_name=\"b\"} 0\n"), std::string::npos);
}

}  // namespace
}  // namespace flowtracer::exporters
