#include "exporters/otlp/otlp_options.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "exporters/otlp/retrying_sender.h"

namespace flowtracer::exporters::otlp {
namespace {

std::string Trim(std::string_view text) {
  size_t begin = 0, end = text.size();
  while (begin < end && isspace(static_cast<unsigned char>(text[begin]))) ++begin;
  while (end > begin && isspace(static_cast<unsigned char>(text[end - 1]))) --end;
  return std::string(text.substr(begin, end - begin));
}

bool PercentDecode(std::string_view text, std::string* out) {
  out->clear();
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out->push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size() || !isxdigit(static_cast<unsigned char>(text[i + 1])) ||
        !isxdigit(static_cast<unsigned char>(text[i + 2])))
      return false;
    out->push_back(static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16)));
    i += 2;
  }
  return true;
}

std::string Lower(std::string text) {
  for (char& c : text) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  return text;
}

bool ParsePort(std::string_view text, int* port) {
  unsigned value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535)
    return false;
  *port = static_cast<int>(value);
  return true;
}

// `address` within `cidr` ("10.0.0.0/8", "fd00::/8"); false when either is not an address.
bool InCidr(const std::string& address, const std::string& cidr) {
  size_t slash = cidr.find('/');
  std::string network = cidr.substr(0, slash);
  int family = network.find(':') == std::string::npos ? AF_INET : AF_INET6;
  unsigned char want[16], have[16];
  if (inet_pton(family, network.c_str(), want) != 1 || inet_pton(family, address.c_str(), have) != 1) return false;
  const int bits_max = family == AF_INET ? 32 : 128;
  int bits = bits_max;
  if (slash != std::string::npos) {
    auto [end, error] = std::from_chars(cidr.data() + slash + 1, cidr.data() + cidr.size(), bits);
    if (error != std::errc() || end != cidr.data() + cidr.size() || bits < 0 || bits > bits_max) return false;
  }
  if (memcmp(want, have, bits / 8) != 0) return false;
  if (bits % 8 == 0) return true;
  unsigned char mask = static_cast<unsigned char>(0xff << (8 - bits % 8));
  return (want[bits / 8] & mask) == (have[bits / 8] & mask);
}

}  // namespace

bool ParseProxyUrl(const std::string& text, HttpProxy* proxy, std::string* reason) {
  std::string rest = text;
  if (size_t scheme_end = rest.find("://"); scheme_end != std::string::npos) {
    std::string scheme = Lower(rest.substr(0, scheme_end));
    if (scheme != "http") {
      *reason = "'" + text + "': only http:// proxies are supported (not " + scheme + "://)";
      return false;
    }
    rest.erase(0, scheme_end + 3);
  }
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  HttpProxy parsed;
  if (size_t at = rest.rfind('@'); at != std::string::npos) {
    std::string credentials = rest.substr(0, at);
    rest.erase(0, at + 1);
    size_t colon = credentials.find(':');
    if (!PercentDecode(credentials.substr(0, colon), &parsed.user) ||
        (colon != std::string::npos && !PercentDecode(credentials.substr(colon + 1), &parsed.password))) {
      *reason = "'" + text + "' has a malformed %-escape in its credentials";
      return false;
    }
    // cpp-httplib sends Proxy-Authorization only with both; a user alone would go unsent.
    if (parsed.user.empty() != parsed.password.empty()) {
      *reason = "'" + text + "': give the proxy both a user and a password, or neither";
      return false;
    }
  }
  std::string port;
  if (!rest.empty() && rest[0] == '[') {
    size_t close = rest.find(']');
    if (close == std::string::npos) {
      *reason = "'" + text + "' has an unclosed IPv6 address";
      return false;
    }
    parsed.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') {
        *reason = "'" + text + "' is not host:port";
        return false;
      }
      port = rest.substr(close + 2);
    } else {
      port = "1080";
    }
  } else {
    size_t colon = rest.find(':');
    parsed.host = rest.substr(0, colon);
    port = colon == std::string::npos ? "1080" : rest.substr(colon + 1);
  }
  if (parsed.host.empty() || parsed.host.find_first_of("/?# ") != std::string::npos) {
    *reason = "'" + text + "' has no usable host";
    return false;
  }
  if (!ParsePort(port, &parsed.port)) {
    *reason = "'" + text + "' has an invalid port '" + port + "'";
    return false;
  }
  *proxy = std::move(parsed);
  return true;
}

