// `flowtracer agent`: traces until SIGTERM/SIGINT and sends spans to an OTLP receiver;
// metrics from the spans over OTLP on an interval and on a Prometheus endpoint; /healthz
// and /readyz for probes; counters of what it saw, lost and sent, logged on exit.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <tuple>
#include <unordered_map>

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include "agent/cli/agent_config.h"
#include "agent/cli/commands.h"
#include "agent/cli/tracer_session.h"
#include "agent/pipeline/trace_pipeline.h"
#include "agent/metrics/self_metrics.h"
#include "agent/metrics/span_metrics.h"
#include "agent/process/process_info.h"
#include "agent/telemetry/self_telemetry.h"
#include "exporters/http_endpoint.h"
#include "exporters/otlp/span_exporter.h"
#include "exporters/otlp_metrics/metrics_exporter.h"
#include "exporters/prometheus/prometheus_server.h"

namespace flowtracer::cli {
namespace {

namespace otlp = exporters::otlp;
namespace otlp_metrics = exporters::otlp_metrics;

// /healthz: the capture loop ticked recently. /readyz: capture is attached and running.
class HealthServer {
 public:
  bool Start(const std::string& listen, std::string* error) {
    std::string host;
    int port = 0;
    ParseListenAddress(listen, &host, &port);
    last_tick_ns_ = MonotonicNowNs();
    exporters::HttpRoute healthz{"/healthz", [this] {
                                   uint64_t age_ns = MonotonicNowNs() - last_tick_ns_.load();
                                   bool alive = age_ns < 10ull * 1000 * 1000 * 1000;
                                   return exporters::HttpReply{alive ? 200 : 503,
                                                               alive ? "ok\n" : "capture loop stalled\n"};
                                 }};
    exporters::HttpRoute readyz{"/readyz", [this] {
                                  bool ready = ready_.load();
                                  return exporters::HttpReply{ready ? 200 : 503, ready ? "ready\n" : "not tracing\n"};
                                }};
    endpoint_ = exporters::ServeHttp(host, static_cast<uint16_t>(port), {std::move(healthz), std::move(readyz)},
                                     "/healthz and /readyz", "set health.listen or --health-listen to a free HOST:PORT",
                                     error);
    return endpoint_ != nullptr;
  }
  void Stop() { endpoint_.reset(); }
  void Tick() { last_tick_ns_ = MonotonicNowNs(); }
  void SetReady(bool ready) { ready_ = ready; }

