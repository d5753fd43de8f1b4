// Caller -> callee totals over a capture: count, errors, p50 and p99 latency. A call
// between two traced services on this host is counted once (from the server span), its
// caller named by the client span that is its parent; only callers never seen as a span
// are named by address.
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/spans/span.h"

namespace flowtracer::spans {

struct CallSummaryRow {
  std::string caller;
  std::string callee;
  uint64_t count = 0;
  uint64_t errors = 0;
  double p50_ms = 0;
  double p99_ms = 0;
};

class CallSummary {
 public:
  static constexpr size_t kMaxSamplesPerEdge = 10000;  // reservoir beyond this
  static constexpr size_t kMaxEdges = 10000;           // the rest share one "(other)" edge

  void Add(const Span& span);
  // A message published by `producer_service` and processed by `consumer` (both on this
  // host): an edge producer -> "consumer via subject".
  void AddMessageHop(const std::string& producer_service, const Span& consumer);
  std::vector<CallSummaryRow> Rows() const;

 private:
  struct Edge {
    uint64_t count = 0;
    uint64_t errors = 0;
    std::vector<uint64_t> durations_ns;
  };
  struct EdgeKey {
    std::string service;
    bool server = false;
    std::string peer_endpoint;  // "addr:port" of the other side
    bool operator<(const EdgeKey& o) const {
      return std::tie(service, server, peer_endpoint) < std::tie(o.service, o.server, o.peer_endpoint);
    }
  };
  // A server span whose parent (a client span on this host) has not been added yet.
  struct WaitingServerSpan {
    std::string service;
    std::string caller_endpoint;
    uint64_t duration_ns;
    bool error;
  };
  static constexpr size_t kMaxKnownClientSpans = 65536;
  static constexpr size_t kMaxWaitingServerSpans = 65536;

  void AddSample(Edge& edge, uint64_t duration_ns, bool error);
  void AddByEndpoint(const std::string& service, bool server, const std::string& peer_endpoint,
                     uint64_t duration_ns, bool error);
  void AddNamed(const std::string& caller, const std::string& callee, uint64_t duration_ns, bool error);

  std::map<EdgeKey, Edge> edges_;
  // (caller, callee) when both names are known: message hops, and server spans whose
  // parent is a client span seen here (the ephemeral port never names the caller then).
  std::map<std::pair<std::string, std::string>, Edge> named_edges_;
  std::unordered_map<std::string, std::string> service_by_endpoint_;
  std::unordered_map<uint64_t, std::string> client_service_by_span_id_;
  std::unordered_map<uint64_t, std::vector<WaitingServerSpan>> servers_waiting_for_parent_;
  size_t waiting_server_spans_ = 0;
  std::mt19937_64 random_{12345};
};

}  // namespace flowtracer::spans
