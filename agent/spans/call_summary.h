// Caller -> callee totals over a capture: count, errors, p50 and p99 latency. A call
// between two traced services on this host is counted once (from the server span), its
// caller named by the client span that is its parent; only callers never seen as a span
// are named by address, one edge per address whatever its ephemeral ports (a server
// called over 10 000 connections from one host is one row, and one small allocation).
// What the table remembers past one span is in fixed-size slots allocated once, not a
// node per client span or port: those nodes, made during a burst of connections, lived
// on between the burst's freed memory and kept it from going back to the system.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <cstring>
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
  // Samples kept over all edges: with many edges (a server called from thousands of
  // hosts) each keeps fewer, down to kMinSamplesPerEdge, so memory stays near
  // 8 bytes x kSampleBudget however many requests go by.
  static constexpr size_t kSampleBudget = 200000;
  static constexpr size_t kMinSamplesPerEdge = 64;
  static constexpr size_t kMaxEdges = 10000;  // the rest share one "(other)" edge
  static constexpr size_t kMaxServices = 4096;  // names past this count as "(other)"

  // Server spans whose parent span is not known after this many Ticks are counted by
  // their caller's address: the parent is on another host, or was lost.
  static constexpr uint32_t kMaxWaitTicks = 10;

  // Samples held now, over all edges (for tests of the bound).
  size_t samples() const;
  // Caller -> callee edges held now (for tests of the bound).
  size_t edges() const { return edges_.size() + named_edges_.size(); }
  size_t waiting_server_spans() const { return waiting_server_spans_; }

  void Add(const Span& span);
  // Once a second: server spans that waited kMaxWaitTicks for their parent are counted.
  void Tick();
  // A message published by `producer_service` and processed by `consumer` (both on this
  // host): an edge producer -> "consumer via subject".
  void AddMessageHop(const std::string& producer_service, const Span& consumer);
  std::vector<CallSummaryRow> Rows() const;

 private:
  // Service names are interned: every span names one, and comparing and copying the
  // string on each span cost more than the rest of the table.
  using ServiceId = uint32_t;
  static constexpr ServiceId kOtherService = 0;  // "(other)": the overflow of every table

  struct Edge {
    uint64_t count = 0;
    uint64_t errors = 0;
    std::vector<uint64_t> durations_ns;
  };
  // An address and port as the kernel reported them: formatted only for Rows(), not for
  // every span.
  struct EndpointKey {
    std::array<uint8_t, 16> address{};
    uint16_t port = 0;
    auto operator<=>(const EndpointKey&) const = default;
  };
  static EndpointKey EndpointOf(const uint8_t address[16], uint16_t port) {
    EndpointKey key;
    std::memcpy(key.address.data(), address, 16);
    key.port = port;
    return key;
  }
  struct EndpointHash {
    size_t operator()(const EndpointKey& e) const {
      uint64_t words[2];
      std::memcpy(words, e.address.data(), sizeof(words));
      return std::hash<uint64_t>()(words[0] * 31 + words[1]) ^ e.port;
    }
  };
  struct EdgeKey {
    ServiceId service = kOtherService;
    bool server = false;
    EndpointKey peer;  // the other side; all zero for the overflow edge
    bool operator==(const EdgeKey&) const = default;
  };
  struct EdgeHash {
    size_t operator()(const EdgeKey& e) const {
      return EndpointHash()(e.peer) * 31 + (uint64_t{e.service} << 1 | e.server);
    }
  };
  // A server span whose parent (a client span on this host) has not been added yet.
  struct WaitingServerSpan {
    ServiceId service;
    EndpointKey caller;
    uint64_t duration_ns;
    uint32_t since_tick;
    bool error;
  };
  static constexpr size_t kMaxWaitingServerSpans = 65536;
  // Recent client spans, by span id, and client sockets, by local endpoint: direct-mapped
  // (a newer entry takes an older one's slot), so their memory is fixed. A server span's
  // parent comes within seconds of it (the span hold is 5 s), when 65 536 slots hold the
  // last ~2 s of client spans at 30 000 spans/s.
  static constexpr size_t kClientSpanSlots = 65536;
  static constexpr size_t kClientEndpointSlots = 16384;
  struct ClientSpanSlot {
    uint64_t span_key = 0;  // 0: empty (an all-zero span id is invalid)
    ServiceId service = kOtherService;
  };
  struct ClientEndpointSlot {
    EndpointKey endpoint;  // port 0: empty
    ServiceId service = kOtherService;
  };

  ServiceId IdOf(const std::string& service);
  void AddSample(Edge& edge, uint64_t duration_ns, bool error);
  void AddByEndpoint(ServiceId service, bool server, const EndpointKey& peer, uint64_t duration_ns, bool error);
  void AddNamed(ServiceId caller, ServiceId callee, uint64_t duration_ns, bool error);
  // A server span not linked to a client span: its caller is the traced client whose
  // socket is `peer`, if one was seen, else the address.
  void AddByCaller(ServiceId service, const EndpointKey& peer, uint64_t duration_ns, bool error);
  const ServiceId* ClientAt(const EndpointKey& endpoint) const;

  std::vector<std::string> service_names_{"(other)"};  // by ServiceId
  std::unordered_map<std::string, ServiceId> service_ids_;
  std::unordered_map<EdgeKey, Edge, EdgeHash> edges_;
  // (caller, callee) when both names are known: message hops, and server spans whose
  // parent is a client span seen here (the ephemeral port never names the caller then).
  // Keyed by caller << 32 | callee.
  std::unordered_map<uint64_t, Edge> named_edges_;
  // Servers' local endpoints: a client span to one of them is counted by the server span.
  std::unordered_map<EndpointKey, ServiceId, EndpointHash> server_by_endpoint_;
  std::vector<ClientEndpointSlot> client_by_endpoint_;  // kClientEndpointSlots, made on first use
  std::vector<ClientSpanSlot> client_by_span_id_;       // kClientSpanSlots, made on first use
  std::unordered_map<uint64_t, std::vector<WaitingServerSpan>> servers_waiting_for_parent_;
  size_t waiting_server_spans_ = 0;
  uint32_t ticks_ = 0;
  std::mt19937_64 random_{12345};
};

}  // namespace flowtracer::spans