 private:
  std::atomic<uint64_t> last_tick_ns_{0};
  std::atomic<bool> ready_{false};
  std::unique_ptr<exporters::HttpEndpoint> endpoint_;  // last: its thread reads the fields above
};

std::string HostName(const otlp::KeyValues& resource_attributes) {
  for (const auto& [key, value] : resource_attributes)
    if (key == "host.name") return value;
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

void CopyCounters(const loader::CounterValues& kernel, const pipeline::TracePipeline& pipeline,
                  telemetry::SelfTelemetry* t) {
  const conntrack::TrackerStats& stats = pipeline.tracker_stats();
  auto set = [](std::atomic<uint64_t>& to, uint64_t value) { to.store(value, std::memory_order_relaxed); };
  set(t->events_data, kernel[FT_CTR_DATA_EVENTS]);
  set(t->events_connection, kernel[FT_CTR_CONN_EVENTS]);
  set(t->events_lost_ring_buffer_full, kernel[FT_CTR_DROP_RINGBUF_FULL]);
  set(t->events_lost_connection_table_full, kernel[FT_CTR_DROP_CONN_MAP_FULL]);
  set(t->events_lost_user_memory_unreadable, kernel[FT_CTR_DROP_READ_USER]);
  set(t->events_lost_syscall_stash_full, kernel[FT_CTR_DROP_STASH_MAP_FULL]);
  set(t->events_lost_malformed, stats.malformed_records);
  set(t->events_lost_unknown_connection, stats.data_for_unknown_connection);
  set(t->stream_gap_bytes, stats.gap_bytes);
  // Rounded up: a share that still traces something never reads 0.
  set(t->connections_traced_percent,
      (uint64_t{pipeline.traced_share()} * 100 + conntrack::kAllConnectionsTraced - 1) / conntrack::kAllConnectionsTraced);
  std::vector<std::pair<std::string, uint64_t>> anomalies;
  for (pipeline::PipelineAnomaly& anomaly : pipeline.Anomalies())
    anomalies.emplace_back(std::move(anomaly.reason), anomaly.value);
  t->SetPipelineAnomalies(std::move(anomalies));
}

std::string Join(const auto& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + fmt::format("{}", item);
  return out.empty() ? "all" : out;
}

// The settings in effect, one per line, on stdout. Header values are not shown (secrets).
void PrintConfig(const AgentConfig& config) {
  const otlp::OtlpExporterOptions& e = config.exporter;
  fmt::print("traces endpoint: {}\n", otlp::ResolveEndpoint(e, otlp::Signal::kTraces));
  fmt::print("metrics endpoint: {}\n", otlp::ResolveEndpoint(e, otlp::Signal::kMetrics));
  for (auto [name, signal] : {std::pair{"traces", otlp::Signal::kTraces}, std::pair{"metrics", otlp::Signal::kMetrics}}) {
    if (auto proxy = otlp::TransportOptionsFor(e, signal).proxy)  // credentials are not shown
      fmt::print("{} proxy: {}:{} (from {})\n", name, proxy->host, proxy->port, proxy->variable);
  }
  fmt::print("protocol: {}\ncompression: {}\ntimeout: {}ms\n", otlp::ProtocolName(e.protocol),
             e.gzip ? "gzip" : "none", e.timeout_ms);
  auto header_names = [](const otlp::KeyValues& headers) {
    std::vector<std::string> names;
    for (const auto& [key, unused] : headers) names.push_back(key);
    return names.empty() ? std::string("none") : Join(names);
  };
  fmt::print("headers: {}\n", header_names(e.headers));
  if (!e.certificate.empty()) fmt::print("certificate: {}\n", e.certificate);
  if (!e.client_certificate.empty()) fmt::print("client certificate: {}\nclient key: {}\n", e.client_certificate, e.client_key);
  // A signal's own settings (OTEL_EXPORTER_OTLP_TRACES_*, ..._METRICS_*), where set.
  for (auto [name, own] : {std::pair{"traces", &e.traces}, std::pair{"metrics", &e.metrics}}) {
    if (own->protocol) fmt::print("{} protocol: {}\n", name, otlp::ProtocolName(*own->protocol));
    if (own->gzip) fmt::print("{} compression: {}\n", name, *own->gzip ? "gzip" : "none");
    if (own->timeout_ms) fmt::print("{} timeout: {}ms\n", name, *own->timeout_ms);
    if (own->headers) fmt::print("{} headers: {}\n", name, header_names(*own->headers));
    if (own->certificate) fmt::print("{} certificate: {}\n", name, *own->certificate);
    if (own->client_certificate) fmt::print("{} client certificate: {}\n", name, *own->client_certificate);
    if (own->client_key) fmt::print("{} client key: {}\n", name, *own->client_key);
  }
  fmt::print("batch: {} spans or {}ms; queue: {} spans; attempts: {}\n", e.max_export_batch_spans,
             e.schedule_delay_ms, e.max_queue_spans, e.max_attempts);
  for (const auto& [key, value] : e.resource_attributes) fmt::print("resource attribute: {}={}\n", key, value);
  fmt::print("pids: {}\nports: {}\nhooks: {}\nmax payload bytes: {}\n", Join(config.pids), Join(config.ports),
             config.hooks, config.max_payload_bytes);
  fmt::print("ring buffer: {}\n", config.ring_buffer_mb ? fmt::format("{} MiB", config.ring_buffer_mb) : "2 MiB per CPU");
  fmt::print("max cpu: {}\n", config.max_cpu_percent ? fmt::format("{}% of a core", config.max_cpu_percent) : "none");
  for (const std::string& service : config.services) fmt::print("service: {}\n", service);
  fmt::print("health: {}\nshutdown timeout: {}ms\n", config.health_listen, config.shutdown_timeout_ms);
  fmt::print("metrics interval: {}\nmetrics temporality: {}\n",
             config.metrics_interval_ms ? fmt::format("{}ms", config.metrics_interval_ms) : "off",
             config.metrics_temporality);
  fmt::print("prometheus: {}\n", config.prometheus_port
                                     ? fmt::format("{}:{}", config.prometheus_address, config.prometheus_port)
                                     : "off");
  for (const std::string& peer : config.peer_services) fmt::print("peer service: {}\n", peer);
}

}  // namespace

Runner AddAgentCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand(
      "agent", "Trace until stopped (SIGTERM/SIGINT) and send spans to an OpenTelemetry (OTLP) receiver");
  struct Flags {
    std::string config_path;
    bool check_config = false;
    // Single-valued flags by the file key they override; each is parsed like the file's value.
    std::vector<std::tuple<CLI::Option*, std::string, std::string>> settings;  // option, key, value
    std::vector<uint32_t> pids;
    std::vector<uint16_t> ports;
    std::vector<std::string> services;
    std::vector<std::string> peer_services;
    CLI::Option* pids_option = nullptr;
    CLI::Option* ports_option = nullptr;
    CLI::Option* services_option = nullptr;
    CLI::Option* peer_services_option = nullptr;
  };
  auto flags = std::make_shared<Flags>();
  command->add_option("-c,--config", flags->config_path, "YAML configuration file (see README)");
  command->add_flag("--check-config", flags->check_config,
                    "Check the configuration (file, environment, flags), print the settings in effect and exit");
  const std::vector<std::tuple<const char*, const char*, const char*>> setting_flags = {
      {"--endpoint", "exporter.endpoint", "OTLP endpoint (like OTEL_EXPORTER_OTLP_ENDPOINT); default http://localhost:4318"},
      {"--protocol", "exporter.protocol", "http/protobuf or grpc"},
      {"--compression", "exporter.compression", "gzip or none"},
      {"--health-listen", "health.listen", "HOST:PORT for /healthz and /readyz; default 127.0.0.1:13133"},
      {"--shutdown-timeout", "shutdown.timeout", "Longest wait to send what is queued on exit; default 5s"},
      {"--hooks", "trace.hooks", "Data hooks: auto, socket or syscall"},
      {"--max-payload-bytes", "trace.max_payload_bytes", "Bytes copied from each read/write (64..16384)"},
      {"--ring-buffer-mb", "trace.ring_buffer_mb",
       "Kernel-to-agent ring buffer in MiB, a power of two (1..1024); 0 (default): 2 MiB per CPU, 4 to 64"},
      {"--max-cpu", "trace.max_cpu_percent",
       "CPU budget in percent of one core: past it, a share of connections is left untraced; 0 (default): none"},
      {"--metrics-interval", "metrics.interval", "OTLP metrics export period; 0 turns it off; default 15s"},
      {"--metrics-temporality", "metrics.temporality", "OTLP metrics temporality: cumulative (default) or delta"},
      {"--prometheus-port", "metrics.prometheus_port", "Prometheus endpoint port (/metrics); 0 turns it off; default 9464"},
      {"--prometheus-address", "metrics.prometheus_address", "Address the Prometheus endpoint listens on; default 0.0.0.0"},
  };
  flags->settings.reserve(setting_flags.size());  // options point into this vector
  for (const auto& [name, key, help] : setting_flags) {
    flags->settings.emplace_back(nullptr, key, "");
    std::get<0>(flags->settings.back()) = command->add_option(name, std::get<2>(flags->settings.back()), help);
  }
  flags->pids_option = command->add_option("-p,--pid", flags->pids, "Trace only these processes (repeatable)");
  flags->ports_option = command->add_option("--port", flags->ports,
                                            "Trace only connections with this local or remote port (repeatable)");
  flags->services_option =
      command->add_option("--service", flags->services, "Name a service: NAME=PID or NAME=EXECUTABLE");
  flags->peer_services_option = command->add_option(
      "--peer-service", flags->peer_services, "Name an untraced peer: NAME=ADDRESS or NAME=ADDRESS:PORT (repeatable)");

