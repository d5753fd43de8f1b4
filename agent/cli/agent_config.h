// `flowtracer agent` configuration: a YAML file, then the OTEL_* environment, then flags.
// Every error is one sentence naming where the value came from (file and key, variable
// or flag) and why it is wrong; the agent then refuses to start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "exporters/otlp/otlp_options.h"
#include "flowtracer/events.h"

namespace flowtracer::cli {

struct AgentConfig {
  exporters::otlp::OtlpExporterOptions exporter;

  // What to trace (as `capture`).
  std::vector<uint32_t> pids;
  std::vector<uint16_t> ports;
  std::string hooks = "auto";
  uint32_t max_payload_bytes = FT_MAX_PAYLOAD;
  uint32_t ring_buffer_mb = 0;  // 0: 2 MiB per CPU, 4 to 64
  uint32_t max_cpu_percent = 0;  // CPU budget, percent of one core (load shedding); 0: none
  std::vector<std::string> services;  // NAME=PID or NAME=EXECUTABLE

  std::string health_listen = "127.0.0.1:13133";  // /healthz and /readyz
  uint64_t shutdown_timeout_ms = 5000;             // flushing on SIGTERM takes at most this

  // Metrics (docs/metrics.md).
  uint64_t metrics_interval_ms = 15000;      // OTLP metrics export period; 0 turns it off
  std::string metrics_temporality = "cumulative";  // or "delta"
  uint16_t prometheus_port = 9464;           // 0 turns the scrape endpoint off
  std::string prometheus_address = "0.0.0.0";
  std::vector<std::string> peer_services;    // NAME=ADDRESS or NAME=ADDRESS:PORT
};

// Reads `path` over `config`. Returns "" or "PATH: KEY: reason" (or "PATH: line L, column C: reason").
std::string LoadAgentConfigFile(const std::string& path, AgentConfig* config);

// Sets one single-valued setting by its file key ("exporter.protocol", "trace.hooks") with
// the same checks as the file; returns "" or the reason the value is wrong. Flags use it.
std::string SetAgentSetting(const std::string& key, const std::string& value, AgentConfig* config);

// Parses "127.0.0.1:13133", "[::1]:13133" or ":13133" (all interfaces).
bool ParseListenAddress(const std::string& text, std::string* host, int* port);

// OTEL_METRIC_EXPORT_INTERVAL (ms) and OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE.
// Returns "" or one sentence naming the variable and what is wrong with it.
std::string ApplyMetricsEnvironment(const exporters::otlp::EnvLookup& env, AgentConfig* config);

// Checks what the layers produced together (endpoints resolve to valid URLs, ...).
std::string ValidateAgentConfig(const AgentConfig& config);

}  // namespace flowtracer::cli
