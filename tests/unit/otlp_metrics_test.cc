#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "agent/metrics/self_metrics.h"
#include "exporters/otlp_metrics/metric_encoder.h"
#include "exporters/otlp_metrics/metrics_exporter.h"

namespace flowtracer::exporters::otlp_metrics {
namespace {

namespace pb = opentelemetry::proto;
using metrics::MetricKind;

metrics::MetricsSnapshot Snapshot(uint64_t time, int64_t requests, std::initializer_list<double> durations) {
  metrics::MetricsSnapshot snapshot;
  snapshot.time_unix_ns = time;
  metrics::Metric histogram{"http.server.request.duration", "d", "s", MetricKind::kHistogram, {}};
  metrics::Point point;
  point.labels = {{"http.request.method", std::string("GET")}, {"http.response.status_code", int64_t{200}}};
  point.start_unix_ns = 100;
  for (double d : durations) point.histogram.Record(d);
  histogram.points.push_back(point);
  snapshot.resources.push_back({"billing", {histogram}});
  metrics::Metric total{"traces_service_graph_request_total", "t", "{request}", MetricKind::kCounter, {}};
  metrics::Point edge;
  edge.labels = {{"client", std::string("gateway")}, {"server", std::string("billing")}};
  edge.start_unix_ns = 100;
  edge.value = requests;
  total.points.push_back(edge);
  metrics::Metric gauge{"flowtracer.export.queue_depth", "q", "{span}", MetricKind::kGauge, {}};
  metrics::Point depth;
  depth.value = 3;
  gauge.points.push_back(depth);
  snapshot.resources.push_back({"", {total, gauge}});
  return snapshot;
}

std::string ResourceAttribute(const pb::metrics::v1::ResourceMetrics& resource, const std::string& key) {
  for (const auto& kv : resource.resource().attributes())
    if (kv.key() == key) return kv.value().string_value();
  return "(missing)";
}

ResourceOptions TestResource() {
  ResourceOptions options;
  options.host_name = "node-1";
  options.version = "0.1.0";
  options.agent_attributes = {{"deployment.environment", "test"}, {"service.name", "ignored"}};
  return options;
}

TEST(MetricsEncoderTest, CumulativeCarriesTotalsResourcesAndBuckets) {
  MetricsEncoder encoder(Temporality::kCumulative, TestResource());
  pb::collector::metrics::v1::ExportMetricsServiceRequest request;
  EXPECT_EQ(encoder.Encode(Snapshot(1000, 5, {0.003, 0.2}), &request), 3u);
  ASSERT_EQ(request.resource_metrics_size(), 2);
  const auto& billing = request.resource_metrics(0);
  EXPECT_EQ(ResourceAttribute(billing, "service.name"), "billing");
  EXPECT_EQ(ResourceAttribute(billing, "host.name"), "node-1");
  EXPECT_EQ(ResourceAttribute(billing, "deployment.environment"), "test");
  EXPECT_EQ(ResourceAttribute(billing, "telemetry.distro.name"), "flowtracer");
  EXPECT_EQ(ResourceAttribute(request.resource_metrics(1), "service.name"), "flowtracer");
  ASSERT_EQ(billing.scope_metrics_size(), 1);
  EXPECT_EQ(billing.scope_metrics(0).scope().name(), "flowtracer");
  const auto& metric = billing.scope_metrics(0).metrics(0);
  EXPECT_EQ(metric.name(), "http.server.request.duration");
  EXPECT_EQ(metric.unit(), "s");
  ASSERT_TRUE(metric.has_histogram());
  EXPECT_EQ(metric.histogram().aggregation_temporality(), pb::metrics::v1::AGGREGATION_TEMPORALITY_CUMULATIVE);
  const auto& point = metric.histogram().data_points(0);
  EXPECT_EQ(point.count(), 2u);
  EXPECT_DOUBLE_EQ(point.sum(), 0.203);
  EXPECT_DOUBLE_EQ(point.min(), 0.003);
  EXPECT_DOUBLE_EQ(point.max(), 0.2);
  ASSERT_EQ(point.explicit_bounds_size(), 14);
  ASSERT_EQ(point.bucket_counts_size(), 15);
  EXPECT_EQ(point.bucket_counts(0), 1u);
  EXPECT_EQ(point.bucket_counts(6), 1u);  // (0.1, 0.25]
  EXPECT_EQ(point.start_time_unix_nano(), 100u);
  EXPECT_EQ(point.time_unix_nano(), 1000u);
  ASSERT_EQ(point.attributes_size(), 2);
  EXPECT_EQ(point.attributes(1).key(), "http.response.status_code");
  EXPECT_EQ(point.attributes(1).value().int_value(), 200);
  const auto& sum = request.resource_metrics(1).scope_metrics(0).metrics(0);
  ASSERT_TRUE(sum.has_sum());
  EXPECT_TRUE(sum.sum().is_monotonic());
  EXPECT_EQ(sum.sum().data_points(0).as_int(), 5);
  ASSERT_TRUE(request.resource_metrics(1).scope_metrics(0).metrics(1).has_gauge());

  // A second export repeats the totals.
  request.Clear();
  encoder.Encode(Snapshot(2000, 8, {0.003, 0.2, 0.3}), &request);
  EXPECT_EQ(request.resource_metrics(1).scope_metrics(0).metrics(0).sum().data_points(0).as_int(), 8);
  EXPECT_EQ(request.resource_metrics(0).scope_metrics(0).metrics(0).histogram().data_points(0).count(), 3u);
}

TEST(MetricsEncoderTest, DeltaSendsWhatChangedSinceTheLastExport) {
  MetricsEncoder encoder(Temporality::kDelta, TestResource());
  pb::collector::metrics::v1::ExportMetricsServiceRequest first, second, third;
  encoder.Encode(Snapshot(1000, 5, {0.003, 0.2}), &first);
  encoder.Encode(Snapshot(2000, 8, {0.003, 0.2, 0.3}), &second);
  const auto& histogram = second.resource_metrics(0).scope_metrics(0).metrics(0).histogram();
  EXPECT_EQ(histogram.aggregation_temporality(), pb::metrics::v1::AGGREGATION_TEMPORALITY_DELTA);
  const auto& point = histogram.data_points(0);
  EXPECT_EQ(point.count(), 1u);
  EXPECT_NEAR(point.sum(), 0.3, 1e-12);
  EXPECT_EQ(point.bucket_counts(7), 1u);  // (0.25, 0.5]
  EXPECT_EQ(point.bucket_counts(0), 0u);
  EXPECT_FALSE(point.has_min());
  EXPECT_EQ(point.start_time_unix_nano(), 1000u);
  EXPECT_EQ(point.time_unix_nano(), 2000u);
  const auto& sum = second.resource_metrics(1).scope_metrics(0).metrics(0).sum();
  EXPECT_EQ(sum.data_points(0).as_int(), 3);
  EXPECT_EQ(sum.data_points(0).start_time_unix_nano(), 1000u);
  // Nothing new: only the gauge remains.
  EXPECT_EQ(encoder.Encode(Snapshot(3000, 8, {0.003, 0.2, 0.3}), &third), 1u);
}

TEST(SelfMetricsTest, ReasonsShareOneMetricAndPipelineCountersAreIncluded) {
  telemetry::SelfTelemetry telemetry;
  telemetry.events_lost_ring_buffer_full = 4;
  telemetry.queue_depth_spans = 2;
  metrics::MetricsPipelineCounters pipeline;
  pipeline.span_metrics.series_overflowed = 7;
  metrics::ResourceMetrics self = metrics::SelfMetrics(telemetry.Snapshot(), pipeline, 50);
  const metrics::Metric* lost = nullptr;
  const metrics::Metric* folded = nullptr;
  const metrics::Metric* depth = nullptr;
  for (const auto& metric : self.metrics) {
    if (metric.name == "flowtracer.events.lost") lost = &metric;
    if (metric.name == "flowtracer.metrics.folded") folded = &metric;
    if (metric.name == "flowtracer.export.queue_depth") depth = &metric;
  }
  ASSERT_NE(lost, nullptr);
  EXPECT_EQ(lost->kind, MetricKind::kCounter);
  EXPECT_EQ(lost->points.size(), 6u);
  EXPECT_EQ(std::get<std::string>(lost->points[0].labels[0].value), "ring_buffer_full");
  EXPECT_EQ(lost->points[0].value, 4);
  ASSERT_NE(folded, nullptr);
  EXPECT_EQ(folded->points[0].value, 7);
  ASSERT_NE(depth, nullptr);
  EXPECT_EQ(depth->kind, MetricKind::kGauge);
  EXPECT_EQ(depth->points[0].value, 2);
}

class FakeTransport : public otlp::Transport {
 public:
  explicit FakeTransport(std::atomic<int>* sends, std::vector<std::string>* requests, std::mutex* mutex)
      : sends_(sends), requests_(requests), mutex_(mutex) {}
  otlp::SendResult Send(otlp::RequestPieces request, uint64_t) override {
    std::lock_guard lock(*mutex_);
    requests_->push_back(otlp::Join(request));
    ++*sends_;
    return {otlp::SendResult::Outcome::kSuccess, "", {}, ""};
  }
  std::string Describe() const override { return "fake"; }

