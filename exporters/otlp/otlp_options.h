// Where and how OTLP goes: defaults, then the standard OTEL_* environment variables
// (https://opentelemetry.io/docs/specs/otel/protocol/exporter/) and the proxy variables,
// then whatever the caller (the agent's YAML file and flags) sets on top.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "exporters/otlp/transport.h"

namespace flowtracer::exporters::otlp {

using KeyValues = std::vector<std::pair<std::string, std::string>>;
struct RetryPolicy;  // retrying_sender.h

// The proxy variables, read as libcurl reads them (most OpenTelemetry SDKs agree): an
// https endpoint uses https_proxy or HTTPS_PROXY, an http one http_proxy (not HTTP_PROXY:
// a CGI environment sets that from a request's Proxy header), either falls back to
// all_proxy or ALL_PROXY, and no_proxy or NO_PROXY exempts hosts.
// Kept as set: only the one an OTLP/HTTP signal goes through is parsed (ProxyError), so a
// variable meant for other programs (all_proxy=socks://..., say) never stops the agent.
struct ProxyVariable {
  std::string name;  // "https_proxy"
  std::string url;
};
struct ProxySettings {
  std::optional<ProxyVariable> https, http, all;
  std::string no_proxy;  // "*", or hosts, domains (".example.com" or "example.com"), addresses and CIDRs
};

struct OtlpExporterOptions {
  // Base endpoint: "/v1/traces" and "/v1/metrics" are appended for OTLP/HTTP. Empty means
  // http://localhost:4318 (OTLP/HTTP) or http://localhost:4317 (gRPC).
  std::string endpoint;
  std::string traces_endpoint;   // used as is when set
  std::string metrics_endpoint;  // used as is when set
  Protocol protocol = Protocol::kHttpProtobuf;
  KeyValues headers;
  bool gzip = false;
  uint64_t timeout_ms = 10000;  // per export request
  // PEM file of the certificate authorities an https endpoint is verified against
  // (OTEL_EXPORTER_OTLP_CERTIFICATE); empty: the system's (for OTLP/HTTP, SSL_CERT_FILE too).
  std::string certificate;
  // PEM files of the certificate and key the agent presents to an https collector that asks
  // for one (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE, ..._CLIENT_KEY): mutual TLS. Both or neither.
  std::string client_certificate, client_key;
  KeyValues resource_attributes;  // OTEL_RESOURCE_ATTRIBUTES: added to every resource
  ProxySettings proxy;            // OTLP/HTTP only: gRPC reads the same variables itself

  // A signal's own settings (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, ..._METRICS_HEADERS, ...),
  // over the shared ones above; unset, the signal uses those. Read them through
  // TransportOptionsFor, ResolveEndpoint and TimeoutMsFor.
  struct SignalSettings {
    std::optional<Protocol> protocol;
    std::optional<KeyValues> headers;
    std::optional<bool> gzip;
    std::optional<uint64_t> timeout_ms;
    std::optional<std::string> certificate;
    std::optional<std::string> client_certificate, client_key;
  };
  SignalSettings traces;
  SignalSettings metrics;

  // Batching (spans): a request goes out when this many are queued, or after the delay.
  uint32_t max_export_batch_spans = 512;
  uint64_t schedule_delay_ms = 1000;
  uint32_t max_queue_spans = 8192;  // when full, the oldest span is dropped and counted

  // Retries of retryable failures: exponential backoff with jitter, Retry-After honoured.
  uint32_t max_attempts = 5;
  uint64_t initial_backoff_ms = 1000;
  uint64_t max_backoff_ms = 5000;
  uint64_t max_retry_after_ms = 30000;  // a larger Retry-After is capped to this
};

using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup ProcessEnvironment();

// Applies the OTEL_EXPORTER_OTLP_* variables that are set (the shared ones and the
// TRACES_/METRICS_ ones), OTEL_RESOURCE_ATTRIBUTES and the proxy variables. Returns "" or
// one sentence naming the variable and what is wrong with it.
std::string ApplyOtelEnvironment(const EnvLookup& env, OtlpExporterOptions* options);

// "http/protobuf" or "grpc"; false otherwise.
bool ParseProtocol(const std::string& text, Protocol* protocol);
std::string ProtocolName(Protocol protocol);

// "k1=v1,k2=v2" with percent-encoded values (W3C Baggage style, as the OTEL variables use).
bool ParseKeyValueList(const std::string& text, KeyValues* out, std::string* reason);

// An http:// or https:// URL with a host and a valid port, taken apart; nullopt with
// `reason` saying what is wrong otherwise. The one place an endpoint URL is split.
std::optional<EndpointUrl> ParseEndpointUrl(const std::string& url, std::string* reason);

// "[http://][user:password@]host[:port]" (port 1080 when none, as libcurl); a proxy
// reached over TLS or SOCKS, or a user without a password, is refused with the reason.
bool ParseProxyUrl(const std::string& text, HttpProxy* proxy, std::string* reason);
// Whether a no_proxy list exempts `host` (a name or an IP address, IPv6 without brackets).
bool NoProxyCovers(const std::string& no_proxy, const std::string& host);
// The variable whose proxy an OTLP/HTTP request to `endpoint` goes through, if any.
std::optional<ProxyVariable> ProxyFor(const ProxySettings& settings, const std::string& endpoint);
// "" when the proxy each OTLP/HTTP signal goes through parses, else what is wrong, naming
// the variable. TransportOptionsFor leaves out a proxy that does not parse: check first.
std::string ProxyError(const OtlpExporterOptions& options);

// The URL the signal goes to, after the defaults and the /v1/<signal> rule.
std::string ResolveEndpoint(const OtlpExporterOptions& options, Signal signal);

TransportOptions TransportOptionsFor(const OtlpExporterOptions& options, Signal signal);

// "" when the certificate files each signal uses (authorities, client certificate and key)
// can be read and are PEM, and a client certificate comes with its key; else what is wrong,
// naming the file.
std::string CertificateError(const OtlpExporterOptions& options);

// The signal's protocol and per-request timeout, its own settings first.
Protocol ProtocolFor(const OtlpExporterOptions& options, Signal signal);
uint64_t TimeoutMsFor(const OtlpExporterOptions& options, Signal signal);

// How the signal's exports are retried: the attempts and backoff, and its timeout.
RetryPolicy RetryPolicyFor(const OtlpExporterOptions& options, Signal signal);

}  // namespace flowtracer::exporters::otlp
