#include "agent/metrics/span_metrics.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <cstring>
#include <string>

#include "agent/spans/route.h"

namespace flowtracer::metrics {
namespace {

using spans::Span;
using spans::SpanKind;

void SetAddress(uint8_t out[16], const char* ipv4) {
  std::memset(out, 0, 16);
  out[10] = out[11] = 0xff;
  inet_pton(AF_INET, ipv4, out + 12);
}

struct Endpoint {
  const char* address;
  uint16_t port;
};

// A span of `service` on a connection from `local` to `remote`, lasting `ms`.
Span MakeSpan(SpanKind kind, const std::string& service, Endpoint local, Endpoint remote, int status,
              double ms, const std::string& path = "/users/1") {
  Span span;
  span.kind = kind;
  span.service = service;
  span.start_unix_ns = 1'000'000'000;
  span.end_unix_ns = span.start_unix_ns + static_cast<uint64_t>(ms * 1e6);
  SetAddress(span.tuple.local_addr, local.address);
  SetAddress(span.tuple.remote_addr, remote.address);
  span.tuple.local_port = local.port;
  span.tuple.remote_port = remote.port;
  span.attributes.push_back({"http.request.method", std::string("GET")});
  span.attributes.push_back({"url.path", path});
  span.attributes.push_back({"http.route", spans::TemplatePath(path)});
  span.attributes.push_back({"url.scheme", std::string("http")});  // not a metric attribute
  if (status) span.attributes.push_back({"http.response.status_code", int64_t{status}});
  const bool error = status == 0 || status >= 500 || (kind == SpanKind::kClient && status >= 400);
  if (error) {
    span.status = spans::StatusCode::kError;
    span.attributes.push_back({"error.type", status ? std::to_string(status) : std::string("timeout")});
  }
  if (kind == SpanKind::kClient) {
    span.attributes.push_back({"server.address", std::string(remote.address)});
    span.attributes.push_back({"server.port", int64_t{remote.port}});
  } else {
    span.attributes.push_back({"server.address", std::string(local.address)});
    span.attributes.push_back({"server.port", int64_t{local.port}});
  }
  return span;
}

struct Clock {
  uint64_t now = 5'000'000'000;
};

SpanMetricsOptions OptionsWith(Clock* clock) {
  SpanMetricsOptions options;
  options.now_unix_ns = [clock] { return clock->now; };
  return options;
}

const Metric* FindMetric(const MetricsSnapshot& snapshot, const std::string& service, const std::string& name) {
  for (const ResourceMetrics& resource : snapshot.resources) {
    if (resource.service_name != service) continue;
    for (const Metric& metric : resource.metrics)
      if (metric.name == name) return &metric;
  }
  return nullptr;
}

std::string LabelText(const Labels& labels) {
  std::string text;
  for (const Label& label : labels) {
    text += label.key + "=";
    if (auto s = std::get_if<std::string>(&label.value)) text += *s;
    else if (auto i = std::get_if<int64_t>(&label.value)) text += std::to_string(*i);
    else text += std::get<bool>(label.value) ? "true" : "false";
    text += ";";
  }
  return text;
}

const Point* FindPoint(const Metric* metric, const std::string& label_text) {
  if (!metric) return nullptr;
  for (const Point& point : metric->points)
    if (LabelText(point.labels) == label_text) return &point;
  return nullptr;
}

const Endpoint kGateway{"127.0.0.1", 41000};
const Endpoint kBilling{"127.0.0.1", 8081};

TEST(HistogramDataTest, BucketsAreUpperInclusive) {
  HistogramData histogram;
  histogram.Record(0.005);   // first bucket: (-inf, 0.005]
  histogram.Record(0.0051);  // second
  histogram.Record(11);      // past the last bound
  EXPECT_EQ(histogram.bucket_counts[0], 1u);
  EXPECT_EQ(histogram.bucket_counts[1], 1u);
  EXPECT_EQ(histogram.bucket_counts[kDurationBucketsSeconds.size()], 1u);
  EXPECT_EQ(histogram.count, 3u);
  EXPECT_DOUBLE_EQ(histogram.sum, 11.0101);
  EXPECT_DOUBLE_EQ(histogram.min, 0.005);
  EXPECT_DOUBLE_EQ(histogram.max, 11);
}

TEST(SpanMetricsTest, LabelValuesAreValidUtf8) {
  Clock clock;
  SpanMetrics metrics(OptionsWith(&clock));
  Span span = MakeSpan(SpanKind::kServer, "bill\xffing", kBilling, kGateway, 200, 1);
  for (auto& attribute : span.attributes)
    if (attribute.key == "http.route") attribute.value = std::string("/x\x80y");
  metrics.Add(span);
  const MetricsSnapshot snapshot = metrics.Collect();
  const Metric* metric = FindMetric(snapshot, "bill\xef\xbf\xbding", "http.server.request.duration");
  ASSERT_NE(metric, nullptr);
  EXPECT_EQ(LabelText(metric->points[0].labels),
            "http.request.method=GET;http.response.status_code=200;http.route=/x\xef\xbf\xbdy;");
}

TEST(SpanMetricsTest, ServerSpansGiveServerDurationBySemanticConventionAttributes) {
  Clock clock;
  SpanMetrics metrics(OptionsWith(&clock));
  metrics.Add(MakeSpan(SpanKind::kServer, "billing", kBilling, kGateway, 200, 3, "/users/17"));
  metrics.Add(MakeSpan(SpanKind::kServer, "billing", kBilling, kGateway, 200, 30, "/users/18"));
  metrics.Add(MakeSpan(SpanKind::kServer, "billing", kBilling, kGateway, 503, 300, "/users/19"));
  MetricsSnapshot snapshot = metrics.Collect();
  const Metric* metric = FindMetric(snapshot, "billing", "http.server.request.duration");
  ASSERT_NE(metric, nullptr);
  EXPECT_EQ(metric->unit, "s");
  EXPECT_EQ(metric->kind, MetricKind::kHistogram);
  ASSERT_EQ(metric->points.size(), 2u);
  const Point* ok = FindPoint(metric, "http.request.method=GET;http.response.status_code=200;http.route=/users/{id};");
  ASSERT_NE(ok, nullptr) << LabelText(metric->points[0].labels);
  EXPECT_EQ(ok->histogram.count, 2u);
  EXPECT_NEAR(ok->histogram.sum, 0.033, 1e-9);
  EXPECT_EQ(ok->histogram.bucket_counts[0], 1u);  // 3 ms <= 5 ms
  EXPECT_EQ(ok->histogram.bucket_counts[3], 1u);  // 25 ms < 30 ms <= 50 ms
  const Point* failed = FindPoint(
      metric, "error.type=503;http.request.method=GET;http.response.status_code=503;http.route=/users/{id};");
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(failed->histogram.count, 1u);
  EXPECT_EQ(FindMetric(snapshot, "billing", "http.client.request.duration"), nullptr);
}

TEST(SpanMetricsTest, ClientSpansCarryServerAddressNotRoute) {
  Clock clock;
  SpanMetrics metrics(OptionsWith(&clock));
  metrics.Add(MakeSpan(SpanKind::kClient, "gateway", kGateway, kBilling, 404, 2));
  const MetricsSnapshot snapshot = metrics.Collect();
  const Metric* metric = FindMetric(snapshot, "gateway", "http.client.request.duration");
  ASSERT_NE(metric, nullptr);
  ASSERT_EQ(metric->points.size(), 1u);
  EXPECT_EQ(LabelText(metric->points[0].labels),
            "error.type=404;http.request.method=GET;http.response.status_code=404;"
            "server.address=127.0.0.1;server.port=8081;");
}

TEST(SpanMetricsTest, ProtocolVersionIsKeptOtherAttributesAreNot) {
  Clock clock;
  SpanMetrics metrics(OptionsWith(&clock));
  Span span = MakeSpan(SpanKind::kServer, "billing", kBilling, kGateway, 200, 1, "/users/5");
  span.attributes.push_back({"network.protocol.version", std::string("1.0")});
  span.attributes.push_back({"client.port", int64_t{51234}});
  span.attributes.push_back({"user_agent.original", std::string("curl/8")});
  metrics.Add(span);
  const MetricsSnapshot snapshot = metrics.Collect();
  const Metric* metric = FindMetric(snapshot, "billing", "http.server.request.duration");
  ASSERT_NE(metric, nullptr);
  EXPECT_EQ(LabelText(metric->points[0].labels),
            "http.request.method=GET;http.response.status_code=200;http.route=/users/{id};"
            "network.protocol.version=1.0;");
}

TEST(SpanMetricsTest, UnknownMethodsShareOneValue) {
  Clock clock;
  SpanMetrics metrics(OptionsWith(&clock));
  for (const char* method : {"FOO", "BAR", "GET"}) {
    Span span = MakeSpan(SpanKind::kServer, "billing", kBilling, kGateway, 200, 1);
    span.attributes[0].value = std::string(method);
    metrics.Add(span);
  }
  const MetricsSnapshot snapshot = metrics.Collect();
  const Metric* metric = FindMetric(snapshot, "billing", "http.server.request.duration");
  ASSERT_NE(metric, nullptr);
  ASSERT_EQ(metric->points.size(), 2u);
  const Point* other = FindPoint(metric, "http.request.method=_OTHER;http.response.status_code=200;http.route=/users/{id};");
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->histogram.count, 2u);
}

TEST(SpanMetricsTest, TenThousandIdsInPathsGiveOneSeries) {
  Clock clock;
  SpanMetrics metrics(OptionsWith(&clock));
  for (int i = 0; i < 10000; ++i) {
    char uuid[37];
    snprintf(uuid, sizeof(uuid), "%08x-1234-5678-9abc-%012x", i * 7919, i);
    const std::string path = "/users/" + std::to_string(100000 + i) + "/orders/" + uuid + "/blob/" +
                             "deadbeefcafe" + std::to_string(1000000 + i);
    metrics.Add(MakeSpan(SpanKind::kServer, "billing", kBilling, kGateway, 200, 1, path));
  }
  const MetricsSnapshot snapshot = metrics.Collect();
  const Metric* metric = FindMetric(snapshot, "billing", "http.server.request.duration");
  ASSERT_NE(metric, nullptr);
  ASSERT_EQ(metric->points.size(), 1u);
  EXPECT_EQ(LabelText(metric->points[0].labels),
            "http.request.method=GET;http.response.status_code=200;http.route=/users/{id}/orders/{id}/blob/{id};");
  EXPECT_EQ(metric->points[0].histogram.count, 10000u);
}

TEST(SpanMetricsTest, SeriesPastThePerServiceCapShareAnOverflowSeries) {
  Clock clock;
  SpanMetricsOptions options = OptionsWith(&clock);
  options.max_series_per_service = 50;
  SpanMetrics metrics(options);
  // Words, not ids: templating keeps them, the cap bounds them.
  for (int i = 0; i < 10000; ++i)
    metrics.Add(MakeSpan(SpanKind::kServer, "billing", kBilling, kGateway, 200, 1,
                         "/search/word" + std::string(1, 'a' + i % 26) + std::string(1, 'a' + i / 26 % 26) +
                             std::string(1, 'a' + i / 676 % 26)));
  metrics.Add(MakeSpan(SpanKind::kServer, "other", kBilling, kGateway, 200, 1));  // its own budget
  MetricsSnapshot snapshot = metrics.Collect();
  const Metric* metric = FindMetric(snapshot, "billing", "http.server.request.duration");
  ASSERT_NE(metric, nullptr);
  EXPECT_EQ(metric->points.size(), 51u);
  const Point* overflow = FindPoint(metric, "otel.metric.overflow=true;");
  ASSERT_NE(overflow, nullptr);
  EXPECT_EQ(overflow->histogram.count, 10000u - 50u);
  uint64_t total = 0;
  for (const Point& point : metric->points) total += point.histogram.count;
  EXPECT_EQ(total, 10000u);
  EXPECT_EQ(metrics.stats().series_overflowed, 10000u - 50u);
  ASSERT_NE(FindMetric(snapshot, "other", "http.server.request.duration"), nullptr);
}

TEST(SpanMetricsTest, SeriesPastTheTotalCapShareOverflowSeries) {
  Clock clock;
  SpanMetricsOptions options = OptionsWith(&clock);
  options.max_series_total = 10;
  SpanMetrics metrics(options);
  for (int service = 0; service < 4; ++service)
    for (int status = 200; status < 205; ++status)
      metrics.Add(MakeSpan(SpanKind::kServer, "svc" + std::to_string(service), kBilling, kGateway, status, 1));
  MetricsSnapshot snapshot = metrics.Collect();
  size_t series = 0;
  size_t overflow = 0;
  for (const ResourceMetrics& resource : snapshot.resources) {
    const Metric* metric = FindMetric(snapshot, resource.service_name, "http.server.request.duration");
    if (!metric) continue;
    for (const Point& point : metric->points) {
      ++series;
      overflow += LabelText(point.labels) == "otel.metric.overflow=true;";
    }
  }
  EXPECT_EQ(series - overflow, 10u);
  EXPECT_EQ(overflow, 2u);  // the two services that came last
  EXPECT_EQ(metrics.stats().series_overflowed, 10u);
}

TEST(SpanMetricsTest, ServicesPastTheCapCountUnderOverflow) {
  Clock clock;
  SpanMetricsOptions options = OptionsWith(&clock);
  options.max_services = 3;
  SpanMetrics metrics(options);
  for (int i = 0; i < 10; ++i)
    metrics.Add(MakeSpan(SpanKind::kServer, "svc" + std::to_string(i), kBilling, kGateway, 200, 1));
  MetricsSnapshot snapshot = metrics.Collect();
  size_t red_resources = 0;
  for (const ResourceMetrics& resource : snapshot.resources) red_resources += !resource.service_name.empty();
  EXPECT_EQ(red_resources, 4u);
  const Metric* overflow = FindMetric(snapshot, "{overflow}", "http.server.request.duration");
  ASSERT_NE(overflow, nullptr);
  EXPECT_EQ(overflow->points[0].histogram.count, 7u);
}

Labels EdgeLabels(const std::string& client, const std::string& server, const std::string& type = "") {
  return {{"client", client}, {"connection_type", type}, {"server", server}};
}

const Point* FindEdge(const MetricsSnapshot& snapshot, const std::string& metric, const Labels& labels) {
  const Metric* found = FindMetric(snapshot, "", metric);
  if (!found) return nullptr;
  for (const Point& point : found->points)
    if (point.labels == labels) return &point;
  return nullptr;
}

TEST(SpanMetricsTest, BothEndsOnThisHostMakeOneEdgeWithBothNames) {
  Clock clock;
  SpanMetrics metrics(OptionsWith(&clock));
  // The server's span usually completes first.
  for (int status : {200, 200, 503, 404}) {
    metrics.Add(MakeSpan(SpanKind::kServer, "billing", kBilling, kGateway, status, 2));
    metrics.Add(MakeSpan(SpanKind::kClient, "gateway", kGateway, kBilling, status, 3));
  }
  MetricsSnapshot snapshot = metrics.Collect();
  const Labels labels = EdgeLabels("gateway", "billing");
  const Point* total = FindEdge(snapshot, "traces_service_graph_request_total", labels);
  ASSERT_NE(total, nullptr);
  EXPECT_EQ(total->value, 4);
  const Point* failed = FindEdge(snapshot, "traces_service_graph_request_failed_total", labels);
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(failed->value, 1);  // the 5xx; a 404 is the client's mistake
  const Point* server = FindEdge(snapshot, "traces_service_graph_request_server_seconds", labels);
  const Point* client = FindEdge(snapshot, "traces_service_graph_request_client_seconds", labels);
  ASSERT_NE(server, nullptr);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(server->histogram.count, 4u);
  EXPECT_NEAR(server->histogram.sum, 0.008, 1e-9);
  EXPECT_NEAR(client->histogram.sum, 0.012, 1e-9);
  EXPECT_EQ(FindMetric(snapshot, "", "traces_service_graph_request_total")->points.size(), 1u);
  EXPECT_EQ(metrics.stats().graph_pairs, 4u);
  EXPECT_EQ(metrics.stats().graph_unpaired, 0u);
}

TEST(SpanMetricsTest, ARemotePeerIsNamedByConfigurationElseByAddress) {
  Clock clock;
  SpanMetricsOptions options = OptionsWith(&clock);
  options.peer_names = {{"10.0.0.9:5432", "orders-db"}};
  SpanMetrics metrics(options);
  metrics.Add(MakeSpan(SpanKind::kServer, "billing", kBilling, {"10.0.0.7", 51234}, 200, 1));
  metrics.Add(MakeSpan(SpanKind::kServer, "billing", kBilling, {"10.0.0.7", 51235}, 500, 1));
  metrics.Add(MakeSpan(SpanKind::kClient, "billing", {"10.0.0.1", 40000}, {"10.0.0.9", 5432}, 200, 1));
  metrics.Add(MakeSpan(SpanKind::kClient, "billing", {"10.0.0.1", 40001}, {"10.0.0.8", 80}, 0, 1));
  // Nothing is counted until the other end has had time to show up.
  EXPECT_EQ(FindMetric(metrics.Collect(), "", "traces_service_graph_request_total"), nullptr);
  clock.now += options.pairing_wait_ns;
  metrics.Tick();
  MetricsSnapshot snapshot = metrics.Collect();
  const Point* inbound = FindEdge(snapshot, "traces_service_graph_request_total", EdgeLabels("10.0.0.7", "billing"));
  ASSERT_NE(inbound, nullptr);
  EXPECT_EQ(inbound->value, 2);  // one node for the client host, whatever its ports
  EXPECT_EQ(FindEdge(snapshot, "traces_service_graph_request_failed_total", EdgeLabels("10.0.0.7", "billing"))->value, 1);
  EXPECT_EQ(FindEdge(snapshot, "traces_service_graph_request_server_seconds", EdgeLabels("10.0.0.7", "billing"))
                ->histogram.count, 2u);
  EXPECT_EQ(FindEdge(snapshot, "traces_service_graph_request_client_seconds", EdgeLabels("10.0.0.7", "billing")),
            nullptr);
  const Point* db = FindEdge(snapshot, "traces_service_graph_request_total", EdgeLabels("billing", "orders-db"));
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->value, 1);
  const Point* unnamed = FindEdge(snapshot, "traces_service_graph_request_failed_total",
                                  EdgeLabels("billing", "10.0.0.8:80"));
  ASSERT_NE(unnamed, nullptr);
  EXPECT_EQ(unnamed->value, 1);  // no response is a failure
  EXPECT_EQ(metrics.stats().graph_unpaired, 4u);
}