bool NoProxyCovers(const std::string& no_proxy, const std::string& host) {
  const std::string name = Lower(host);
  size_t start = 0;
  while (start <= no_proxy.size()) {
    size_t comma = no_proxy.find(',', start);
    if (comma == std::string::npos) comma = no_proxy.size();
    std::string entry = Lower(Trim(std::string_view(no_proxy).substr(start, comma - start)));
    start = comma + 1;
    if (entry == "*") return true;
    if (!entry.empty() && entry[0] == '.') entry.erase(0, 1);
    if (entry.size() > 2 && entry.front() == '[' && entry.back() == ']') entry = entry.substr(1, entry.size() - 2);
    if (entry.empty()) continue;
    if (entry.find('/') != std::string::npos) {
      if (InCidr(name, entry)) return true;
      continue;
    }
    if (name == entry || InCidr(name, entry)) return true;  // an address in any spelling
    if (name.size() > entry.size() && name.compare(name.size() - entry.size(), entry.size(), entry) == 0 &&
        name[name.size() - entry.size() - 1] == '.')
      return true;
  }
  return false;
}

std::optional<ProxyVariable> ProxyFor(const ProxySettings& settings, const std::string& endpoint) {
  std::string reason;
  std::optional<EndpointUrl> url = ParseEndpointUrl(endpoint, &reason);
  if (!url) return std::nullopt;  // refused before any request is made
  const std::optional<ProxyVariable>& own = url->tls ? settings.https : settings.http;
  const std::optional<ProxyVariable>& proxy = own ? own : settings.all;
  if (!proxy || NoProxyCovers(settings.no_proxy, Lower(url->host))) return std::nullopt;
  return proxy;
}

namespace {
// The proxy `signal` goes through, parsed; false with `error` naming the variable.
bool SignalProxy(const OtlpExporterOptions& options, Signal signal, std::optional<HttpProxy>* proxy,
                 std::string* error) {
  proxy->reset();
  if (ProtocolFor(options, signal) != Protocol::kHttpProtobuf) return true;  // gRPC reads them itself
  std::optional<ProxyVariable> variable = ProxyFor(options.proxy, ResolveEndpoint(options, signal));
  if (!variable) return true;
  HttpProxy parsed;
  std::string reason;
  if (!ParseProxyUrl(variable->url, &parsed, &reason)) {
    *error = variable->name + ": " + reason;
    return false;
  }
  parsed.variable = variable->name;
  *proxy = std::move(parsed);
  return true;
}
}  // namespace

std::string ProxyError(const OtlpExporterOptions& options) {
  std::optional<HttpProxy> proxy;
  std::string error;
  for (Signal signal : {Signal::kTraces, Signal::kMetrics})
    if (!SignalProxy(options, signal, &proxy, &error)) return error;
  return "";
}

EnvLookup ProcessEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = getenv(name.c_str());
    if (!value || !*value) return std::nullopt;  // set but empty counts as unset (spec)
    return std::string(value);
  };
}

bool ParseProtocol(const std::string& text, Protocol* protocol) {
  if (text == "http/protobuf") *protocol = Protocol::kHttpProtobuf;
  else if (text == "grpc") *protocol = Protocol::kGrpc;
  else return false;
  return true;
}

std::string ProtocolName(Protocol protocol) {
  return protocol == Protocol::kGrpc ? "grpc" : "http/protobuf";
}

