#include "agent/cli/agent_config.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <charconv>
#include <cstring>
#include <functional>
#include <map>

#include "agent/cli/tracer_session.h"
#include "agent/loader/ring_size.h"

namespace flowtracer::cli {
namespace {

using exporters::otlp::KeyValues;

// A failed conversion: the message is completed with the file and key by the caller.
struct BadValue {
  std::string reason;
};

std::string Scalar(const YAML::Node& node) {
  if (!node.IsScalar()) throw BadValue{"expected a single value"};
  return node.Scalar();
}

template <typename T>
T Number(const std::string& text, T min, T max) {
  T value{};
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < min || value > max)
    throw BadValue{"'" + text + "' is not a whole number from " + std::to_string(min) + " to " + std::to_string(max)};
  return value;
}

uint64_t DurationMs(const std::string& text) {
  uint64_t ns = 0;
  if (!ParseDuration(text, &ns)) throw BadValue{"'" + text + "' is not a duration: use e.g. 10s or 500ms"};
  return ns / 1000000;
}

template <typename T>
std::vector<T> NumberList(const YAML::Node& node, T min, T max) {
  std::vector<T> out;
  if (node.IsScalar()) out.push_back(Number<T>(node.Scalar(), min, max));
  else if (node.IsSequence())
    for (const YAML::Node& item : node) out.push_back(Number<T>(Scalar(item), min, max));
  else throw BadValue{"expected a number or a list of numbers"};
  return out;
}

KeyValues StringMap(const YAML::Node& node) {
  if (!node.IsMap()) throw BadValue{"expected a map of names to values"};
  KeyValues out;
  for (const auto& item : node) out.emplace_back(item.first.as<std::string>(), Scalar(item.second));
  return out;
}

std::string Endpoint(const std::string& url) {
  std::string reason;
  if (!exporters::otlp::ParseEndpointUrl(url, &reason)) throw BadValue{reason};
  return url;
}

// A file named for TLS: read and checked at start (otlp::CertificateError).
std::string PemFile(const std::string& path) {
  if (path.empty()) throw BadValue{"empty: name a PEM file"};
  return path;
}

// Settings with one value: the same parsing serves the file and the flags.
using ScalarSetter = std::function<void(const std::string&, AgentConfig*)>;
// Settings that are lists or maps: file only.
using NodeSetter = std::function<void(const YAML::Node&, AgentConfig*)>;
struct Setting {
  ScalarSetter scalar;
  NodeSetter node;
};
using Section = std::map<std::string, Setting>;

Setting One(ScalarSetter setter) { return {std::move(setter), nullptr}; }
Setting Many(NodeSetter setter) { return {nullptr, std::move(setter)}; }

const std::map<std::string, Section>& Schema() {
  using Config = AgentConfig;
  using Text = const std::string&;
  static const std::map<std::string, Section> schema = {
      {"exporter",
       {
           {"endpoint", One([](Text v, Config* c) { c->exporter.endpoint = Endpoint(v); })},
           {"traces_endpoint", One([](Text v, Config* c) { c->exporter.traces_endpoint = Endpoint(v); })},
           {"metrics_endpoint", One([](Text v, Config* c) { c->exporter.metrics_endpoint = Endpoint(v); })},
           {"protocol", One([](Text v, Config* c) {
              if (!exporters::otlp::ParseProtocol(v, &c->exporter.protocol))
                throw BadValue{"'" + v + "' is not http/protobuf or grpc"};
            })},
           {"headers", Many([](const YAML::Node& n, Config* c) { c->exporter.headers = StringMap(n); })},
           {"compression", One([](Text v, Config* c) {
              if (v != "gzip" && v != "none") throw BadValue{"'" + v + "' is not gzip or none"};
              c->exporter.gzip = v == "gzip";
            })},
           {"timeout", One([](Text v, Config* c) {
              c->exporter.timeout_ms = DurationMs(v);
              if (!c->exporter.timeout_ms) throw BadValue{"must be more than 0"};
            })},
           {"certificate", One([](Text v, Config* c) { c->exporter.certificate = PemFile(v); })},
           {"client_certificate", One([](Text v, Config* c) { c->exporter.client_certificate = PemFile(v); })},
           {"client_key", One([](Text v, Config* c) { c->exporter.client_key = PemFile(v); })},
           {"max_queue_spans", One([](Text v, Config* c) { c->exporter.max_queue_spans = Number<uint32_t>(v, 1, 1u << 20); })},
           {"max_export_batch_spans",
            One([](Text v, Config* c) { c->exporter.max_export_batch_spans = Number<uint32_t>(v, 1, 1u << 16); })},
           {"schedule_delay", One([](Text v, Config* c) { c->exporter.schedule_delay_ms = DurationMs(v); })},
           {"max_attempts", One([](Text v, Config* c) { c->exporter.max_attempts = Number<uint32_t>(v, 1, 100); })},
       }},
      {"trace",
       {
           {"pids", Many([](const YAML::Node& n, Config* c) { c->pids = NumberList<uint32_t>(n, 1, 1u << 22); })},
           {"ports", Many([](const YAML::Node& n, Config* c) { c->ports = NumberList<uint16_t>(n, 1, 65535); })},
           {"hooks", One([](Text v, Config* c) {
              if (v != "auto" && v != "socket" && v != "syscall") throw BadValue{"'" + v + "' is not auto, socket or syscall"};
              c->hooks = v;
            })},
           {"max_payload_bytes",
            One([](Text v, Config* c) { c->max_payload_bytes = Number<uint32_t>(v, 64, FT_MAX_PAYLOAD); })},
           {"ring_buffer_mb", One([](Text v, Config* c) {
              const uint32_t mb = Number<uint32_t>(v, 0, 1024);
              if (!loader::ValidRingBufferMb(mb))
                throw BadValue{"'" + v + "' is not 0 (2 MiB per CPU) or a power of two from 1 to 1024"};
              c->ring_buffer_mb = mb;
            })},
           {"max_cpu_percent",
            One([](Text v, Config* c) { c->max_cpu_percent = Number<uint32_t>(v, 0, 1000); })},
           {"services", Many([](const YAML::Node& n, Config* c) {
              c->services.clear();
              for (const auto& [name, target] : StringMap(n)) c->services.push_back(name + "=" + target);
            })},
       }},
      {"resource",
       {
           {"attributes", Many([](const YAML::Node& n, Config* c) { c->exporter.resource_attributes = StringMap(n); })},
       }},
      {"health",
       {
           {"listen", One([](Text v, Config* c) {
              std::string host;
              int port = 0;
              if (!ParseListenAddress(v, &host, &port)) throw BadValue{"'" + v + "' is not HOST:PORT"};
              c->health_listen = v;
            })},
       }},
      {"metrics",
       {
           {"interval", One([](Text v, Config* c) { c->metrics_interval_ms = DurationMs(v); })},
           {"temporality", One([](Text v, Config* c) {
              if (v != "cumulative" && v != "delta") throw BadValue{"'" + v + "' is not cumulative or delta"};
              c->metrics_temporality = v;
            })},
           {"prometheus_port", One([](Text v, Config* c) { c->prometheus_port = Number<uint16_t>(v, 0, 65535); })},
           {"prometheus_address", One([](Text v, Config* c) { c->prometheus_address = v; })},
           {"peer_services", Many([](const YAML::Node& n, Config* c) {
              c->peer_services.clear();
              for (const auto& [name, address] : StringMap(n)) c->peer_services.push_back(name + "=" + address);
            })},
       }},
      {"shutdown",
       {
           {"timeout", One([](Text v, Config* c) { c->shutdown_timeout_ms = DurationMs(v); })},
       }},
  };
  return schema;
}

template <typename Map>
std::string Names(const Map& map) {
  std::string out;
  for (const auto& [name, unused] : map) out += (out.empty() ? "" : ", ") + name;
  return out;
}

}  // namespace