TEST(SpanMetricsTest, FlushCountsEverythingPending) {
  Clock clock;
  SpanMetrics metrics(OptionsWith(&clock));
  metrics.Add(MakeSpan(SpanKind::kClient, "gateway", kGateway, kBilling, 200, 1));
  metrics.FlushPending();
  const MetricsSnapshot snapshot = metrics.Collect();
  const Point* edge = FindEdge(snapshot, "traces_service_graph_request_total",
                               EdgeLabels("gateway", "127.0.0.1:8081"));
  ASSERT_NE(edge, nullptr);
  EXPECT_EQ(edge->value, 1);
}

TEST(SpanMetricsTest, MessagingEndsPairBySpanIdThroughTheBroker) {
  Clock clock;
  SpanMetrics metrics(OptionsWith(&clock));
  Span producer = MakeSpan(SpanKind::kProducer, "orders", {"127.0.0.1", 40000}, {"127.0.0.1", 4222}, 0, 1);
  producer.attributes = {{"messaging.system", std::string("nats")},
                         {"messaging.operation.name", std::string("publish")},
                         {"messaging.destination.name", std::string("orders.created")}};
  producer.status = spans::StatusCode::kUnset;
  producer.span_id = {1, 2, 3, 4, 5, 6, 7, 8};
  Span consumer = producer;
  consumer.kind = SpanKind::kConsumer;
  consumer.service = "shipping";
  consumer.span_id = {9, 9, 9, 9, 9, 9, 9, 9};
  consumer.parent_span_id = producer.span_id;
  consumer.attributes[1].value = std::string("process");
  consumer.tuple.local_port = 40001;
  metrics.Add(producer);
  metrics.Add(consumer);
  MetricsSnapshot snapshot = metrics.Collect();
  const Point* edge = FindEdge(snapshot, "traces_service_graph_request_total",
                               EdgeLabels("orders", "shipping", "messaging_system"));
  ASSERT_NE(edge, nullptr);
  EXPECT_EQ(edge->value, 1);
  const Metric* publish = FindMetric(snapshot, "orders", "messaging.client.operation.duration");
  ASSERT_NE(publish, nullptr);
  EXPECT_EQ(LabelText(publish->points[0].labels),
            "messaging.destination.name=orders.created;messaging.operation.name=publish;messaging.system=nats;");
  ASSERT_NE(FindMetric(snapshot, "shipping", "messaging.process.duration"), nullptr);
}

TEST(SpanMetricsTest, PendingSpansAndEdgesAreBounded) {
  Clock clock;
  SpanMetricsOptions options = OptionsWith(&clock);
  options.max_pending_spans = 100;
  options.max_graph_edges = 10;
  SpanMetrics metrics(options);
  for (int i = 0; i < 1000; ++i) {
    const std::string peer = "10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250);
    metrics.Add(MakeSpan(SpanKind::kServer, "billing", kBilling, {peer.c_str(), 50000}, 200, 1));
  }
  EXPECT_EQ(metrics.stats().pending_evicted, 900u);
  metrics.FlushPending();
  MetricsSnapshot snapshot = metrics.Collect();
  const Metric* total = FindMetric(snapshot, "", "traces_service_graph_request_total");
  ASSERT_NE(total, nullptr);
  EXPECT_EQ(total->points.size(), 11u);
  const Point* overflow = FindEdge(snapshot, "traces_service_graph_request_total", EdgeLabels("{overflow}", "{overflow}"));
  ASSERT_NE(overflow, nullptr);
  EXPECT_EQ(overflow->value, 990);
  EXPECT_EQ(metrics.stats().edges_overflowed, 990u);
}

}  // namespace
}  // namespace flowtracer::metrics