bool ParseKeyValueList(const std::string& text, KeyValues* out, std::string* reason) {
  KeyValues parsed;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string item = Trim(std::string_view(text).substr(start, comma - start));
    start = comma + 1;
    if (item.empty()) continue;
    size_t equals = item.find('=');
    if (equals == std::string::npos || equals == 0) {
      *reason = "'" + item + "' is not key=value";
      return false;
    }
    std::string key = Trim(item.substr(0, equals)), value;
    if (!PercentDecode(Trim(item.substr(equals + 1)), &value)) {
      *reason = "'" + item + "' has a malformed %-escape";
      return false;
    }
    parsed.emplace_back(key, value);
  }
  *out = std::move(parsed);
  return true;
}

std::optional<EndpointUrl> ParseEndpointUrl(const std::string& url, std::string* reason) {
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) {
    *reason = "'" + url + "' is not a URL: use http://host:port or https://host:port";
    return std::nullopt;
  }
  std::string scheme = url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") {
    *reason = "'" + url + "' has scheme '" + scheme + "': use http:// or https://";
    return std::nullopt;
  }
  EndpointUrl parsed;
  parsed.tls = scheme == "https";
  size_t authority_start = scheme_end + 3;
  size_t authority_end = std::min(url.find_first_of("/?#", authority_start), url.size());
  std::string authority = url.substr(authority_start, authority_end - authority_start);
  std::optional<std::string> port;  // the text after the host's ':'
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) {
      *reason = "'" + url + "' has an unclosed IPv6 address";
      return std::nullopt;
    }
    parsed.host = authority.substr(1, close - 1);
    std::string after = authority.substr(close + 1);
    if (!after.empty() && after[0] != ':') {
      *reason = "'" + url + "' has '" + after + "' after its IPv6 address: use [address]:port";
      return std::nullopt;
    }
    if (!after.empty()) port = after.substr(1);
    if (parsed.host.find(':') == std::string::npos) {
      *reason = "'" + url + "' has '" + parsed.host + "' in brackets, which is not an IPv6 address";
      return std::nullopt;
    }
  } else if (size_t colon = authority.rfind(':'); colon != std::string::npos) {
    parsed.host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  } else {
    parsed.host = authority;
  }
  if (parsed.host.empty()) {
    *reason = "'" + url + "' has no host";
    return std::nullopt;
  }
  bool bracketed = authority[0] == '[';
  if (!bracketed && parsed.host.find(':') != std::string::npos) {
    *reason = "'" + url + "' has an IPv6 address without brackets: use " + scheme + "://[address]:port";
    return std::nullopt;
  }
  for (char c : parsed.host) {
    bool allowed = isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' || (c == ':' && bracketed);
    if (!allowed) {
      *reason = "'" + url + "' has an invalid host '" + parsed.host + "'";
      return std::nullopt;
    }
  }
  parsed.port = parsed.tls ? 443 : 80;
  if (port && !ParsePort(*port, &parsed.port)) {
    *reason = "'" + url + "' has an invalid port '" + *port + "'";
    return std::nullopt;
  }
  // The request target: path and query; a fragment is never sent.
  std::string target = url.substr(authority_end, url.find('#', authority_end) - authority_end);
  parsed.target = target.empty() || target[0] != '/' ? "/" + target : target;
  return parsed;
}