  return [flags] {
    // Layers: defaults, the file, the environment, then flags.
    AgentConfig config;
    if (!flags->config_path.empty()) {
      if (std::string error = LoadAgentConfigFile(flags->config_path, &config); !error.empty()) {
        spdlog::error("{}", error);
        return 2;
      }
    }
    if (std::string error = otlp::ApplyOtelEnvironment(otlp::ProcessEnvironment(), &config.exporter);
        !error.empty()) {
      spdlog::error("environment: {}", error);
      return 2;
    }
    if (std::string error = ApplyMetricsEnvironment(otlp::ProcessEnvironment(), &config); !error.empty()) {
      spdlog::error("environment: {}", error);
      return 2;
    }
    for (const auto& [option, key, value] : flags->settings) {
      if (!option->count()) continue;
      if (std::string reason = SetAgentSetting(key, value, &config); !reason.empty()) {
        spdlog::error("{}: {}", option->get_name(), reason);
        return 2;
      }
      // A flag is the most specific setting: it also replaces a signal's own setting from
      // the environment.
      if (key == "exporter.endpoint") config.exporter.traces_endpoint.clear();
      if (key == "exporter.protocol") config.exporter.traces.protocol = config.exporter.metrics.protocol = std::nullopt;
      if (key == "exporter.compression") config.exporter.traces.gzip = config.exporter.metrics.gzip = std::nullopt;
    }
    if (flags->pids_option->count()) config.pids = flags->pids;
    if (flags->ports_option->count()) config.ports = flags->ports;
    if (flags->services_option->count()) config.services = flags->services;
    if (flags->peer_services_option->count()) config.peer_services = flags->peer_services;
    if (std::string error = ValidateAgentConfig(config); !error.empty()) {
      spdlog::error("{}", error);
      return 2;
    }
    // The proxy variables are read only now that each signal's endpoint and protocol are known.
    if (std::string error = otlp::ProxyError(config.exporter); !error.empty()) {
      spdlog::error("{}", error);
      return 2;
    }
    if (std::string error = otlp::CertificateError(config.exporter); !error.empty()) {
      spdlog::error("{}", error);
      return 2;
    }

    // Built before --check-config returns, so the check also covers the endpoint and, for
    // gRPC, the module (nothing is sent: connections are made on the first export).
    std::string error;
    auto transport = otlp::MakeTransport(otlp::TransportOptionsFor(config.exporter, otlp::Signal::kTraces), &error);
    if (!transport) {
      spdlog::error("{}", error);
      return 2;
    }
    if (flags->check_config) {
      PrintConfig(config);
      return 0;
    }
    if (!loader::HasTracingPrivileges(&error)) {
      spdlog::error("{}", error);
      return 1;
    }
    HealthServer health;
    if (!health.Start(config.health_listen, &error)) {
      spdlog::error("{}", error);
      return 1;
    }

    telemetry::SelfTelemetry telemetry;
    otlp::OtlpSpanExporter exporter(config.exporter, std::move(transport), &telemetry);
    spdlog::info("sending spans to {}; health on {}", exporter.Describe(), config.health_listen);

    // Metrics: aggregated from every span; read by the Prometheus endpoint on each scrape
    // and by the OTLP metrics exporter on its interval.
    const uint64_t agent_start_unix_ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
    metrics::SpanMetricsOptions metrics_options;
    for (const std::string& mapping : config.peer_services) {
      size_t equals = mapping.find('=');
      metrics_options.peer_names.push_back({mapping.substr(equals + 1), mapping.substr(0, equals)});
    }
    metrics::SpanMetrics span_metrics(metrics_options);
    std::atomic<const otlp_metrics::OtlpMetricsExporter*> metrics_exporter_for_stats{nullptr};
    auto metrics_snapshot = [&] {
      metrics::MetricsSnapshot snapshot = span_metrics.Collect();
      metrics::MetricsPipelineCounters pipeline;
      pipeline.span_metrics = span_metrics.stats();
      if (const auto* metrics_exporter = metrics_exporter_for_stats.load()) {
        const otlp_metrics::MetricsExportStats stats = metrics_exporter->stats();
        pipeline.otlp_exports = stats.exports;
        pipeline.otlp_export_failures = stats.export_failures;
        pipeline.otlp_points_exported = stats.points_exported;
        pipeline.otlp_points_dropped = stats.points_dropped;
      }
      metrics::MergeAgentResource(metrics::SelfMetrics(telemetry.Snapshot(), pipeline, agent_start_unix_ns),
                                  &snapshot);
      return snapshot;
    };
    std::unique_ptr<otlp_metrics::OtlpMetricsExporter> metrics_exporter;
    if (config.metrics_interval_ms != 0) {
      auto metrics_transport =
          otlp::MakeTransport(otlp::TransportOptionsFor(config.exporter, otlp::Signal::kMetrics), &error);
      if (!metrics_transport) {
        spdlog::error("{}", error);
        return 2;
      }
      otlp_metrics::Temporality temporality = otlp_metrics::Temporality::kCumulative;
      otlp_metrics::ParseTemporality(config.metrics_temporality, &temporality);
      otlp_metrics::ResourceOptions resource_options;
      resource_options.host_name = HostName(config.exporter.resource_attributes);
      resource_options.version = FLOWTRACER_VERSION;
      resource_options.agent_attributes = config.exporter.resource_attributes;
      metrics_exporter = std::make_unique<otlp_metrics::OtlpMetricsExporter>(
          config.exporter, std::move(metrics_transport), temporality, config.metrics_interval_ms,
          std::move(resource_options), metrics_snapshot);
      metrics_exporter_for_stats = metrics_exporter.get();
      spdlog::info("sending metrics to {} every {}ms ({})", metrics_exporter->Describe(), config.metrics_interval_ms,
                   config.metrics_temporality);
    }
    exporters::PrometheusServer prometheus(metrics_snapshot);
    if (config.prometheus_port != 0) {
      if (!prometheus.Start(config.prometheus_address, config.prometheus_port, &error)) {
        spdlog::error("{}", error);
        return 1;
      }
      spdlog::info("Prometheus metrics at http://{}:{}/metrics", config.prometheus_address, config.prometheus_port);
    }

    process::ProcessRegistry processes;
    for (const std::string& mapping : config.services) {
      size_t equals = mapping.find('=');
      processes.SetOverride(mapping.substr(equals + 1), mapping.substr(0, equals));
    }
    const std::string host_name = HostName(config.exporter.resource_attributes);
    // One resource per traced process, shared by its spans; bounded like the registry.
    std::unordered_map<uint32_t, otlp::ResourcePtr> resources;
    // A reference into `resources`, used at once: no reference count touched per span.
    auto resource_of = [&](const spans::Span& span) -> const otlp::ResourcePtr& {
      auto it = resources.find(span.pid);
      // service.name comes first; a different one means the pid now belongs to another program.
      if (it != resources.end()) {
        const auto* service = std::get_if<std::string>(&it->second->attributes[0].value);
        if (service && *service == span.service) return it->second;
      }
      if (resources.size() >= 4096) resources.clear();
      auto fresh = std::make_shared<otlp::Resource>(otlp::ProcessResource(
          processes.Get(span.pid), host_name, otlp::ProcessStartTicks(span.pid), config.exporter.resource_attributes));
      otlp::ResourcePtr& resource = resources[span.pid];
      resource = std::move(fresh);
      return resource;
    };

    pipeline::PipelineOptions pipeline_options;
    pipeline_options.max_cpu_percent = config.max_cpu_percent;
    pipeline_options.http.monotonic_to_unix_ns = MonotonicToUnixOffsetNs();
    pipeline_options.tracker.close_check_idle_ns = 30ull * 1000 * 1000 * 1000;
    pipeline_options.messaging.monotonic_to_unix_ns = pipeline_options.http.monotonic_to_unix_ns;
    TracerControl control;
    pipeline::TracePipeline pipeline(pipeline_options, &processes, [&](const spans::Span& span) {
      telemetry::AddAsSoleWriter(telemetry.spans_produced);
      span_metrics.Add(span);
      exporter.Export(span, resource_of(span));
    }, &control);

    SessionOptions session;
    session.duration = "0";
    session.pids = config.pids;
    session.ports = config.ports;
    session.hooks = config.hooks;
    session.max_payload_bytes = config.max_payload_bytes;
    session.ring_buffer_mb = config.ring_buffer_mb;
    SessionCallbacks callbacks;
    callbacks.on_record = [&](const void* data, size_t size) { pipeline.OnRecord(data, size); };
    bool started = false;
    callbacks.on_started = [&](loader::SocketTracer& tracer) {
      started = true;
      control.tracer_ = &tracer;
      // Every self-metric series exists (at zero) from the start, not from the first tick.
      CopyCounters(tracer.ReadCounters(), pipeline, &telemetry);
      health.SetReady(true);
      spdlog::info("tracing; stop with SIGTERM or Ctrl-C");
    };
    callbacks.on_tick = [&](uint64_t now) {
      pipeline.Tick(now);
      health.Tick();
      span_metrics.Tick();
      exporter.ReleaseIdleSpans();
      exporter.RaiseIfStalled();
      if (control.tracer_) CopyCounters(control.tracer_->ReadCounters(), pipeline, &telemetry);
    };
    loader::CounterValues counters{};
    int status = RunSession(session, callbacks, &counters);
    health.SetReady(false);
    const uint64_t in_flight = pipeline.Flush();
    CopyCounters(counters, pipeline, &telemetry);
    span_metrics.FlushPending();
    // Spans and the last metrics go out side by side: stopping takes at most one timeout.
    std::thread metrics_stop([&] {
      if (metrics_exporter) metrics_exporter->Shutdown(config.shutdown_timeout_ms);
    });
    exporter.Shutdown(config.shutdown_timeout_ms);
    metrics_stop.join();
    prometheus.Stop();
    health.Stop();
    if (!started) return status;  // the reason was logged; there is nothing to report

    spdlog::info("self-telemetry at exit ({} requests still in flight were not sent):", in_flight);
    for (const telemetry::SelfTelemetry::Value& value : telemetry.Snapshot()) {
      if (value.reason.empty()) spdlog::info("  {} = {}", value.name, value.value);
      else spdlog::info("  {}{{reason={}}} = {}", value.name, value.reason, value.value);
    }
    return status;
  };
}

}  // namespace flowtracer::cli
