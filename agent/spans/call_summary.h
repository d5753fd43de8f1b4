// Caller -> callee totals over a capture: count, errors, p50 and p99 latency. A call
// between two traced services on this host is counted once (from the server span).
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
  void AddSample(Edge& edge, uint64_t duration_ns, bool error);

  std::map<EdgeKey, Edge> edges_;
  std::map<std::pair<std::string, std::string>, Edge> message_edges_;  // (caller, callee)
  std::unordered_map<std::string, std::string> service_by_endpoint_;
  std::mt19937_64 random_{12345};
};

}  // namespace flowtracer::spans