namespace {

// The PROTOCOL, HEADERS, COMPRESSION and TIMEOUT variables named `prefix` + suffix that are
// set; "" or what is wrong, naming the variable.
std::string ReadTransportVariables(const EnvLookup& env, const std::string& prefix,
                                   OtlpExporterOptions::SignalSettings* out) {
  if (auto v = env(prefix + "PROTOCOL")) {
    Protocol protocol;
    if (!ParseProtocol(*v, &protocol)) return prefix + "PROTOCOL: '" + *v + "' is not http/protobuf or grpc";
    out->protocol = protocol;
  }
  if (auto v = env(prefix + "HEADERS")) {
    KeyValues headers;
    std::string reason;
    if (!ParseKeyValueList(*v, &headers, &reason)) return prefix + "HEADERS: " + reason;
    out->headers = std::move(headers);
  }
  if (auto v = env(prefix + "COMPRESSION")) {
    if (*v != "gzip" && *v != "none") return prefix + "COMPRESSION: '" + *v + "' is not gzip or none";
    out->gzip = *v == "gzip";
  }
  if (auto v = env(prefix + "TIMEOUT")) {
    uint64_t ms = 0;
    auto [end, error] = std::from_chars(v->data(), v->data() + v->size(), ms);
    if (error != std::errc() || end != v->data() + v->size() || ms == 0)
      return prefix + "TIMEOUT: '" + *v + "' is not a positive number of milliseconds";
    out->timeout_ms = ms;
  }
  for (auto [suffix, field] : {std::pair{"CERTIFICATE", &out->certificate},
                                std::pair{"CLIENT_CERTIFICATE", &out->client_certificate},
                                std::pair{"CLIENT_KEY", &out->client_key}}) {
    if (auto v = env(prefix + suffix)) {
      if (v->empty()) return prefix + suffix + ": empty: name a PEM file";
      *field = *v;
    }
  }
  return "";
}

}  // namespace