 private:
  std::atomic<int>* sends_;
  std::vector<std::string>* requests_;
  std::mutex* mutex_;
};

TEST(OtlpMetricsExporterTest, ExportsOnTheIntervalAndOnceMoreAtShutdown) {
  std::atomic<int> sends{0};
  std::vector<std::string> requests;
  std::mutex mutex;
  std::atomic<int64_t> counter{0};
  otlp::OtlpExporterOptions options;
  OtlpMetricsExporter exporter(options, std::make_unique<FakeTransport>(&sends, &requests, &mutex),
                               Temporality::kCumulative, 50, TestResource(),
                               [&] { return Snapshot(1000, counter.load(), {0.01}); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (sends < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GE(sends.load(), 3);
  counter = 42;
  exporter.Shutdown(1000);
  const int after_shutdown = sends.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_EQ(sends.load(), after_shutdown);  // stopped
  pb::collector::metrics::v1::ExportMetricsServiceRequest last;
  {
    std::lock_guard lock(mutex);
    ASSERT_TRUE(last.ParseFromString(requests.back()));
  }
  EXPECT_EQ(last.resource_metrics(1).scope_metrics(0).metrics(0).sum().data_points(0).as_int(), 42);
  EXPECT_EQ(exporter.stats().exports, static_cast<uint64_t>(after_shutdown));
  EXPECT_EQ(exporter.stats().export_failures, 0u);
  EXPECT_EQ(exporter.stats().points_exported, 3u * after_shutdown);
}

}  // namespace
}  // namespace flowtracer::exporters::otlp_metrics