std::string ApplyMetricsEnvironment(const exporters::otlp::EnvLookup& env, AgentConfig* config) {
  if (auto interval = env("OTEL_METRIC_EXPORT_INTERVAL")) {
    uint64_t ms = 0;
    auto [end, error] = std::from_chars(interval->data(), interval->data() + interval->size(), ms);
    if (interval->empty() || error != std::errc() || end != interval->data() + interval->size())
      return "OTEL_METRIC_EXPORT_INTERVAL: '" + *interval + "' is not a whole number of milliseconds";
    config->metrics_interval_ms = ms;
  }
  if (auto preference = env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")) {
    std::string lower;
    for (char ch : *preference) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    // "lowmemory" is delta for counters and histograms, the only instruments here.
    if (lower == "lowmemory") lower = "delta";
    if (lower != "cumulative" && lower != "delta")
      return "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: '" + *preference +
             "' is not cumulative, delta or lowmemory";
    config->metrics_temporality = lower;
  }
  return "";
}

bool ParseListenAddress(const std::string& text, std::string* host, int* port) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::string h = text.substr(0, colon), p = text.substr(colon + 1);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty()) h = "0.0.0.0";
  int value = 0;
  auto [end, error] = std::from_chars(p.data(), p.data() + p.size(), value);
  if (p.empty() || error != std::errc() || end != p.data() + p.size() || value < 1 || value > 65535) return false;
  *host = h;
  *port = value;
  return true;
}

