// `flowtracer capture`: trace for a while, print each span as it completes, then a
// caller -> callee table and any losses.
#include <unistd.h>

#include <cstdio>

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include "agent/cli/commands.h"
#include "agent/cli/tracer_session.h"
#include "agent/metrics/span_metrics.h"
#include "agent/pipeline/trace_pipeline.h"
#include "agent/process/process_info.h"
#include "agent/spans/call_summary.h"
#include "exporters/capture_output.h"
#include "exporters/prometheus/prometheus_server.h"
#include "exporters/service_map.h"

namespace flowtracer::cli {
Runner AddCaptureCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand(
      "capture", "Trace requests between services for a while and print the spans");
  struct Flags {
    SessionOptions session;
    std::vector<std::string> services;
    std::string format = "text";
    std::string output;
    std::vector<std::string> peer_services;
    uint16_t prometheus_port = 0;
    std::string prometheus_address = "0.0.0.0";
    std::string map;
    uint32_t max_cpu_percent = 0;
  };
  auto flags = std::make_shared<Flags>();
  AddSessionFlags(command, &flags->session);
  command->add_option("--service", flags->services,
                      "Name a service: NAME=PID or NAME=EXECUTABLE (repeatable); "
                      "default OTEL_SERVICE_NAME or the program/script name");
  command->add_option("-f,--format", flags->format, "Span output: text or json (one object per line)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  command->add_option("-o,--output", flags->output, "Write spans to this file instead of stdout");
  command->add_option("--peer-service", flags->peer_services,
                      "Name a peer that is not traced here: NAME=ADDRESS or NAME=ADDRESS:PORT "
                      "(repeatable); default its address");
  command->add_option("--prometheus-port", flags->prometheus_port,
                      "Serve metrics for Prometheus on this port at /metrics; 0 is off")
      ->capture_default_str();
  command->add_option("--prometheus-address", flags->prometheus_address,
                      "Address the Prometheus endpoint listens on")
      ->capture_default_str();
  command->add_option("--max-cpu", flags->max_cpu_percent,
                      "CPU budget in percent of one core: past it, a share of connections is left "
                      "untraced; 0 is none")
      ->check(CLI::Range(0u, 1000u))
      ->capture_default_str();
  command->add_option("--map", flags->map,
                      "At the end, print the service map to stdout (spans only go to --output)")
      ->check(CLI::IsMember({"mermaid"}));

  return [flags] {
    process::ProcessRegistry processes;
    for (const std::string& mapping : flags->services) {
      size_t equals = mapping.find('=');
      if (equals == std::string::npos || equals == 0 || equals + 1 == mapping.size()) {
        spdlog::error("--service '{}' is not NAME=PID or NAME=EXECUTABLE", mapping);
        return 2;
      }
      processes.SetOverride(mapping.substr(equals + 1), mapping.substr(0, equals));
    }
    metrics::SpanMetricsOptions metrics_options;
    for (const std::string& mapping : flags->peer_services) {
      size_t equals = mapping.find('=');
      if (equals == std::string::npos || equals == 0 || equals + 1 == mapping.size()) {
        spdlog::error("--peer-service '{}' is not NAME=ADDRESS or NAME=ADDRESS:PORT", mapping);
        return 2;
      }
      metrics_options.peer_names.push_back({mapping.substr(equals + 1), mapping.substr(0, equals)});
    }
    metrics::SpanMetrics span_metrics(metrics_options);
    exporters::PrometheusServer prometheus([&span_metrics] { return span_metrics.Collect(); });
    if (std::string error; !loader::HasTracingPrivileges(&error)) {
      spdlog::error("{}", error);
      return 1;
    }
    if (flags->prometheus_port != 0) {
      std::string error;
      if (!prometheus.Start(flags->prometheus_address, flags->prometheus_port, &error)) {
        spdlog::error("{}", error);
        return 1;
      }
      spdlog::info("Prometheus metrics at http://{}:{}/metrics", flags->prometheus_address,
                   flags->prometheus_port);
    }
    const bool print_map = !flags->map.empty();
    // With a map on stdout, spans go to --output only (or nowhere).
    FILE* out = print_map ? nullptr : stdout;
    if (!flags->output.empty()) {
      out = fopen(flags->output.c_str(), "w");
      if (!out) {
        spdlog::error("cannot write {}: {}", flags->output, strerror(errno));
        return 1;
      }
    }
    bool json = flags->format == "json";
    // A person watching a terminal sees each span as it completes; a pipe or file gets
    // them in blocks, written at the end of each batch of ring records (at most 100 ms
    // apart): one write per span was a large part of the capture's CPU under load.
    const bool flush_each_span = out && isatty(fileno(out));
    bool unflushed = false;
    if (out && !flush_each_span) setvbuf(out, nullptr, _IOFBF, 64 * 1024);
    // A live count on the terminal's status line, when spans go elsewhere.
    bool live_count = isatty(STDERR_FILENO) && (out != stdout || !isatty(STDOUT_FILENO));
    if (!json && out == stdout) fmt::print(out, "{}\n", exporters::SpanTextHeader());

    spans::CallSummary summary;
    uint64_t span_count = 0;
    spans::AssemblerOptions assembler_options;
    assembler_options.monotonic_to_unix_ns = MonotonicToUnixOffsetNs();
    auto emit = [&](const spans::Span& span) {
      ++span_count;
      summary.Add(span);
      // Span metrics are read only through the Prometheus endpoint.
      if (flags->prometheus_port != 0) span_metrics.Add(span);
      if (!out) return;
      // Paths and headers are bytes from the network: bytes that are not UTF-8 become U+FFFD
      // (dump() would throw and end the capture).
      std::string line = json ? exporters::SpanToJson(span).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                              : exporters::SpanToText(span);
      line += '\n';
      fwrite(line.data(), 1, line.size(), out);
      if (flush_each_span) fflush(out);
      else unflushed = true;
    };
    pipeline::PipelineOptions pipeline_options;
    pipeline_options.max_cpu_percent = flags->max_cpu_percent;
    pipeline_options.http = assembler_options;
    pipeline_options.tracker.close_check_idle_ns = 30ull * 1000 * 1000 * 1000;
    pipeline_options.messaging.monotonic_to_unix_ns = assembler_options.monotonic_to_unix_ns;
    TracerControl control;
    pipeline::TracePipeline pipeline(pipeline_options, &processes, emit, &control,
                                     [&](const std::string& producer_service, const spans::Span& consumer) {
                                       summary.AddMessageHop(producer_service, consumer);
                                     });

    SessionCallbacks callbacks;
    callbacks.on_record = [&](const void* data, size_t size) { pipeline.OnRecord(data, size); };
    callbacks.on_started = [&](loader::SocketTracer& tracer) { control.tracer_ = &tracer; };
    callbacks.on_batch_end = [&] {
      if (!unflushed) return;
      fflush(out);
      unflushed = false;
    };
    callbacks.on_tick = [&](uint64_t now) {
      pipeline.Tick(now);
      summary.Tick();
      span_metrics.Tick();
      if (live_count) fmt::print(stderr, "\r{} spans", span_count);
    };
    loader::CounterValues counters{};
    const uint64_t started_ns = MonotonicNowNs();
    int status = RunSession(flags->session, callbacks, &counters);
    const double elapsed_seconds = (MonotonicNowNs() - started_ns) / 1e9;
    if (live_count) fmt::print(stderr, "\r");
    const uint64_t in_flight = pipeline.Flush();
    span_metrics.FlushPending();
    if (out) fflush(out);  // the spans released at exit, before the report on stderr
    prometheus.Stop();
    if (out && out != stdout) fclose(out);
    if (status != 0) return status;

    // The closing report goes to stderr so stdout stays pure spans for pipes.
    fmt::print(stderr, "\n{} spans\n", span_count);
    std::vector<spans::CallSummaryRow> rows = summary.Rows();
    if (!rows.empty()) fmt::print(stderr, "\n{}", exporters::SummaryTable(rows));
    if (print_map) fmt::print(stdout, "{}", exporters::MermaidServiceMap(rows, elapsed_seconds));
    const conntrack::TrackerStats& stats = pipeline.tracker_stats();
    std::vector<std::pair<std::string, uint64_t>> losses = {
        {"requests in flight at exit (not printed)", in_flight},
        {"kernel: events lost, ring buffer full", counters[FT_CTR_DROP_RINGBUF_FULL]},
        {"kernel: connections not tracked, table full", counters[FT_CTR_DROP_CONN_MAP_FULL]},
        {"kernel: payloads lost, user memory unreadable", counters[FT_CTR_DROP_READ_USER]},
        {"kernel: calls lost, syscall stash full", counters[FT_CTR_DROP_STASH_MAP_FULL]},
        {"malformed records", stats.malformed_records},
        {"data for connections never announced", stats.data_for_unknown_connection},
        {"bytes missing from streams (gaps)", stats.gap_bytes},
    };
    for (const pipeline::PipelineAnomaly& anomaly : pipeline.Anomalies())
      losses.emplace_back(anomaly.description, anomaly.value);
    for (const auto& [what, value] : std::vector<std::pair<std::string, uint64_t>>{
             {"metric series folded into overflow", span_metrics.stats().series_overflowed},
             {"metric services folded into {overflow}", span_metrics.stats().services_overflowed},
             {"service graph: calls counted early (pending full)", span_metrics.stats().pending_evicted},
             {"service graph: edges folded into {overflow}", span_metrics.stats().edges_overflowed}})
      losses.emplace_back(what, value);
    bool header = false;
    for (const auto& [what, value] : losses) {
      if (!value) continue;
      if (!header) fmt::print(stderr, "\nlosses and oddities:\n");
      header = true;
      fmt::print(stderr, "  {:<48} {}\n", what, value);
    }
    return 0;
  };
}

}  // namespace flowtracer::cli
