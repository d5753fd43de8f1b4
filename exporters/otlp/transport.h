// How serialized OTLP requests reach a receiver, whatever the signal: the span exporter
// and the metrics exporter both hand a Transport the bytes of an Export*ServiceRequest.
// Implementations: OTLP/HTTP with protobuf bodies (cpp-httplib) and OTLP/gRPC (grpc++).
// Tests inject a fake.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flowtracer::exporters::otlp {

enum class Signal { kTraces, kMetrics };

// A request's bytes as pieces, sent in order without being joined first: a span request is
// mostly encoded spans, each in its own buffer, and joining them was a copy of every byte.
using RequestPieces = std::span<const std::string_view>;
inline size_t TotalSize(RequestPieces pieces) {
  size_t size = 0;
  for (std::string_view piece : pieces) size += piece.size();
  return size;
}
inline std::string Join(RequestPieces pieces) {  // for what needs the bytes in one place
  std::string joined;
  joined.reserve(TotalSize(pieces));
  for (std::string_view piece : pieces) joined.append(piece);
  return joined;
}
enum class Protocol { kHttpProtobuf, kGrpc };

struct SendResult {
  enum class Outcome {
    kSuccess,    // the receiver took the request (it may still reject part of it)
    kRetryable,  // 429/502/503/504, gRPC UNAVAILABLE/RESOURCE_EXHAUSTED/..., no connection
    kFailed,     // anything else: retrying would not help
  };
  Outcome outcome = Outcome::kFailed;
  std::string error;                     // "HTTP 503", "connection refused", ...
  std::optional<uint64_t> retry_after_ms;  // the receiver's Retry-After, when it gave one
  std::string response;                  // serialized Export*ServiceResponse on success
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Blocks for at most timeout_ms. Never throws. Called from one thread at a time. The
  // pieces stay valid until it returns.
  virtual SendResult Send(RequestPieces request, uint64_t timeout_ms) = 0;
  virtual std::string Describe() const = 0;  // "http://collector:4318/v1/traces (gzip)"
  // Whether Send starts no thread: the span exporter's thread may then run at SCHED_IDLE,
  // a policy new threads inherit (gRPC starts helpers from the thread that sends).
  virtual bool StartsNoThreadsWhenSending() const { return false; }

  // Shutdown: a request still running at `deadline` is abandoned (Send returns kRetryable).
  // Callable from any thread.
  void SetDeadline(std::chrono::steady_clock::time_point deadline) {
    deadline_ns_.store(deadline.time_since_epoch().count(), std::memory_order_relaxed);
    DeadlineChanged();
  }

 protected:
  // For a transport that waits on the deadline rather than polling it.
  virtual void DeadlineChanged() {}
  std::chrono::steady_clock::time_point Deadline() const {
    return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(deadline_ns_.load(std::memory_order_relaxed)));
  }

 private:
  std::atomic<std::chrono::steady_clock::rep> deadline_ns_{std::chrono::steady_clock::time_point::max().time_since_epoch().count()};
};

// An OTLP endpoint, "http(s)://host[:port][/path]", taken apart once by the agent
// (otlp_options.h: ParseEndpointUrl); the transport modules connect to its parts.
struct EndpointUrl {
  bool tls = false;     // https
  std::string host;     // as written; an IPv6 address without its brackets
  int port = 0;         // 80 or 443 when the URL names none
  std::string target;   // path and query, "/" when the URL has neither
  // "host:port", an IPv6 address in brackets: gRPC's channel target.
  std::string Authority() const {
    return (host.find(':') == std::string::npos ? host : "[" + host + "]") + ":" + std::to_string(port);
  }
};

// An HTTP proxy the environment names (otlp_options.h: ProxyFor).
struct HttpProxy {
  std::string host;
  int port = 1080;
  std::string user, password;  // decoded; empty when the URL had none
  std::string variable;        // where it came from, for messages: "https_proxy"
};

struct TransportOptions {
  Protocol protocol = Protocol::kHttpProtobuf;
  Signal signal = Signal::kTraces;
  std::string endpoint;  // full URL: http(s)://host:port/v1/traces, or http(s)://host:port for gRPC
  std::vector<std::pair<std::string, std::string>> headers;
  bool gzip = false;
  // OTLP/HTTP only (gRPC reads the proxy variables itself).
  std::optional<HttpProxy> proxy;
  // PEM file of the authorities an https endpoint is verified against, in place of the
  // system's; empty: the system's.
  std::string ca_file;
  // PEM files presented to a collector that asks for a client certificate; both or neither.
  std::string client_certificate_file, client_key_file;
};

// Returns nullptr and sets *error when the endpoint cannot be used.
std::unique_ptr<Transport> MakeHttpTransport(const TransportOptions& options, std::string* error);
std::unique_ptr<Transport> MakeGrpcTransport(const TransportOptions& options, std::string* error);
std::unique_ptr<Transport> MakeTransport(const TransportOptions& options, std::string* error);

// The delay in a gRPC error's google.rpc.RetryInfo detail (serialized google.rpc.Status).
std::optional<uint64_t> GrpcRetryDelayMs(const std::string& status_details);

// "/opentelemetry.proto.collector.trace.v1.TraceService/Export" and the metrics one.
std::string GrpcMethod(Signal signal);

}  // namespace flowtracer::exporters::otlp