std::string ApplyOtelEnvironment(const EnvLookup& env, OtlpExporterOptions* options) {
  if (auto v = env("OTEL_EXPORTER_OTLP_ENDPOINT")) options->endpoint = *v;
  if (auto v = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) options->traces_endpoint = *v;
  if (auto v = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")) options->metrics_endpoint = *v;
  for (const char* name : {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                           "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"}) {
    std::string reason;
    if (auto v = env(name); v && !ParseEndpointUrl(*v, &reason)) return std::string(name) + ": " + reason;
  }
  // The shared variables replace the settings of the file (a HEADERS variable replaces its
  // headers, it does not add to them); a signal's own are kept apart, over them.
  OtlpExporterOptions::SignalSettings shared;
  if (std::string error = ReadTransportVariables(env, "OTEL_EXPORTER_OTLP_", &shared); !error.empty()) return error;
  options->protocol = shared.protocol.value_or(options->protocol);
  if (shared.headers) options->headers = std::move(*shared.headers);
  options->gzip = shared.gzip.value_or(options->gzip);
  options->timeout_ms = shared.timeout_ms.value_or(options->timeout_ms);
  options->certificate = shared.certificate.value_or(options->certificate);
  options->client_certificate = shared.client_certificate.value_or(options->client_certificate);
  options->client_key = shared.client_key.value_or(options->client_key);
  if (std::string error = ReadTransportVariables(env, "OTEL_EXPORTER_OTLP_TRACES_", &options->traces); !error.empty())
    return error;
  if (std::string error = ReadTransportVariables(env, "OTEL_EXPORTER_OTLP_METRICS_", &options->metrics);
      !error.empty())
    return error;
  if (auto v = env("OTEL_RESOURCE_ATTRIBUTES")) {
    std::string reason;
    if (!ParseKeyValueList(*v, &options->resource_attributes, &reason))
      return "OTEL_RESOURCE_ATTRIBUTES: " + reason;
  }
  // The lowercase name first, as libcurl; HTTP_PROXY is not read (ProxySettings says why).
  auto read_proxy = [&env](std::vector<const char*> names) -> std::optional<ProxyVariable> {
    for (const char* name : names)
      if (auto v = env(name)) return ProxyVariable{name, *v};
    return std::nullopt;
  };
  options->proxy.https = read_proxy({"https_proxy", "HTTPS_PROXY"});
  options->proxy.http = read_proxy({"http_proxy"});
  options->proxy.all = read_proxy({"all_proxy", "ALL_PROXY"});
  if (auto v = env("no_proxy")) options->proxy.no_proxy = *v;
  else if (auto upper = env("NO_PROXY")) options->proxy.no_proxy = *upper;
  return "";
}

namespace {
const OtlpExporterOptions::SignalSettings& SettingsOf(const OtlpExporterOptions& options, Signal signal) {
  return signal == Signal::kTraces ? options.traces : options.metrics;
}
}  // namespace

Protocol ProtocolFor(const OtlpExporterOptions& options, Signal signal) {
  return SettingsOf(options, signal).protocol.value_or(options.protocol);
}

uint64_t TimeoutMsFor(const OtlpExporterOptions& options, Signal signal) {
  return SettingsOf(options, signal).timeout_ms.value_or(options.timeout_ms);
}

RetryPolicy RetryPolicyFor(const OtlpExporterOptions& options, Signal signal) {
  RetryPolicy policy;
  policy.max_attempts = options.max_attempts;
  policy.initial_backoff_ms = options.initial_backoff_ms;
  policy.max_backoff_ms = options.max_backoff_ms;
  policy.max_retry_after_ms = options.max_retry_after_ms;
  policy.timeout_ms = TimeoutMsFor(options, signal);
  return policy;
}

std::string ResolveEndpoint(const OtlpExporterOptions& options, Signal signal) {
  const std::string& specific = signal == Signal::kTraces ? options.traces_endpoint : options.metrics_endpoint;
  if (!specific.empty()) return specific;
  bool grpc = ProtocolFor(options, signal) == Protocol::kGrpc;
  std::string base = options.endpoint;
  if (base.empty()) base = grpc ? "http://localhost:4317" : "http://localhost:4318";
  if (grpc) return base;
  if (base.back() == '/') base.pop_back();
  return base + (signal == Signal::kTraces ? "/v1/traces" : "/v1/metrics");
}

std::string CertificateError(const OtlpExporterOptions& options) {
  for (Signal signal : {Signal::kTraces, Signal::kMetrics}) {
    const std::string name = signal == Signal::kTraces ? "traces" : "metrics";
    const TransportOptions transport = TransportOptionsFor(options, signal);
    if (transport.client_certificate_file.empty() != transport.client_key_file.empty())
      return name + " client certificate and client key: set both or neither";
    for (auto [what, file] : {std::pair{"certificate", &transport.ca_file},
                              std::pair{"client certificate", &transport.client_certificate_file},
                              std::pair{"client key", &transport.client_key_file}}) {
      if (file->empty()) continue;
      // Read here, at start, so a wrong path is said once, not as every export failing.
      std::FILE* opened = std::fopen(file->c_str(), "r");
      if (!opened) return name + " " + what + " '" + *file + "' cannot be read: " + strerror(errno);
      char head[64] = {};
      const size_t got = std::fread(head, 1, sizeof(head) - 1, opened);
      std::fclose(opened);
      if (got == 0 || !std::strstr(head, "-----BEGIN"))
        return name + " " + what + " '" + *file + "' is not a PEM file (it should start with -----BEGIN)";
    }
  }
  return "";
}

TransportOptions TransportOptionsFor(const OtlpExporterOptions& options, Signal signal) {
  TransportOptions transport;
  const OtlpExporterOptions::SignalSettings& own = SettingsOf(options, signal);
  transport.protocol = ProtocolFor(options, signal);
  transport.signal = signal;
  transport.endpoint = ResolveEndpoint(options, signal);
  transport.headers = own.headers.value_or(options.headers);
  transport.gzip = own.gzip.value_or(options.gzip);
  transport.ca_file = own.certificate.value_or(options.certificate);
  transport.client_certificate_file = own.client_certificate.value_or(options.client_certificate);
  transport.client_key_file = own.client_key.value_or(options.client_key);
  std::string unused;  // ProxyError reports it
  SignalProxy(options, signal, &transport.proxy, &unused);
  return transport;
}

}  // namespace flowtracer::exporters::otlp