std::string LoadAgentConfigFile(const std::string& path, AgentConfig* config) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return path + ": cannot be read: " + strerror(errno);
  } catch (const YAML::ParserException& error) {
    return path + ": line " + std::to_string(error.mark.line + 1) + ", column " + std::to_string(error.mark.column + 1) +
           ": not valid YAML: " + error.msg;
  }
  if (root.IsNull()) return "";  // an empty file: all defaults
  if (!root.IsMap()) return path + ": expected sections (" + Names(Schema()) + ") at the top level";
  for (const auto& section : root) {
    std::string section_name = section.first.as<std::string>();
    auto known = Schema().find(section_name);
    if (known == Schema().end())
      return path + ": " + section_name + ": unknown key (known: " + Names(Schema()) + ")";
    if (section.second.IsNull()) continue;
    if (!section.second.IsMap()) return path + ": " + section_name + ": expected a map of settings";
    for (const auto& item : section.second) {
      std::string key = item.first.as<std::string>();
      std::string where = path + ": " + section_name + "." + key + ": ";
      auto setter = known->second.find(key);
      if (setter == known->second.end()) return where + "unknown key (known: " + Names(known->second) + ")";
      try {
        const Setting& setting = setter->second;
        if (setting.scalar) setting.scalar(Scalar(item.second), config);
        else setting.node(item.second, config);
      } catch (const BadValue& bad) {
        return where + bad.reason;
      } catch (const YAML::Exception& error) {
        return where + error.msg;
      }
    }
  }
  return "";
}

std::string SetAgentSetting(const std::string& key, const std::string& value, AgentConfig* config) {
  size_t dot = key.find('.');
  auto section = Schema().find(key.substr(0, dot));
  if (dot == std::string::npos || section == Schema().end()) return "unknown setting " + key;
  auto setting = section->second.find(key.substr(dot + 1));
  if (setting == section->second.end() || !setting->second.scalar) return "unknown setting " + key;
  try {
    setting->second.scalar(value, config);
  } catch (const BadValue& bad) {
    return bad.reason;
  }
  return "";
}

std::string ValidateAgentConfig(const AgentConfig& config) {
  using exporters::otlp::Signal;
  for (Signal signal : {Signal::kTraces, Signal::kMetrics}) {
    std::string reason;
    if (!exporters::otlp::ParseEndpointUrl(exporters::otlp::ResolveEndpoint(config.exporter, signal), &reason))
      return "OTLP endpoint " + reason;
  }
  std::string host;
  int port = 0;
  if (!ParseListenAddress(config.health_listen, &host, &port))
    return "health listen address '" + config.health_listen + "' is not HOST:PORT";
  for (const std::string& mapping : config.services) {
    size_t equals = mapping.find('=');
    if (equals == std::string::npos || equals == 0 || equals + 1 == mapping.size())
      return "service '" + mapping + "' is not NAME=PID or NAME=EXECUTABLE";
  }
  for (const std::string& mapping : config.peer_services) {
    size_t equals = mapping.find('=');
    if (equals == std::string::npos || equals == 0 || equals + 1 == mapping.size())
      return "peer service '" + mapping + "' is not NAME=ADDRESS or NAME=ADDRESS:PORT";
  }
  if (config.metrics_temporality != "cumulative" && config.metrics_temporality != "delta")
    return "metrics temporality '" + config.metrics_temporality + "' is not cumulative or delta";
  if (config.metrics_interval_ms != 0 && config.metrics_interval_ms < 100)
    return "metrics interval " + std::to_string(config.metrics_interval_ms) + "ms is too short: use 100ms or more, or 0 to turn OTLP metrics off";
  return "";
}

}  // namespace flowtracer::cli
