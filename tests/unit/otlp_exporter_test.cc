// OTLP options, encoding, batching, retries and the HTTP transport, against a fake
// transport or a loopback HTTP server (no root needed).
#include <gtest/gtest.h>

#include <opentelemetry/proto/collector/trace/v1/trace_service.pb.h>
#include <httplib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <thread>

#include "agent/sched/idle_priority.h"
#include "agent/spans/ids.h"
#include "exporters/otlp/otlp_options.h"
#include "exporters/otlp/retrying_sender.h"
#include "exporters/otlp/span_encoder.h"
#include "exporters/otlp/span_exporter.h"

namespace flowtracer::exporters::otlp {
namespace {

using opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest;
using opentelemetry::proto::collector::trace::v1::ExportTraceServiceResponse;
using Clock = std::chrono::steady_clock;

EnvLookup FakeEnv(std::map<std::string, std::string> values) {
  return [values](const std::string& name) -> std::optional<std::string> {
    auto it = values.find(name);
    if (it == values.end()) return std::nullopt;
    return it->second;
  };
}

spans::Span MakeSpan(uint8_t tag, bool root = false) {
  spans::Span span;
  span.trace_id.fill(0x11);
  span.span_id.fill(tag);
  if (!root) span.parent_span_id.fill(0x22);
  span.kind = spans::SpanKind::kClient;
  span.name = "GET /users/{id}";
  span.service = "gateway";
  span.pid = 4242;
  span.start_unix_ns = 1700000000000000000ull;
  span.end_unix_ns = 1700000000002500000ull;
  span.status = spans::StatusCode::kError;
  span.attributes = {{"http.request.method", std::string("GET")},
                     {"http.response.status_code", int64_t{503}},
                     {"flowtracer.role_inferred", true},
                     {"some.ratio", 0.5}};
  return span;
}

ResourcePtr MakeResource(uint32_t pid, const std::string& service) {
  process::ProcessInfo info;
  info.pid = pid;
  info.service_name = service;
  info.executable_name = "python3";
  info.executable_path = "/usr/bin/python3";
  info.command_args = {"python3", "/srv/app.py", "--port", "8080"};
  return std::make_shared<Resource>(ProcessResource(info, "node-1", 777, {{"deployment.environment", "test"},
                                                                           {"service.name", "ignored"}}));
}

// Encodes the spans the way the exporter does, and decodes the request with the generated
// classes.
ExportTraceServiceRequest Encode(const std::vector<std::pair<spans::Span, ResourcePtr>>& batch,
                                 TraceRequestEncoder* encoder = nullptr) {
  TraceRequestEncoder local;
  if (!encoder) encoder = &local;
  std::vector<WireBuffer> messages(batch.size());  // alive until Finish
  for (size_t i = 0; i < batch.size(); ++i) {
    EncodeSpan(batch[i].first, &messages[i]);
    encoder->Add(batch[i].second.get(), messages[i].view());
  }
  const std::string bytes = Join(encoder->Finish());
  ExportTraceServiceRequest request;
  EXPECT_TRUE(request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
  return request;
}

std::map<std::string, std::string> StringAttributes(const google::protobuf::RepeatedPtrField<
                                                    opentelemetry::proto::common::v1::KeyValue>& attributes) {
  std::map<std::string, std::string> out;
  for (const auto& kv : attributes) {
    const auto& v = kv.value();
    if (v.has_string_value()) out[kv.key()] = v.string_value();
    else if (v.has_int_value()) out[kv.key()] = "int:" + std::to_string(v.int_value());
    else if (v.has_bool_value()) out[kv.key()] = v.bool_value() ? "bool:true" : "bool:false";
    else if (v.has_double_value()) out[kv.key()] = "double:" + std::to_string(v.double_value());
    else if (v.has_array_value()) {
      std::string joined;
      for (const auto& item : v.array_value().values()) joined += "[" + item.string_value() + "]";
      out[kv.key()] = joined;
    }
  }
  return out;
}

// ---- Options.

TEST(OtlpOptionsTest, DefaultsAreLocalHttp) {
  OtlpExporterOptions options;
  EXPECT_EQ(ApplyOtelEnvironment(FakeEnv({}), &options), "");
  EXPECT_EQ(ResolveEndpoint(options, Signal::kTraces), "http://localhost:4318/v1/traces");
  EXPECT_EQ(ResolveEndpoint(options, Signal::kMetrics), "http://localhost:4318/v1/metrics");
  options.protocol = Protocol::kGrpc;
  EXPECT_EQ(ResolveEndpoint(options, Signal::kTraces), "http://localhost:4317");
}

TEST(OtlpOptionsTest, StandardVariables) {
  OtlpExporterOptions options;
  std::string error = ApplyOtelEnvironment(
      FakeEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"},
               {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://metrics.example:443/custom"},
               {"OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret%20value, x-tenant = a"},
               {"OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"},
               {"OTEL_EXPORTER_OTLP_TIMEOUT", "2500"},
               {"OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=prod,deployment.environment=eu%2Cwest"}}),
      &options);
  ASSERT_EQ(error, "");
  EXPECT_EQ(ResolveEndpoint(options, Signal::kTraces), "http://collector:4318/v1/traces");
  EXPECT_EQ(ResolveEndpoint(options, Signal::kMetrics), "https://metrics.example:443/custom");
  ASSERT_EQ(options.headers.size(), 2u);
  EXPECT_EQ(options.headers[0], std::make_pair(std::string("api-key"), std::string("secret value")));
  EXPECT_EQ(options.headers[1], std::make_pair(std::string("x-tenant"), std::string("a")));
  EXPECT_TRUE(options.gzip);
  EXPECT_EQ(options.timeout_ms, 2500u);
  ASSERT_EQ(options.resource_attributes.size(), 2u);
  EXPECT_EQ(options.resource_attributes[1].second, "eu,west");

  OtlpExporterOptions grpc;
  ASSERT_EQ(ApplyOtelEnvironment(FakeEnv({{"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"},
                                          {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://[::1]:4317"}}),
                                 &grpc),
            "");
  EXPECT_EQ(grpc.protocol, Protocol::kGrpc);
  EXPECT_EQ(ResolveEndpoint(grpc, Signal::kTraces), "http://[::1]:4317");
}

TEST(OtlpOptionsTest, SignalSpecificVariablesOverrideTheSharedOnes) {
  OtlpExporterOptions options;
  ASSERT_EQ(ApplyOtelEnvironment(FakeEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"},
                                          {"OTEL_EXPORTER_OTLP_HEADERS", "api-key=shared"},
                                          {"OTEL_EXPORTER_OTLP_TIMEOUT", "3000"},
                                          {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"},
                                          {"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=traces,x-team=a"},
                                          {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1500"},
                                          {"OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip"}}),
                                 &options),
            "");
  TransportOptions traces = TransportOptionsFor(options, Signal::kTraces);
  TransportOptions metrics = TransportOptionsFor(options, Signal::kMetrics);
  EXPECT_EQ(traces.protocol, Protocol::kGrpc);
  EXPECT_EQ(traces.endpoint, "http://collector:4318");  // gRPC: the base endpoint, no /v1 path
  ASSERT_EQ(traces.headers.size(), 2u);
  EXPECT_EQ(traces.headers[0].second, "traces");
  EXPECT_FALSE(traces.gzip);
  EXPECT_EQ(TimeoutMsFor(options, Signal::kTraces), 1500u);

  EXPECT_EQ(metrics.protocol, Protocol::kHttpProtobuf);
  EXPECT_EQ(metrics.endpoint, "http://collector:4318/v1/metrics");
  ASSERT_EQ(metrics.headers.size(), 1u);
  EXPECT_EQ(metrics.headers[0].second, "shared");
  EXPECT_TRUE(metrics.gzip);
  EXPECT_EQ(TimeoutMsFor(options, Signal::kMetrics), 3000u);

  // Unset, a signal follows the shared settings, including the default endpoint of the
  // protocol it ends up with.
  OtlpExporterOptions defaults;
  ASSERT_EQ(ApplyOtelEnvironment(FakeEnv({{"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"}}), &defaults), "");
  EXPECT_EQ(ResolveEndpoint(defaults, Signal::kTraces), "http://localhost:4318/v1/traces");
  EXPECT_EQ(ResolveEndpoint(defaults, Signal::kMetrics), "http://localhost:4317");
}

TEST(OtlpOptionsTest, BadValuesNameTheVariable) {
  std::vector<std::pair<std::string, std::string>> cases = {
      {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"},
      {"OTEL_EXPORTER_OTLP_METRICS_HEADERS", "novalue"},
      {"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "br"},
      {"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "0"},
      {"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"},
      {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:99999"},
      {"OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"},
      {"OTEL_EXPORTER_OTLP_TIMEOUT", "10s"},
      {"OTEL_EXPORTER_OTLP_HEADERS", "novalue"},
      {"OTEL_RESOURCE_ATTRIBUTES", "a=%zz"},
  };
  for (const auto& [name, value] : cases) {
    OtlpExporterOptions options;
    std::string error = ApplyOtelEnvironment(FakeEnv({{name, value}}), &options);
    EXPECT_NE(error.find(name), std::string::npos) << name << "=" << value << ": " << error;
  }
}

TEST(OtlpOptionsTest, EndpointUrls) {
  struct Parts {
    const char* url;
    bool tls;
    const char* host;
    int port;
    const char* target;
    const char* authority;
  };
  for (const Parts& want : std::initializer_list<Parts>{
           {"http://localhost:4318", false, "localhost", 4318, "/", "localhost:4318"},
           {"https://otel.example.com", true, "otel.example.com", 443, "/", "otel.example.com:443"},
           {"http://otel.example.com/v1/traces", false, "otel.example.com", 80, "/v1/traces", "otel.example.com:80"},
           {"http://10.0.0.1:4317/", false, "10.0.0.1", 4317, "/", "10.0.0.1:4317"},
           {"http://[fe80::1]:4318/v1/traces", false, "fe80::1", 4318, "/v1/traces", "[fe80::1]:4318"},
           {"https://[::1]/otlp/v1/metrics", true, "::1", 443, "/otlp/v1/metrics", "[::1]:443"},
           {"http://collector.observability.svc:4318", false, "collector.observability.svc", 4318, "/",
            "collector.observability.svc:4318"},
           {"http://collector:4318?tenant=a#top", false, "collector", 4318, "/?tenant=a", "collector:4318"},
           {"http://collector:4318/v1/traces?tenant=a", false, "collector", 4318, "/v1/traces?tenant=a",
            "collector:4318"},
       }) {
    std::string reason;
    std::optional<EndpointUrl> url = ParseEndpointUrl(want.url, &reason);
    ASSERT_TRUE(url) << want.url << ": " << reason;
    EXPECT_EQ(url->tls, want.tls) << want.url;
    EXPECT_EQ(url->host, want.host) << want.url;
    EXPECT_EQ(url->port, want.port) << want.url;
    EXPECT_EQ(url->target, want.target) << want.url;
    EXPECT_EQ(url->Authority(), want.authority) << want.url;
  }
  for (const char* bad : {"", "localhost:4318", "http://", "http://:4318", "http://host:0", "http://host:port",
                          "http://host:", "http://host:65536", "grpc://host:4317", "http://ho st:1",
                          "http://[::1]x4318", "http://[::1", "http://[localhost]:4318", "http://fe80::1:4318",
                          "http://user@collector:4318"}) {
    std::string reason;
    EXPECT_FALSE(ParseEndpointUrl(bad, &reason)) << bad;
    EXPECT_NE(reason.find(bad), std::string::npos) << bad << ": the reason names the URL: " << reason;
  }
}

TEST(OtlpOptionsTest, CertificateVariablesAndTheStartCheck) {  // and the client's, for mutual TLS
  OtlpExporterOptions options;
  ASSERT_EQ(ApplyOtelEnvironment(FakeEnv({{"OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/otel/ca.pem"},
                                          {"OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "/etc/otel/metrics-ca.pem"}}),
                                 &options),
            "");
  EXPECT_EQ(TransportOptionsFor(options, Signal::kTraces).ca_file, "/etc/otel/ca.pem");
  EXPECT_EQ(TransportOptionsFor(options, Signal::kMetrics).ca_file, "/etc/otel/metrics-ca.pem");
  EXPECT_EQ(TransportOptionsFor(OtlpExporterOptions(), Signal::kTraces).ca_file, "") << "unset: the system's";
  EXPECT_NE(ApplyOtelEnvironment(FakeEnv({{"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", ""}}), &options)
                .find("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"),
            std::string::npos);

  // Checked at start: a missing file and one that is not PEM are named; a PEM file passes.
  const std::string error = CertificateError(options);
  EXPECT_NE(error.find("traces certificate '/etc/otel/ca.pem' cannot be read"), std::string::npos) << error;
  char dir[] = "/tmp/flowtracer-ca.XXXXXX";
  ASSERT_TRUE(mkdtemp(dir));
  const std::string pem = std::string(dir) + "/ca.pem", der = std::string(dir) + "/ca.der";
  std::ofstream(pem) << "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  std::ofstream(der) << std::string("\x30\x82\x01\x0a", 4);
  OtlpExporterOptions files;
  files.certificate = pem;
  EXPECT_EQ(CertificateError(files), "");
  files.metrics.certificate = der;
  EXPECT_NE(CertificateError(files).find("metrics certificate '" + der + "' is not a PEM file"), std::string::npos)
      << CertificateError(files);
  files.metrics.certificate.reset();
  files.client_certificate = pem;  // without its key
  EXPECT_NE(CertificateError(files).find("client certificate and client key: set both or neither"), std::string::npos)
      << CertificateError(files);
  files.client_key = pem;
  EXPECT_EQ(CertificateError(files), "");

  OtlpExporterOptions client;
  ASSERT_EQ(ApplyOtelEnvironment(FakeEnv({{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/otel/agent.pem"},
                                          {"OTEL_EXPORTER_OTLP_CLIENT_KEY", "/etc/otel/agent-key.pem"},
                                          {"OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "/etc/otel/metrics-key.pem"}}),
                                 &client),
            "");
  EXPECT_EQ(TransportOptionsFor(client, Signal::kTraces).client_certificate_file, "/etc/otel/agent.pem");
  EXPECT_EQ(TransportOptionsFor(client, Signal::kTraces).client_key_file, "/etc/otel/agent-key.pem");
  EXPECT_EQ(TransportOptionsFor(client, Signal::kMetrics).client_key_file, "/etc/otel/metrics-key.pem");
  std::filesystem::remove_all(dir);
}

TEST(OtlpOptionsTest, ProxyVariablesAsLibcurlReadsThem) {
  OtlpExporterOptions options;
  ASSERT_EQ(ApplyOtelEnvironment(FakeEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4318"},
                                          {"https_proxy", "http://user:p%40ss@proxy.corp:3128/"},
                                          {"HTTPS_PROXY", "http://ignored:1"},
                                          {"HTTP_PROXY", "http://never-read:1"},
                                          {"ALL_PROXY", "[fd00::5]"},
                                          {"NO_PROXY", " .internal, 10.0.0.0/8 ,[::1],metrics.example,fd00:0::7"}}),
                                 &options),
            "");
  EXPECT_EQ(ProxyError(options), "");
  TransportOptions traces = TransportOptionsFor(options, Signal::kTraces);
  ASSERT_TRUE(traces.proxy.has_value());
  EXPECT_EQ(traces.proxy->host, "proxy.corp");
  EXPECT_EQ(traces.proxy->port, 3128);
  EXPECT_EQ(traces.proxy->user, "user");
  EXPECT_EQ(traces.proxy->password, "p@ss");
  EXPECT_EQ(traces.proxy->variable, "https_proxy");

  // http endpoints: http_proxy only (HTTP_PROXY is not read), else all_proxy (port 1080).
  auto proxy_of = [&](const std::string& endpoint) { return ProxyFor(options.proxy, endpoint); };
  auto http = proxy_of("http://collector:4318/v1/traces");
  ASSERT_TRUE(http.has_value());
  EXPECT_EQ(http->name, "ALL_PROXY");
  HttpProxy parsed;
  std::string reason;
  ASSERT_TRUE(ParseProxyUrl(http->url, &parsed, &reason)) << reason;
  EXPECT_EQ(parsed.host, "fd00::5");
  EXPECT_EQ(parsed.port, 1080);
  // NO_PROXY: domains with or without a leading dot, CIDRs, addresses in any spelling, names.
  for (const char* exempt : {"http://a.internal:4318", "http://internal/", "https://10.1.2.3:4318", "http://[::1]:4318",
                             "https://METRICS.example/v1/metrics", "http://x.metrics.example", "http://[fd00::7]:4318"})
    EXPECT_FALSE(proxy_of(exempt).has_value()) << exempt;
  for (const char* proxied : {"http://notinternal:4318", "http://11.0.0.1", "http://[::2]:4318", "http://example"})
    EXPECT_TRUE(proxy_of(proxied).has_value()) << proxied;

  // gRPC reads the variables itself.
  options.protocol = Protocol::kGrpc;
  EXPECT_FALSE(TransportOptionsFor(options, Signal::kTraces).proxy.has_value());

  EXPECT_TRUE(NoProxyCovers("*", "anything"));
  EXPECT_TRUE(NoProxyCovers("192.168.0.0/16", "192.168.7.1"));
  EXPECT_FALSE(NoProxyCovers("192.168.0.0/16", "192.169.0.1"));
  EXPECT_TRUE(NoProxyCovers("10.0.0.0/9", "10.127.255.255"));
  EXPECT_FALSE(NoProxyCovers("10.0.0.0/9", "10.128.0.0"));
  EXPECT_TRUE(NoProxyCovers("fd00::/8", "fd12::1"));
  EXPECT_FALSE(NoProxyCovers("10.0.0.0/33, fd00::/200, 10.0.0.0/x", "10.0.0.1"));
  EXPECT_FALSE(NoProxyCovers("", "host"));

  // The lowercase name wins.
  OtlpExporterOptions lower;
  ASSERT_EQ(ApplyOtelEnvironment(FakeEnv({{"no_proxy", "*"}, {"NO_PROXY", "x"}, {"http_proxy", "proxy:8080"}}), &lower), "");
  EXPECT_EQ(lower.proxy.no_proxy, "*");
  EXPECT_EQ(lower.proxy.http->url, "proxy:8080");
}

TEST(OtlpOptionsTest, OnlyAProxyInUseIsCheckedAndItsVariableNamed) {
  const std::string https_endpoint = "https://collector:4318";
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"https_proxy", "https://proxy:443"}, {"HTTPS_PROXY", "socks5://proxy:1080"}, {"all_proxy", "proxy:99999"},
           {"https_proxy", "http://:3128"}, {"ALL_PROXY", "http://u:%zz@proxy"}, {"https_proxy", "[::1"},
           {"https_proxy", "http://user@proxy:3128"}}) {
    OtlpExporterOptions options;
    ASSERT_EQ(ApplyOtelEnvironment(FakeEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", https_endpoint}, {name, value}}), &options), "");
    std::string error = ProxyError(options);
    EXPECT_EQ(error.rfind(name + ": ", 0), 0u) << name << "=" << value << ": " << error;
    EXPECT_FALSE(TransportOptionsFor(options, Signal::kTraces).proxy.has_value());
  }
  // Not used, not checked: another scheme's variable, gRPC, or an exempt host.
  auto error_with = [](std::map<std::string, std::string> env) {
    OtlpExporterOptions options;
    EXPECT_EQ(ApplyOtelEnvironment(FakeEnv(env), &options), "");
    return ProxyError(options);
  };
  EXPECT_EQ(error_with({{"https_proxy", "socks5://proxy:1080"}}), "");  // the default endpoint is http://
  EXPECT_EQ(error_with({{"all_proxy", "socks5://proxy:1080"}, {"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"}}), "");
  EXPECT_EQ(error_with({{"all_proxy", "socks5://proxy:1080"}, {"no_proxy", "localhost"}}), "");
  EXPECT_NE(error_with({{"all_proxy", "socks5://proxy:1080"}}), "");
}

// ---- Encoding.

TEST(OtlpEncoderTest, OneResourcePerProcessWithSpanFields) {
  ResourcePtr gateway = MakeResource(4242, "gateway");
  ResourcePtr billing = MakeResource(5151, "billing");
  ExportTraceServiceRequest request = Encode({{MakeSpan(1), gateway}, {MakeSpan(2, true), billing}, {MakeSpan(3), gateway}});
  ASSERT_EQ(request.resource_spans_size(), 2);

  const auto& first = request.resource_spans(0);
  auto resource = StringAttributes(first.resource().attributes());
  EXPECT_EQ(resource["service.name"], "gateway");
  EXPECT_EQ(resource["service.instance.id"], "node-1/4242/777");
  EXPECT_EQ(resource["process.pid"], "int:4242");
  EXPECT_EQ(resource["process.executable.name"], "python3");
  EXPECT_EQ(resource["process.command_args"], "[python3][/srv/app.py][--port][8080]");
  EXPECT_EQ(resource["host.name"], "node-1");
  EXPECT_EQ(resource["telemetry.distro.name"], "flowtracer");
  EXPECT_EQ(resource["deployment.environment"], "test");  // agent-wide attribute added
  ASSERT_EQ(first.scope_spans_size(), 1);
  EXPECT_EQ(first.scope_spans(0).scope().name(), "flowtracer");
  ASSERT_EQ(first.scope_spans(0).spans_size(), 2);

  const auto& span = first.scope_spans(0).spans(0);
  EXPECT_EQ(span.trace_id(), std::string(16, '\x11'));
  EXPECT_EQ(span.span_id(), std::string(8, '\x01'));
  EXPECT_EQ(span.parent_span_id(), std::string(8, '\x22'));
  EXPECT_EQ(span.kind(), opentelemetry::proto::trace::v1::Span::SPAN_KIND_CLIENT);
  EXPECT_EQ(span.name(), "GET /users/{id}");
  EXPECT_EQ(span.start_time_unix_nano(), 1700000000000000000ull);
  EXPECT_EQ(span.end_time_unix_nano(), 1700000000002500000ull);
  EXPECT_EQ(span.status().code(), opentelemetry::proto::trace::v1::Status::STATUS_CODE_ERROR);
  auto attributes = StringAttributes(span.attributes());
  EXPECT_EQ(attributes["http.request.method"], "GET");
  EXPECT_EQ(attributes["http.response.status_code"], "int:503");
  EXPECT_EQ(attributes["flowtracer.role_inferred"], "bool:true");
  EXPECT_EQ(attributes["some.ratio"], "double:0.500000");

  const auto& root = request.resource_spans(1).scope_spans(0).spans(0);
  EXPECT_TRUE(root.parent_span_id().empty());
  EXPECT_EQ(StringAttributes(request.resource_spans(1).resource().attributes())["service.name"], "billing");
}

TEST(OtlpEncoderTest, StringsAreValidUtf8AndTraceStateIsKept) {
  spans::Span span = MakeSpan(1);
  span.name = "GET /caf\xc3\xa9/\xff";
  span.trace_state = "vendor=abc";
  span.attributes.push_back({"url.path", std::string("/caf\xc3\xa9/\xff\xfe")});
  ExportTraceServiceRequest request = Encode({{span, MakeResource(4242, "gateway")}});
  const auto& out = request.resource_spans(0).scope_spans(0).spans(0);
  EXPECT_EQ(out.name(), "GET /caf\xc3\xa9/\xef\xbf\xbd");
  EXPECT_EQ(out.trace_state(), "vendor=abc");
  EXPECT_EQ(StringAttributes(out.attributes())["url.path"], "/caf\xc3\xa9/\xef\xbf\xbd\xef\xbf\xbd");
}

TEST(OtlpEncoderTest, EdgeValuesAndEncoderReuse) {
  spans::Span span = MakeSpan(1);
  span.attributes = {{"negative", int64_t{-5}},
                     {"zero", int64_t{0}},
                     {"max", std::numeric_limits<int64_t>::max()},
                     {"false", false},
                     {"empty", std::string()},
                     {"k\xff", std::string("v")},
                     {"long", std::string(300, 'x')}};  // a length needing a 2-byte varint
  span.status = spans::StatusCode::kUnset;
  span.start_unix_ns = 0;
  span.kind = spans::SpanKind::kConsumer;
  TraceRequestEncoder encoder;
  ExportTraceServiceRequest first = Encode({{span, MakeResource(1, "a")}, {MakeSpan(2), nullptr}}, &encoder);
  ASSERT_EQ(first.resource_spans_size(), 2);
  const auto& out = first.resource_spans(0).scope_spans(0).spans(0);
  ASSERT_EQ(out.attributes_size(), 7);
  EXPECT_EQ(out.attributes(0).value().int_value(), -5);
  EXPECT_TRUE(out.attributes(1).value().has_int_value());
  EXPECT_EQ(out.attributes(1).value().int_value(), 0);
  EXPECT_EQ(out.attributes(2).value().int_value(), std::numeric_limits<int64_t>::max());
  EXPECT_TRUE(out.attributes(3).value().has_bool_value());
  EXPECT_FALSE(out.attributes(3).value().bool_value());
  EXPECT_TRUE(out.attributes(4).value().has_string_value());
  EXPECT_EQ(out.attributes(5).key(), "k\xef\xbf\xbd");
  EXPECT_EQ(out.attributes(6).value().string_value(), std::string(300, 'x'));
  EXPECT_FALSE(out.has_status());
  EXPECT_EQ(out.start_time_unix_nano(), 0u);
  EXPECT_EQ(out.kind(), opentelemetry::proto::trace::v1::Span::SPAN_KIND_CONSUMER);
  EXPECT_FALSE(first.resource_spans(1).has_resource());  // no resource given
  EXPECT_EQ(first.resource_spans(1).scope_spans(0).scope().name(), "flowtracer");
  EXPECT_FALSE(first.resource_spans(1).scope_spans(0).scope().version().empty());

  // The next request starts empty: nothing of the first one is left in the encoder.
  ExportTraceServiceRequest second = Encode({{MakeSpan(3), MakeResource(2, "b")}}, &encoder);
  ASSERT_EQ(second.resource_spans_size(), 1);
  ASSERT_EQ(second.resource_spans(0).scope_spans(0).spans_size(), 1);
  EXPECT_EQ(second.resource_spans(0).scope_spans(0).spans(0).span_id(), std::string(8, '\x03'));
}

// Spans of valid UTF-8 are written at a size computed beforehand: across the lengths
// where a varint takes another byte, and with more attributes than that path keeps sizes
// for, the bytes are exactly what the generated classes serialize.
TEST(OtlpEncoderTest, ValidSpansMatchTheGeneratedSerialization) {
  namespace trace = opentelemetry::proto::trace::v1;
  for (size_t length : {0, 1, 4, 7, 8, 15, 16, 17, 32, 33, 100, 126, 127, 128, 300, 16400}) {
    for (size_t attribute_count : {0, 3, 64, 65, 70}) {
      spans::Span span = MakeSpan(static_cast<uint8_t>(length));
      span.name = std::string(length + 1, 'n');  // an empty name is written too, unlike protobuf
      span.trace_state = length % 2 ? std::string(length, 's') : "";
      if (length % 3 == 0) span.parent_span_id.fill(0);
      span.status = length % 4 ? spans::StatusCode::kError : spans::StatusCode::kOk;
      span.attributes.clear();
      trace::Span expected;
      expected.set_trace_id(std::string(16, '\x11'));
      expected.set_span_id(std::string(8, static_cast<char>(length)));
      expected.set_trace_state(span.trace_state);
      if (length % 3 != 0) expected.set_parent_span_id(std::string(8, '\x22'));
      expected.set_name(span.name);
      expected.set_kind(trace::Span::SPAN_KIND_CLIENT);
      expected.set_start_time_unix_nano(span.start_unix_ns);
      expected.set_end_time_unix_nano(span.end_unix_ns);
      for (size_t i = 0; i < attribute_count; ++i) {
        const std::string key = "key." + std::string(i % 40, 'k') + "\xc3\xa9";  // valid, not ASCII
        auto* kv = expected.add_attributes();
        kv->set_key(key);
        switch (i % 4) {
          case 0:
            span.attributes.push_back({key, std::string(length + i, 'v')});
            kv->mutable_value()->set_string_value(std::string(length + i, 'v'));
            break;
          case 1: {
            const int64_t value = i % 8 == 1 ? -static_cast<int64_t>(length) : static_cast<int64_t>(length << i % 50);
            span.attributes.push_back({key, value});
            kv->mutable_value()->set_int_value(value);
            break;
          }
          case 2:
            span.attributes.push_back({key, i % 8 == 2});
            kv->mutable_value()->set_bool_value(i % 8 == 2);
            break;
          default:
            span.attributes.push_back({key, length * 0.25});
            kv->mutable_value()->set_double_value(length * 0.25);
        }
      }
      expected.mutable_status()->set_code(length % 4 ? trace::Status::STATUS_CODE_ERROR : trace::Status::STATUS_CODE_OK);
      WireBuffer field;
      EncodeSpan(span, &field);
      // ScopeSpans.spans (field 2) holding the span.
      opentelemetry::proto::trace::v1::ScopeSpans scope_spans;
      *scope_spans.add_spans() = expected;
      EXPECT_EQ(field.view(), scope_spans.SerializeAsString()) << length << " bytes, " << attribute_count << " attributes";
    }
  }
}

TEST(OtlpEncoderTest, WorstCaseUtf8RepairFits) {
  // Every byte invalid: each becomes the 3-byte U+FFFD, the most a string can grow.
  const std::string garbage(1000, '\xff');
  std::string replaced;
  for (int i = 0; i < 1000; ++i) replaced += "\xef\xbf\xbd";
  spans::Span span = MakeSpan(1);
  span.name = garbage;
  span.trace_state = garbage;
  span.attributes = {{garbage, garbage}, {"k", garbage}, {garbage, int64_t{-1}}};
  process::ProcessInfo info;
  info.service_name = garbage;
  info.command_args = {garbage, "x"};
  auto resource = std::make_shared<Resource>(ProcessResource(info, garbage, 1, {{garbage, garbage}}));
  ExportTraceServiceRequest request = Encode({{span, resource}});
  const auto& out = request.resource_spans(0).scope_spans(0).spans(0);
  EXPECT_EQ(out.name(), replaced);
  EXPECT_EQ(out.trace_state(), replaced);
  ASSERT_EQ(out.attributes_size(), 3);
  EXPECT_EQ(out.attributes(0).key(), replaced);
  EXPECT_EQ(out.attributes(0).value().string_value(), replaced);
  EXPECT_EQ(out.attributes(2).value().int_value(), -1);
  auto attributes = StringAttributes(request.resource_spans(0).resource().attributes());
  EXPECT_EQ(attributes["service.name"], replaced);
  EXPECT_EQ(attributes["host.name"], replaced);
  EXPECT_EQ(attributes[replaced], replaced);
  EXPECT_EQ(attributes["process.command_args"], "[" + replaced + "][x]");
}

TEST(OtlpEncoderTest, ProcessStartTicksFromProcStat) {
  EXPECT_GT(ProcessStartTicks(getpid()), 0u);
  EXPECT_EQ(ProcessStartTicks(0, "/nonexistent"), 0u);
}

// ---- Exporter with a fake transport.

class FakeTransport : public Transport {
 public:
  struct Shared {
    std::mutex mutex;
    std::vector<ExportTraceServiceRequest> requests;  // every attempt, decoded
    std::vector<Clock::time_point> times;
    std::deque<SendResult> script;  // results to give, then success
    std::string response;           // on success
    std::atomic<bool> block{false};
    bool starts_no_threads = false;  // StartsNoThreadsWhenSending
    std::atomic<bool> in_send{false};
    std::vector<int> policies;       // the sending thread's, at each attempt
    std::atomic<pid_t> sender_tid{0};
    size_t SpanCount() {
      std::lock_guard lock(mutex);
      size_t n = 0;
      for (const auto& r : requests)
        for (const auto& rs : r.resource_spans())
          for (const auto& ss : rs.scope_spans()) n += ss.spans_size();
      return n;
    }
    size_t Attempts() {
      std::lock_guard lock(mutex);
      return requests.size();
    }
  };
  explicit FakeTransport(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  SendResult Send(RequestPieces pieces, uint64_t timeout_ms) override {
    const std::string request = Join(pieces);
    const int policy = sched_getscheduler(0);
    shared_->sender_tid = gettid();
    shared_->in_send = true;
    auto start = Clock::now();
    while (shared_->block && Clock::now() - start < std::chrono::milliseconds(timeout_ms))
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    shared_->in_send = false;
    std::lock_guard lock(shared_->mutex);
    ExportTraceServiceRequest decoded;
    EXPECT_TRUE(decoded.ParseFromArray(request.data(), static_cast<int>(request.size())));
    shared_->requests.push_back(decoded);
    shared_->times.push_back(Clock::now());
    shared_->policies.push_back(policy);
    if (shared_->block) return {SendResult::Outcome::kRetryable, "timed out", {}, {}};
    if (!shared_->script.empty()) {
      SendResult result = shared_->script.front();
      shared_->script.pop_front();
      return result;
    }
    return {SendResult::Outcome::kSuccess, "", {}, shared_->response};
  }
  std::string Describe() const override { return "fake"; }
  bool StartsNoThreadsWhenSending() const override { return shared_->starts_no_threads; }

 private:
  std::shared_ptr<Shared> shared_;
};

OtlpExporterOptions FastOptions() {
  OtlpExporterOptions options;
  options.max_export_batch_spans = 10;
  options.schedule_delay_ms = 100;
  options.max_queue_spans = 100;
  options.initial_backoff_ms = 20;
  options.max_backoff_ms = 80;
  options.timeout_ms = 1000;
  return options;
}

bool WaitFor(const std::function<bool()>& condition, int timeout_ms = 5000) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

uint64_t Dropped(const telemetry::SelfTelemetry& t) {
  return t.spans_dropped_queue_full + t.spans_dropped_export_failed + t.spans_dropped_rejected +
         t.spans_dropped_shutdown;
}

TEST(OtlpSpanExporterTest, BatchesBySizeThenByTime) {
  auto shared = std::make_shared<FakeTransport::Shared>();
  telemetry::SelfTelemetry telemetry;
  OtlpSpanExporter exporter(FastOptions(), std::make_unique<FakeTransport>(shared), &telemetry);
  ResourcePtr resource = MakeResource(1, "a");
  for (int i = 0; i < 25; ++i) exporter.Export(MakeSpan(static_cast<uint8_t>(i)), resource);
  // Two full batches go at once; the last 5 wait for the schedule delay.
  ASSERT_TRUE(WaitFor([&] { return shared->SpanCount() == 25; }));
  ASSERT_EQ(shared->Attempts(), 3u);
  EXPECT_EQ(shared->requests[0].resource_spans(0).scope_spans(0).spans_size(), 10);
  EXPECT_EQ(shared->requests[2].resource_spans(0).scope_spans(0).spans_size(), 5);
  exporter.Shutdown(1000);
  EXPECT_EQ(telemetry.spans_exported, 25u);
  EXPECT_EQ(Dropped(telemetry), 0u);
  EXPECT_EQ(telemetry.queue_depth_spans, 0u);
}

TEST(OtlpSpanExporterTest, RetriesRetryableErrorsWithBackoff) {
  auto shared = std::make_shared<FakeTransport::Shared>();
  shared->script = {{SendResult::Outcome::kRetryable, "HTTP 503", {}, {}},
                    {SendResult::Outcome::kRetryable, "HTTP 502", {}, {}}};
  telemetry::SelfTelemetry telemetry;
  OtlpSpanExporter exporter(FastOptions(), std::make_unique<FakeTransport>(shared), &telemetry);
  for (int i = 0; i < 10; ++i) exporter.Export(MakeSpan(static_cast<uint8_t>(i)), MakeResource(1, "a"));
  ASSERT_TRUE(exporter.ForceFlush(5000));
  ASSERT_EQ(shared->Attempts(), 3u);
  // Backoff with jitter: [10, 20] ms after the first failure, [20, 40] ms after the second.
  EXPECT_GE(shared->times[1] - shared->times[0], std::chrono::milliseconds(10));
  EXPECT_GE(shared->times[2] - shared->times[1], std::chrono::milliseconds(20));
  EXPECT_EQ(telemetry.spans_exported, 10u);
  EXPECT_EQ(telemetry.export_requests, 3u);
  EXPECT_EQ(telemetry.export_errors, 2u);
}

TEST(OtlpSpanExporterTest, HonoursRetryAfter) {
  auto shared = std::make_shared<FakeTransport::Shared>();
  shared->script = {{SendResult::Outcome::kRetryable, "HTTP 429", 300, {}}};
  telemetry::SelfTelemetry telemetry;
  OtlpSpanExporter exporter(FastOptions(), std::make_unique<FakeTransport>(shared), &telemetry);
  exporter.Export(MakeSpan(1), MakeResource(1, "a"));
  ASSERT_TRUE(exporter.ForceFlush(5000));
  ASSERT_EQ(shared->Attempts(), 2u);
  EXPECT_GE(shared->times[1] - shared->times[0], std::chrono::milliseconds(300));
  EXPECT_EQ(telemetry.spans_exported, 1u);
}

TEST(OtlpSpanExporterTest, PermanentErrorsAndExhaustedRetriesDropAndCount) {
  auto shared = std::make_shared<FakeTransport::Shared>();
  shared->script = {{SendResult::Outcome::kFailed, "HTTP 400", {}, {}}};
  for (int i = 0; i < 5; ++i) shared->script.push_back({SendResult::Outcome::kRetryable, "HTTP 503", {}, {}});
  telemetry::SelfTelemetry telemetry;
  // Batches of exactly 10: a slow run (ThreadSanitizer) must not see the delay send 9 first.
  OtlpExporterOptions options = FastOptions();
  options.schedule_delay_ms = 60000;
  OtlpSpanExporter exporter(options, std::make_unique<FakeTransport>(shared), &telemetry);
  for (int i = 0; i < 10; ++i) exporter.Export(MakeSpan(static_cast<uint8_t>(i)), MakeResource(1, "a"));
  ASSERT_TRUE(exporter.ForceFlush(5000));
  for (int i = 0; i < 10; ++i) exporter.Export(MakeSpan(static_cast<uint8_t>(i)), MakeResource(1, "a"));
  ASSERT_TRUE(exporter.ForceFlush(5000));
  EXPECT_EQ(shared->Attempts(), 1u + 5u);  // no retry of a 400; five attempts of the 503s
  EXPECT_EQ(telemetry.spans_dropped_export_failed, 20u);
  EXPECT_EQ(telemetry.spans_exported, 0u);
  // Recovery: the next batch goes through.
  exporter.Export(MakeSpan(1), MakeResource(1, "a"));
  ASSERT_TRUE(exporter.ForceFlush(5000));
  EXPECT_EQ(telemetry.spans_exported, 1u);
}

TEST(OtlpSpanExporterTest, PartialSuccessCountsRejectedSpans) {
  auto shared = std::make_shared<FakeTransport::Shared>();
  ExportTraceServiceResponse response;
  response.mutable_partial_success()->set_rejected_spans(3);
  response.mutable_partial_success()->set_error_message("too old");
  response.SerializeToString(&shared->response);
  telemetry::SelfTelemetry telemetry;
  OtlpSpanExporter exporter(FastOptions(), std::make_unique<FakeTransport>(shared), &telemetry);
  for (int i = 0; i < 10; ++i) exporter.Export(MakeSpan(static_cast<uint8_t>(i)), MakeResource(1, "a"));
  ASSERT_TRUE(exporter.ForceFlush(5000));
  EXPECT_EQ(telemetry.spans_exported, 7u);
  EXPECT_EQ(telemetry.spans_dropped_rejected, 3u);
}

TEST(OtlpSpanExporterTest, FullQueueDropsOldestAndExportNeverBlocks) {
  auto shared = std::make_shared<FakeTransport::Shared>();
  shared->block = true;  // the receiver hangs until each attempt times out
  telemetry::SelfTelemetry telemetry;
  OtlpExporterOptions options = FastOptions();
  options.timeout_ms = 200;
  options.max_attempts = 1;
  OtlpSpanExporter exporter(options, std::make_unique<FakeTransport>(shared), &telemetry);
  ResourcePtr resource = MakeResource(1, "a");
  auto start = Clock::now();
  for (int i = 0; i < 1000; ++i) exporter.Export(MakeSpan(static_cast<uint8_t>(i)), resource);
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(150)) << "Export waited for the network";
  EXPECT_LE(telemetry.queue_depth_spans, 100u);
  EXPECT_GE(telemetry.spans_dropped_queue_full, 1000u - 100u - 10u);
  shared->block = false;
  ASSERT_TRUE(exporter.ForceFlush(5000));
  exporter.Shutdown(1000);
  // Every span is accounted for, and the newest survived.
  EXPECT_EQ(telemetry.spans_exported + Dropped(telemetry), 1000u);
  EXPECT_GE(telemetry.spans_exported, 100u);
  const auto& last_request = shared->requests.back();
  const auto& spans = last_request.resource_spans(0).scope_spans(0).spans();
  EXPECT_EQ(spans[spans.size() - 1].span_id(), std::string(8, static_cast<char>(999 & 0xff)));
}

TEST(OtlpSpanExporterTest, ConcurrentExportAndSendingAccountForEverySpanOnce) {
  // The capture thread adds while the export thread takes, and a full queue makes the
  // capture thread drop the oldest: every span is sent once or counted, in order. (The fake
  // transport decodes each request, slower than spans come: most are dropped, ~97% here.)
  auto shared = std::make_shared<FakeTransport::Shared>();
  telemetry::SelfTelemetry telemetry;
  OtlpExporterOptions options = FastOptions();
  options.max_queue_spans = 64;
  options.max_export_batch_spans = 16;
  OtlpSpanExporter exporter(options, std::make_unique<FakeTransport>(shared), &telemetry);
  ResourcePtr resource = MakeResource(1, "a");
  constexpr uint64_t kSpans = 100000;
  spans::Span span = MakeSpan(0);
  for (uint64_t i = 1; i <= kSpans; ++i) {
    memcpy(span.span_id.data(), &i, sizeof(i));
    exporter.Export(span, resource);
    if (i % 5000 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // let the queue drain
    if (i % 3000 == 0) exporter.ReleaseIdleSpans();  // while batches come back
  }
  ASSERT_TRUE(exporter.ForceFlush(10000));
  exporter.Shutdown(1000);
  std::vector<uint64_t> sent;
  for (const auto& request : shared->requests)
    for (const auto& out : request.resource_spans(0).scope_spans(0).spans()) {
      uint64_t id = 0;
      memcpy(&id, out.span_id().data(), sizeof(id));
      sent.push_back(id);
    }
  EXPECT_EQ(telemetry.spans_exported, sent.size());
  EXPECT_EQ(telemetry.spans_exported + telemetry.spans_dropped_queue_full, kSpans);
  EXPECT_EQ(Dropped(telemetry), telemetry.spans_dropped_queue_full);
  EXPECT_TRUE(std::is_sorted(sent.begin(), sent.end()) && std::adjacent_find(sent.begin(), sent.end()) == sent.end())
      << "spans sent out of order or twice";
  ASSERT_FALSE(sent.empty());
  EXPECT_EQ(sent.back(), kSpans);  // the newest is never the one dropped
}

TEST(OtlpSpanExporterTest, BuffersOfABurstAreFreedOnceIdleAndSpansStillFlow) {
  auto shared = std::make_shared<FakeTransport::Shared>();
  telemetry::SelfTelemetry telemetry;
  OtlpExporterOptions options = FastOptions();
  options.max_queue_spans = 4096;
  options.max_export_batch_spans = 64;
  options.timeout_ms = 60000;  // a blocked send waits for the test, however slow the machine
  OtlpSpanExporter exporter(options, std::make_unique<FakeTransport>(shared), &telemetry);
  ResourcePtr resource = MakeResource(1, "a");
  auto export_spans = [&](int count) {
    for (int i = 0; i < count; ++i) exporter.Export(MakeSpan(static_cast<uint8_t>(i)), resource);
  };
  // A burst while the receiver is slow: spans queue up, each with its own buffer.
  shared->block = true;
  export_spans(3000);
  EXPECT_EQ(exporter.span_buffers(), 3000u);
  shared->block = false;
  ASSERT_TRUE(exporter.ForceFlush(10000));
  exporter.ReleaseIdleSpans();  // all just came back: kept for one interval
  EXPECT_EQ(exporter.span_buffers(), 3000u);
  // One span takes a batch of buffers for itself (one used, 63 spare).
  export_spans(1);
  ASSERT_TRUE(exporter.ForceFlush(10000));
  exporter.ReleaseIdleSpans();  // those waiting since the last call go; the spare ones stay
  EXPECT_EQ(exporter.span_buffers(), 64u);
  exporter.ReleaseIdleSpans();  // an interval without spans: the rest go too
  EXPECT_EQ(exporter.span_buffers(), 0u);
  // Spans after it get buffers again and are all sent (made while the receiver is slow, so
  // each has its own: none comes back before all are made).
  shared->block = true;
  export_spans(1000);
  EXPECT_EQ(exporter.span_buffers(), 1000u);
  shared->block = false;
  ASSERT_TRUE(exporter.ForceFlush(10000));
  exporter.ReleaseIdleSpans();
  // While the receiver holds a batch, the queue backs up: the buffers waiting since the last
  // call are about to be needed and stay.
  shared->block = true;
  export_spans(200);
  exporter.ReleaseIdleSpans();
  EXPECT_EQ(exporter.span_buffers(), 1000u);
  shared->block = false;
  ASSERT_TRUE(exporter.ForceFlush(10000));
  EXPECT_EQ(telemetry.spans_exported, 4201u);
  EXPECT_EQ(Dropped(telemetry), 0u);
}

TEST(OtlpSpanExporterTest, ShutdownIsBoundedAndCountsWhatIsLeft) {
  auto shared = std::make_shared<FakeTransport::Shared>();
  for (int i = 0; i < 1000; ++i) shared->script.push_back({SendResult::Outcome::kRetryable, "refused", {}, {}});
  telemetry::SelfTelemetry telemetry;
  OtlpExporterOptions options = FastOptions();
  options.initial_backoff_ms = 1000;
  options.max_backoff_ms = 1000;
  OtlpSpanExporter exporter(options, std::make_unique<FakeTransport>(shared), &telemetry);
  for (int i = 0; i < 50; ++i) exporter.Export(MakeSpan(static_cast<uint8_t>(i)), MakeResource(1, "a"));
  auto start = Clock::now();
  exporter.Shutdown(300);
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(1500));
  exporter.Export(MakeSpan(1), MakeResource(1, "a"));  // after shutdown: counted, not queued
  EXPECT_EQ(telemetry.spans_exported, 0u);
  EXPECT_EQ(Dropped(telemetry), 51u);
  EXPECT_GE(telemetry.spans_dropped_shutdown, 1u);
}

// Steps that wait for a thread at SCHED_IDLE to run: long limits, for a busy machine.
constexpr int kIdleThreadWaitMs = 30000;

TEST(OtlpSpanExporterTest, TheExportThreadYieldsUntilHalfTheQueueWaits) {
  std::string why_not;
  if (!sched::CanLowerAndRaise("the test", &why_not)) GTEST_SKIP() << why_not;  // the agent says so too
  auto shared = std::make_shared<FakeTransport::Shared>();
  shared->starts_no_threads = true;
  telemetry::SelfTelemetry telemetry;
  OtlpExporterOptions options = FastOptions();  // batches of 10; raised at 50 queued, lowered at 12
  options.schedule_delay_ms = 600000;            // batches go by size only
  OtlpSpanExporter exporter(options, std::make_unique<FakeTransport>(shared), &telemetry);
  ResourcePtr resource = MakeResource(1, "a");
  uint8_t next = 0;
  auto export_spans = [&](int count) {
    for (int i = 0; i < count; ++i) exporter.Export(MakeSpan(next++), resource);
  };
  auto sender_policy = [&] { return sched_getscheduler(shared->sender_tid); };

  export_spans(10);  // a full batch, sent at idle priority
  ASSERT_TRUE(WaitFor([&] { return shared->SpanCount() == 10; }, kIdleThreadWaitMs));
  {
    std::lock_guard lock(shared->mutex);
    EXPECT_EQ(shared->policies.back(), SCHED_IDLE);
  }
  // The collector stalls; spans pile up behind the batch being sent.
  shared->block = true;
  export_spans(10);
  ASSERT_TRUE(WaitFor([&] { return shared->in_send.load(); }, kIdleThreadWaitMs));
  export_spans(49);
  EXPECT_EQ(sender_policy(), SCHED_IDLE);  // 49 queued: not yet half the queue
  export_spans(1);
  EXPECT_EQ(sender_policy(), SCHED_OTHER);
  // The collector is back: the backlog goes out at normal priority, and once it has the
  // thread yields again.
  shared->block = false;
  ASSERT_TRUE(WaitFor([&] { return shared->SpanCount() == 70; }, kIdleThreadWaitMs));
  EXPECT_TRUE(WaitFor([&] { return sender_policy() == SCHED_IDLE; }, kIdleThreadWaitMs));
  {
    std::lock_guard lock(shared->mutex);
    ASSERT_GE(shared->policies.size(), 3u);
    EXPECT_EQ(shared->policies[2], SCHED_OTHER);  // the first batch sent after the raise
  }
  exporter.Shutdown(5000);
  EXPECT_EQ(Dropped(telemetry), 0u);
}

TEST(OtlpSpanExporterTest, AnExportThreadThatDoesNotComeBackIsRaised) {
  std::string why_not;
  if (!sched::CanLowerAndRaise("the test", &why_not)) GTEST_SKIP() << why_not;
  auto shared = std::make_shared<FakeTransport::Shared>();
  shared->starts_no_threads = true;
  shared->block = true;  // stuck in a send, as a starved thread would be
  telemetry::SelfTelemetry telemetry;
  OtlpExporterOptions options = FastOptions();
  options.schedule_delay_ms = 200;
  options.timeout_ms = 60000;
  OtlpSpanExporter exporter(options, std::make_unique<FakeTransport>(shared), &telemetry);
  ResourcePtr resource = MakeResource(1, "a");
  for (int i = 0; i < 10; ++i) exporter.Export(MakeSpan(static_cast<uint8_t>(i)), resource);
  ASSERT_TRUE(WaitFor([&] { return shared->in_send.load(); }, kIdleThreadWaitMs));
  const auto sending_since = Clock::now();
  exporter.RaiseIfStalled();
  EXPECT_EQ(sched_getscheduler(shared->sender_tid), SCHED_IDLE);
  // A second past the schedule delay: raised by the once-a-second check.
  std::this_thread::sleep_until(sending_since + std::chrono::milliseconds(options.schedule_delay_ms + 1300));
  exporter.RaiseIfStalled();
  EXPECT_EQ(sched_getscheduler(shared->sender_tid), SCHED_OTHER);
  shared->block = false;
  exporter.Shutdown(5000);
  EXPECT_EQ(Dropped(telemetry), 0u);
}

TEST(OtlpSpanExporterTest, ATransportThatStartsThreadsKeepsTheExportThreadsPriority) {
  auto shared = std::make_shared<FakeTransport::Shared>();  // starts_no_threads false, as gRPC
  telemetry::SelfTelemetry telemetry;
  OtlpSpanExporter exporter(FastOptions(), std::make_unique<FakeTransport>(shared), &telemetry);
  ResourcePtr resource = MakeResource(1, "a");
  for (int round = 1; round <= 2; ++round) {  // and after a batch
    for (int i = 0; i < 10; ++i) exporter.Export(MakeSpan(static_cast<uint8_t>(i)), resource);
    ASSERT_TRUE(WaitFor([&] { return shared->SpanCount() == 10u * round; }));
    std::lock_guard lock(shared->mutex);
    EXPECT_EQ(shared->policies.back(), SCHED_OTHER);
  }
}

TEST(RetryingSenderTest, BackoffDoublesUpToTheCap) {
  RetryPolicy policy;
  policy.initial_backoff_ms = 100;
  policy.max_backoff_ms = 1000;
  EXPECT_EQ(RetryingSender::BackoffMs(policy, 1), 100u);
  EXPECT_EQ(RetryingSender::BackoffMs(policy, 2), 200u);
  EXPECT_EQ(RetryingSender::BackoffMs(policy, 4), 800u);
  EXPECT_EQ(RetryingSender::BackoffMs(policy, 5), 1000u);
  EXPECT_EQ(RetryingSender::BackoffMs(policy, 40), 1000u);
}

// ---- OTLP/HTTP transport against a loopback server.

std::string Gunzip(const std::string& in) {
  z_stream stream{};
  inflateInit2(&stream, 15 + 16);
  std::string out(in.size() * 20 + 1024, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  stream.avail_in = static_cast<uInt>(in.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  inflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  inflateEnd(&stream);
  return out;
}

TEST(OtlpHttpTransportTest, PostsProtobufGzipAndHeadersAndReadsRetryAfter) {
  httplib::Server server;
  std::mutex mutex;
  std::string body, content_type, encoding, api_key, path;
  std::atomic<int> status{200};
  std::string retry_after = "7";
  server.Post(R"(/v1/.*)", [&](const httplib::Request& request, httplib::Response& response) {
    std::lock_guard lock(mutex);
    path = request.path;
    body = request.body;
    content_type = request.get_header_value("Content-Type");
    encoding = request.get_header_value("Content-Encoding");
    api_key = request.get_header_value("api-key");
    response.status = status;
    if (status == 503) response.set_header("Retry-After", retry_after);
    response.set_content("", "application/x-protobuf");
  });
  server.set_keep_alive_timeout(1);  // stop() waits for open keep-alive connections
  int port = server.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread thread([&] { server.listen_after_bind(); });

  TransportOptions options;
  options.endpoint = "http://127.0.0.1:" + std::to_string(port) + "/v1/traces";
  options.gzip = true;
  options.headers = {{"api-key", "secret"}};
  std::string error;
  auto transport = MakeHttpTransport(options, &error);
  ASSERT_TRUE(transport) << error;

  std::string bytes = Encode({{MakeSpan(9), MakeResource(1, "a")}}).SerializeAsString();
  // A request goes as pieces (a resource's header, then each span's own buffer): they are
  // sent joined, in order, empty ones included.
  std::vector<std::string_view> pieces;
  for (size_t at = 0, step = 1; at < bytes.size(); at += step, step = step * 3 % 17)
    pieces.push_back(std::string_view(bytes).substr(at, step));
  pieces.insert(pieces.begin() + 2, std::string_view());
  ASSERT_EQ(Join(pieces), bytes);
  SendResult ok = transport->Send(pieces, 2000);
  EXPECT_EQ(ok.outcome, SendResult::Outcome::kSuccess) << ok.error;
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(path, "/v1/traces");
    EXPECT_EQ(content_type, "application/x-protobuf");
    EXPECT_EQ(encoding, "gzip");
    EXPECT_EQ(api_key, "secret");
    // cpp-httplib may or may not have inflated it already.
    std::string plain = body.size() >= 2 && body[0] == '\x1f' && body[1] == '\x8b' ? Gunzip(body) : body;
    EXPECT_EQ(plain, bytes);
  }

  // The same without gzip: the pieces are read into curl's upload buffer one by one.
  TransportOptions plain_options = options;
  plain_options.gzip = false;
  auto plain_transport = MakeHttpTransport(plain_options, &error);
  ASSERT_TRUE(plain_transport) << error;
  std::string large(300000, '\0');  // several upload buffers' worth
  for (size_t i = 0; i < large.size(); ++i) large[i] = static_cast<char>(i * 7 % 251);
  std::vector<std::string_view> large_pieces = {std::string_view(large).substr(0, 5), std::string_view(large).substr(5, 100000),
                                                std::string_view(large).substr(100005)};
  for (int attempt = 0; attempt < 2; ++attempt) {  // the second on the kept-alive connection
    SendResult plain_ok = plain_transport->Send(large_pieces, 2000);
    EXPECT_EQ(plain_ok.outcome, SendResult::Outcome::kSuccess) << plain_ok.error;
    std::lock_guard lock(mutex);
    EXPECT_EQ(encoding, "");
    EXPECT_TRUE(body == large) << "body of " << body.size() << " bytes differs";
  }
  // Many small pieces, as spans are: gathered into blocks that end inside a piece.
  std::vector<std::string_view> small_pieces;
  for (size_t at = 0; at < large.size(); at += 97) small_pieces.push_back(std::string_view(large).substr(at, 97));
  SendResult small_ok = plain_transport->Send(small_pieces, 2000);
  EXPECT_EQ(small_ok.outcome, SendResult::Outcome::kSuccess) << small_ok.error;
  {
    std::lock_guard lock(mutex);
    EXPECT_TRUE(body == large) << "body of " << body.size() << " bytes differs";
  }

  std::string_view whole = bytes;
  status = 503;
  SendResult busy = transport->Send({&whole, 1}, 2000);
  EXPECT_EQ(busy.outcome, SendResult::Outcome::kRetryable);
  EXPECT_EQ(busy.error, "HTTP 503");
  ASSERT_TRUE(busy.retry_after_ms.has_value());
  EXPECT_EQ(*busy.retry_after_ms, 7000u);
  // Or an HTTP date, in any of its three formats.
  const time_t in_30s = time(nullptr) + 30;
  tm when{};
  gmtime_r(&in_30s, &when);
  for (const char* format : {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"}) {
    char text[64];
    strftime(text, sizeof(text), format, &when);
    {
      std::lock_guard lock(mutex);
      retry_after = text;
    }
    SendResult dated = transport->Send({&whole, 1}, 2000);
    ASSERT_TRUE(dated.retry_after_ms.has_value()) << text;
    EXPECT_GE(*dated.retry_after_ms, 28000u) << text;
    EXPECT_LE(*dated.retry_after_ms, 30000u) << text;
  }
  {
    std::lock_guard lock(mutex);
    retry_after = "soon";
  }
  EXPECT_FALSE(transport->Send({&whole, 1}, 2000).retry_after_ms.has_value());
  status = 400;
  EXPECT_EQ(transport->Send({&whole, 1}, 2000).outcome, SendResult::Outcome::kFailed);
  server.stop();
  thread.join();

  // Nobody listening: retryable, not a failure of the data.
  SendResult refused = transport->Send({&whole, 1}, 2000);
  EXPECT_EQ(refused.outcome, SendResult::Outcome::kRetryable);
  EXPECT_FALSE(refused.error.empty());
}

TEST(OtlpGrpcTransportTest, ReadsRetryInfoFromStatusDetails) {
  // Encoded by hand (the agent links protobuf's lite runtime, without the well-known types):
  // google.rpc.Status {code 1, message 2, details 3: Any {type_url 1, value 2}},
  // RetryInfo {retry_delay 1: Duration {seconds 1, nanos 2}}.
  auto field = [](int number, const std::string& bytes) {
    return std::string(1, static_cast<char>(number << 3 | 2)) + std::string(1, static_cast<char>(bytes.size())) + bytes;
  };
  auto varint = [](int number, uint64_t value) {
    std::string out(1, static_cast<char>(number << 3));
    for (; value >= 0x80; value >>= 7) out.push_back(static_cast<char>(value | 0x80));
    return out + static_cast<char>(value);
  };
  auto any = [&](const std::string& type, const std::string& value) {
    return field(1, "type.googleapis.com/" + type) + field(2, value);
  };
  const std::string delay = varint(1, 2) + varint(2, 500000000);
  const std::string retry_info = any("google.rpc.RetryInfo", field(1, delay));
  const std::string other = any("google.rpc.DebugInfo", field(1, "x"));
  std::string status = varint(1, 14) + field(2, "busy") + field(3, other) + field(3, retry_info);
  EXPECT_EQ(GrpcRetryDelayMs(status), std::optional<uint64_t>(2500));
  EXPECT_EQ(GrpcRetryDelayMs(varint(1, 14) + field(3, other)), std::nullopt);
  EXPECT_EQ(GrpcRetryDelayMs(""), std::nullopt);
  EXPECT_EQ(GrpcRetryDelayMs("\x1a\x7f"), std::nullopt);  // truncated
}

TEST(OtlpHttpTransportTest, ShutdownAbandonsARequestInFlight) {
  httplib::Server server;
  std::atomic<bool> release{false};
  server.Post("/v1/traces", [&](const httplib::Request&, httplib::Response& response) {
    for (int i = 0; i < 100 && !release; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    response.status = 200;
  });
  server.set_keep_alive_timeout(1);
  int port = server.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread thread([&] { server.listen_after_bind(); });

  TransportOptions transport_options;
  transport_options.endpoint = "http://127.0.0.1:" + std::to_string(port) + "/v1/traces";
  std::string error;
  auto transport = MakeHttpTransport(transport_options, &error);
  ASSERT_TRUE(transport) << error;
  telemetry::SelfTelemetry telemetry;
  OtlpExporterOptions options = FastOptions();
  options.timeout_ms = 10000;  // the request alone would hang for 5 s
  {
    OtlpSpanExporter exporter(options, std::move(transport), &telemetry);
    exporter.Export(MakeSpan(1), MakeResource(1, "a"));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the request is in flight
    auto start = Clock::now();
    exporter.Shutdown(200);
    EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(1500));
  }
  EXPECT_EQ(telemetry.spans_dropped_shutdown, 1u);
  release = true;
  server.stop();
  thread.join();
}

// A server on its own thread, stopped and joined however the test ends.
class Serving {
 public:
  explicit Serving(httplib::Server& server) : server_(server) {
    server_.set_keep_alive_timeout(1);  // stop() waits for open keep-alive connections
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ > 0) thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Serving() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }

 private:
  httplib::Server& server_;
  int port_ = -1;
  std::thread thread_;
};

// An environment variable set for a scope; what was there before comes back.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = getenv(name)) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_, old_->c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A loopback socket that listens and never accepts; `backlog_full` also fills its accept
// queue, so a further connect's SYN is dropped and it waits in SYN_SENT.
struct SilentListener {
  explicit SilentListener(bool backlog_full) {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 || listen(fd, 0) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0)
      return;
    port = ntohs(address.sin_port);
    if (backlog_full) {
      filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (connect(filler, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) port = -1;
    }
  }
  ~SilentListener() {
    if (filler >= 0) close(filler);
    if (fd >= 0) close(fd);
  }
  int fd = -1, filler = -1, port = -1;
};

TEST(OtlpHttpTransportTest, ARequestIsBoundedAsAWholeNotPerRead) {
  // The answer trickles in a byte every 100 ms for 3 s: each read is quick, the whole is not.
  // The first request is answered at once, so the watchdog sleeps towards its far deadline
  // when the slow one, with a nearer one, is sent.
  httplib::Server server;
  std::atomic<bool> closing{false};
  std::atomic<int> requests{0};
  server.Post("/v1/traces", [&](const httplib::Request&, httplib::Response& response) {
    if (requests++ == 0) return;
    response.set_chunked_content_provider("application/x-protobuf", [&](size_t offset, httplib::DataSink& sink) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (offset >= 30 || closing) sink.done();
      else sink.write("\n", 1);
      return true;
    });
  });
  struct Close {
    std::atomic<bool>& closing;
    ~Close() { closing = true; }  // before the server stops: the trickle ends
  };
  Serving serving(server);
  Close close_first{closing};
  ASSERT_GT(serving.port(), 0);
  TransportOptions options;
  options.endpoint = "http://127.0.0.1:" + std::to_string(serving.port()) + "/v1/traces";
  std::string error;
  auto transport = MakeHttpTransport(options, &error);
  ASSERT_TRUE(transport) << error;
  std::string_view body = "x";
  ASSERT_EQ(transport->Send({&body, 1}, 60000).outcome, SendResult::Outcome::kSuccess);
  auto start = Clock::now();
  SendResult slow = transport->Send({&body, 1}, 500);
  auto took = Clock::now() - start;
  EXPECT_EQ(slow.outcome, SendResult::Outcome::kRetryable);
  EXPECT_EQ(slow.error, "timed out after 500 ms");
  EXPECT_GE(took, std::chrono::milliseconds(450));
  EXPECT_LT(took, std::chrono::milliseconds(2500));  // the trickle alone lasts 3 s
}

TEST(OtlpHttpTransportTest, ConnectingIsBoundedAndAbandonedAtTheDeadline) {
  // A collector whose SYNs go unanswered (its accept queue is full), and a proxy that takes
  // the connection but never answers CONNECT: cpp-httplib's own stop() waits for both.
  SilentListener unanswered(/*backlog_full=*/true), silent_proxy(/*backlog_full=*/false);
  ASSERT_GT(unanswered.port, 0);
  ASSERT_GT(silent_proxy.port, 0);
  TransportOptions direct;
  direct.endpoint = "http://127.0.0.1:" + std::to_string(unanswered.port) + "/v1/traces";
  TransportOptions tunnelled;
  tunnelled.endpoint = "https://localhost:4318/v1/traces";
  tunnelled.proxy = HttpProxy{"127.0.0.1", silent_proxy.port, "", "", "https_proxy"};
  std::string_view body = "x";
  for (const TransportOptions& options : {direct, tunnelled}) {
    std::string error;
    auto transport = MakeHttpTransport(options, &error);
    ASSERT_TRUE(transport) << error;
    auto start = Clock::now();
    SendResult timed_out = transport->Send({&body, 1}, 400);
    EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(1500)) << options.endpoint;
    EXPECT_EQ(timed_out.error.rfind("timed out after 400 ms", 0), 0u) << timed_out.error;

    transport->SetDeadline(Clock::now() + std::chrono::milliseconds(300));
    start = Clock::now();
    SendResult abandoned = transport->Send({&body, 1}, 10000);
    EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(1500)) << options.endpoint;
    EXPECT_EQ(abandoned.outcome, SendResult::Outcome::kRetryable);
    EXPECT_EQ(abandoned.error.rfind("abandoned at the shutdown deadline", 0), 0u) << abandoned.error;
  }
}

TEST(OtlpHttpTransportTest, GoesThroughTheProxyWithItsCredentials) {
  httplib::Server proxy;  // answers itself, as a proxy would relay the collector's answer
  std::mutex mutex;
  std::string target, authorization;
  proxy.Post(".*", [&](const httplib::Request& request, httplib::Response& response) {
    std::lock_guard lock(mutex);
    target = request.target;
    authorization = request.get_header_value("Proxy-Authorization");
    response.status = 200;
  });
  std::optional<Serving> serving(std::in_place, proxy);
  const int port = serving->port();
  ASSERT_GT(port, 0);

  OtlpExporterOptions exporter_options;
  ASSERT_EQ(ApplyOtelEnvironment(FakeEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.invalid:4318"},
                                          {"http_proxy", "http://agent:s%3Acret@127.0.0.1:" + std::to_string(port)}}),
                                 &exporter_options),
            "");
  ASSERT_EQ(ProxyError(exporter_options), "");
  std::string error;
  auto transport = MakeHttpTransport(TransportOptionsFor(exporter_options, Signal::kTraces), &error);
  ASSERT_TRUE(transport) << error;
  EXPECT_NE(transport->Describe().find("through proxy 127.0.0.1:" + std::to_string(port) + " from http_proxy"),
            std::string::npos)
      << transport->Describe();
  std::string_view body = "x";
  SendResult sent = transport->Send({&body, 1}, 2000);
  EXPECT_EQ(sent.outcome, SendResult::Outcome::kSuccess) << sent.error;
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(target, "http://collector.invalid:4318/v1/traces");
    EXPECT_EQ(authorization, "Basic YWdlbnQ6czpjcmV0");  // agent:s:cret
  }
  serving.reset();
  SendResult refused = transport->Send({&body, 1}, 2000);
  EXPECT_EQ(refused.outcome, SendResult::Outcome::kRetryable);
  EXPECT_NE(refused.error.find("through proxy 127.0.0.1 from http_proxy"), std::string::npos) << refused.error;
}

// A self-signed certificate for `names` (subjectAltName entries) in a directory removed at
// scope exit; empty `dir` when openssl failed.
struct Certificate {
  explicit Certificate(const std::string& names) {
    char path[] = "/tmp/flowtracer-tls.XXXXXX";
    if (!mkdtemp(path)) return;
    std::string command = std::string("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=flowtracer-test") +
                          " -addext subjectAltName=" + names + " -keyout " + path + "/key.pem -out " + path +
                          "/cert.pem 2>/dev/null";
    if (system(command.c_str()) == 0) dir = path;
    else std::filesystem::remove_all(path);
  }
  ~Certificate() {
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }
  std::string cert() const { return dir + "/cert.pem"; }
  std::string key() const { return dir + "/key.pem"; }
  std::string dir;
};

TEST(OtlpHttpTransportTest, HttpsVerifiesTheCollectorsCertificateAndName) {
  Certificate good("DNS:localhost,IP:127.0.0.1"), other("DNS:other.example");
  ASSERT_FALSE(good.dir.empty());
  ASSERT_FALSE(other.dir.empty());
  // OpenSSL's default trust store honours SSL_CERT_FILE: a collector's private CA goes there.
  const std::string bundle = good.dir + "/bundle.pem";
  ASSERT_EQ(system(("cat " + good.cert() + " " + other.cert() + " > " + bundle).c_str()), 0);

  auto send_to = [&](const Certificate& certificate, const std::string& trust, const std::string& host) {
    httplib::SSLServer server(certificate.cert().c_str(), certificate.key().c_str());
    server.Post("/v1/traces", [](const httplib::Request&, httplib::Response& response) { response.status = 200; });
    Serving serving(server);
    ScopedEnv trusted("SSL_CERT_FILE", trust);
    TransportOptions options;
    options.endpoint = "https://" + host + ":" + std::to_string(serving.port()) + "/v1/traces";
    std::string error;
    auto transport = MakeHttpTransport(options, &error);
    std::string_view body = "x";
    return transport ? transport->Send({&body, 1}, 2000) : SendResult{SendResult::Outcome::kFailed, error, {}, {}};
  };
  SendResult trusted = send_to(good, bundle, "127.0.0.1");
  EXPECT_EQ(trusted.outcome, SendResult::Outcome::kSuccess) << trusted.error;
  EXPECT_EQ(send_to(good, bundle, "localhost").outcome, SendResult::Outcome::kSuccess);
  SendResult untrusted = send_to(good, "/nonexistent", "127.0.0.1");  // nothing trusted
  EXPECT_NE(untrusted.outcome, SendResult::Outcome::kSuccess);
  EXPECT_NE(untrusted.error.find("could not be verified"), std::string::npos) << untrusted.error;
  SendResult wrong_name = send_to(other, bundle, "127.0.0.1");  // trusted, but not this host's
  EXPECT_NE(wrong_name.outcome, SendResult::Outcome::kSuccess);
  EXPECT_NE(wrong_name.error.find("could not be verified"), std::string::npos) << wrong_name.error;
}

TEST(OtlpHttpTransportTest, ACertificateFileReplacesTheSystemsAuthorities) {
  Certificate collector("DNS:localhost,IP:127.0.0.1"), other("DNS:localhost,IP:127.0.0.1");
  ASSERT_FALSE(collector.dir.empty());
  ASSERT_FALSE(other.dir.empty());
  httplib::SSLServer server(collector.cert().c_str(), collector.key().c_str());
  server.Post("/v1/traces", [](const httplib::Request&, httplib::Response& response) { response.status = 200; });
  Serving serving(server);
  auto send_with = [&](const std::string& ca_file, const std::string& system_trust) {
    ScopedEnv trusted("SSL_CERT_FILE", system_trust);
    TransportOptions options;
    options.endpoint = "https://127.0.0.1:" + std::to_string(serving.port()) + "/v1/traces";
    options.ca_file = ca_file;
    std::string error;
    auto transport = MakeHttpTransport(options, &error);
    std::string_view body = "x";
    return transport ? transport->Send({&body, 1}, 2000) : SendResult{SendResult::Outcome::kFailed, error, {}, {}};
  };
  // The collector's authority named in the file: trusted, with nothing in the system's store.
  SendResult trusted = send_with(collector.cert(), "/nonexistent");
  EXPECT_EQ(trusted.outcome, SendResult::Outcome::kSuccess) << trusted.error;
  // Another authority in the file: refused, even though the system's store trusts the collector.
  SendResult replaced = send_with(other.cert(), collector.cert());
  EXPECT_NE(replaced.outcome, SendResult::Outcome::kSuccess);
  EXPECT_NE(replaced.error.find("could not be verified"), std::string::npos) << replaced.error;
}

TEST(OtlpHttpTransportTest, AClientCertificateForACollectorThatAsksForOne) {
  Certificate collector("DNS:localhost,IP:127.0.0.1"), agent("DNS:agent.example"), stranger("DNS:agent.example");
  ASSERT_FALSE(collector.dir.empty());
  ASSERT_FALSE(agent.dir.empty());
  ASSERT_FALSE(stranger.dir.empty());
  // The collector accepts clients whose certificate its authority file holds: the agent's.
  httplib::SSLServer server(collector.cert().c_str(), collector.key().c_str(), agent.cert().c_str());
  server.Post("/v1/traces", [](const httplib::Request&, httplib::Response& response) { response.status = 200; });
  Serving serving(server);
  auto send_as = [&](const std::string& cert, const std::string& key) {
    TransportOptions options;
    options.endpoint = "https://127.0.0.1:" + std::to_string(serving.port()) + "/v1/traces";
    options.ca_file = collector.cert();
    options.client_certificate_file = cert;
    options.client_key_file = key;
    std::string error;
    auto transport = MakeHttpTransport(options, &error);
    std::string_view body = "x";
    return transport ? transport->Send({&body, 1}, 2000) : SendResult{SendResult::Outcome::kFailed, error, {}, {}};
  };
  SendResult presented = send_as(agent.cert(), agent.key());
  EXPECT_EQ(presented.outcome, SendResult::Outcome::kSuccess) << presented.error;
  EXPECT_NE(send_as("", "").outcome, SendResult::Outcome::kSuccess) << "no client certificate: refused";
  EXPECT_NE(send_as(stranger.cert(), stranger.key()).outcome, SendResult::Outcome::kSuccess)
      << "a certificate the collector does not trust: refused";
  SendResult mismatched = send_as(agent.cert(), stranger.key());
  EXPECT_NE(mismatched.outcome, SendResult::Outcome::kSuccess);
  EXPECT_NE(mismatched.error.find("could not be loaded, or do not match"), std::string::npos) << mismatched.error;
}

// A proxy that takes one CONNECT and relays bytes both ways, as an HTTPS proxy does. The
// request line it was asked is in request_line once the thread has ended.
struct ConnectProxy {
  ConnectProxy() {
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 || listen(listener, 1) != 0 ||
        getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      close(listener);
      return;
    }
    port = ntohs(address.sin_port);
    thread = std::thread([this, listener] { Relay(listener); });
  }
  ~ConnectProxy() {
    if (thread.joinable()) thread.join();
  }

  void Relay(int listener) {
    pollfd wait_accept{listener, POLLIN, 0};
    int client = poll(&wait_accept, 1, 5000) == 1 ? accept(listener, nullptr, nullptr) : -1;
    close(listener);
    if (client < 0) return;
    std::string head;
    char byte;
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < 4096 && read(client, &byte, 1) == 1) head += byte;
    request_line = head.substr(0, head.find("\r\n"));
    int target_port = 0;
    sscanf(request_line.c_str(), "CONNECT %*[^:]:%d", &target_port);
    int upstream = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in target{};
    target.sin_family = AF_INET;
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    target.sin_port = htons(static_cast<uint16_t>(target_port));
    if (connect(upstream, reinterpret_cast<sockaddr*>(&target), sizeof(target)) == 0) {
      const char established[] = "HTTP/1.1 200 Connection established\r\n\r\n";
      if (write(client, established, sizeof(established) - 1) > 0) {
        pollfd both[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
        char buffer[16384];
        for (int rounds = 0; rounds < 10000 && poll(both, 2, 3000) > 0; ++rounds) {
          int from = both[0].revents ? 0 : 1;
          ssize_t n = read(both[from].fd, buffer, sizeof(buffer));
          if (n <= 0 || write(both[1 - from].fd, buffer, static_cast<size_t>(n)) != n) break;
        }
      }
    }
    close(upstream);
    close(client);
  }

  int port = -1;
  std::string request_line;
  std::thread thread;
};

TEST(OtlpHttpTransportTest, HttpsGoesThroughTheProxyInATunnel) {
  Certificate certificate("DNS:localhost");
  ASSERT_FALSE(certificate.dir.empty());
  httplib::SSLServer collector(certificate.cert().c_str(), certificate.key().c_str());
  std::atomic<int> received{0};
  collector.Post("/v1/traces", [&](const httplib::Request&, httplib::Response& response) {
    ++received;
    response.status = 200;
  });
  Serving serving(collector);
  ConnectProxy proxy;
  ASSERT_GT(proxy.port, 0);

  ScopedEnv trusted("SSL_CERT_FILE", certificate.cert());
  OtlpExporterOptions options;
  ASSERT_EQ(ApplyOtelEnvironment(FakeEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "https://localhost:" + std::to_string(serving.port())},
                                          {"HTTPS_PROXY", "127.0.0.1:" + std::to_string(proxy.port)}}),
                                 &options),
            "");
  std::string error;
  auto transport = MakeHttpTransport(TransportOptionsFor(options, Signal::kTraces), &error);
  ASSERT_TRUE(transport) << error;
  std::string_view body = "x";
  SendResult sent = transport->Send({&body, 1}, 3000);
  EXPECT_EQ(sent.outcome, SendResult::Outcome::kSuccess) << sent.error;
  EXPECT_EQ(received.load(), 1);
  transport.reset();  // closes the tunnel
  proxy.thread.join();
  EXPECT_EQ(proxy.request_line, "CONNECT localhost:" + std::to_string(serving.port()) + " HTTP/1.1");
}

TEST(OtlpHttpTransportTest, RejectsBadEndpoints) {
  TransportOptions options;
  options.endpoint = "localhost:4318";
  std::string error;
  EXPECT_FALSE(MakeHttpTransport(options, &error));
  EXPECT_NE(error.find("localhost:4318"), std::string::npos);
  options.protocol = Protocol::kGrpc;
  options.endpoint = "grpc://x";
  EXPECT_FALSE(MakeTransport(options, &error));
}

}  // namespace
}  // namespace flowtracer::exporters::otlp

namespace flowtracer::telemetry {
namespace {

TEST(SelfTelemetryTest, SnapshotNamesAreTheDocumentedOnes) {
  SelfTelemetry telemetry;
  telemetry.spans_dropped_queue_full = 7;
  telemetry.queue_depth_spans = 3;
  std::set<std::string> names;
  for (const SelfTelemetry::Value& value : telemetry.Snapshot()) {
    names.insert(value.reason.empty() ? value.name : value.name + "{" + value.reason + "}");
    if (value.name == "flowtracer.spans.dropped" && value.reason == "queue_full") {
      EXPECT_EQ(value.value, 7u);
    }
    if (value.name == "flowtracer.export.queue_depth") {
      EXPECT_EQ(value.kind, SelfTelemetry::Kind::kGauge);
      EXPECT_EQ(value.value, 3u);
    }
  }
  // README, "Self-telemetry": these names are a contract.
  std::set<std::string> documented = {
      "flowtracer.events.seen{data}", "flowtracer.events.seen{connection}",
      "flowtracer.events.lost{ring_buffer_full}", "flowtracer.events.lost{connection_table_full}",
      "flowtracer.events.lost{user_memory_unreadable}", "flowtracer.events.lost{syscall_stash_full}",
      "flowtracer.events.lost{malformed}", "flowtracer.events.lost{unknown_connection}",
      "flowtracer.stream.gap_bytes", "flowtracer.spans.produced", "flowtracer.spans.exported",
      "flowtracer.spans.dropped{queue_full}", "flowtracer.spans.dropped{export_failed}",
      "flowtracer.spans.dropped{rejected}", "flowtracer.spans.dropped{shutdown}", "flowtracer.export.requests",
      "flowtracer.export.errors", "flowtracer.export.queue_depth", "flowtracer.connections.traced_percent"};
  EXPECT_EQ(names, documented);
}

}  // namespace
}  // namespace flowtracer::telemetry
