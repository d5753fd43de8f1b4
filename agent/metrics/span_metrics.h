// Metrics from spans, with no code in the services: RED histograms per service in the
// OpenTelemetry semantic convention names, and the service graph in the names Grafana's
// service graph view reads. Cardinality and memory are bounded (docs/metrics.md).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agent/metrics/metric_data.h"
#include "agent/spans/key_hash.h"
#include "agent/spans/span.h"

namespace flowtracer::metrics {

// A name for a peer that is not traced on this host: `address` is "10.0.0.7" or
// "10.0.0.7:5432" (a port-specific entry wins).
struct PeerName {
  std::string address;
  std::string name;
};

struct SpanMetricsOptions {
  size_t max_series_per_service = 2000;   // beyond: one series marked otel.metric.overflow
  size_t max_series_total = 50000;        // all services together, same overflow
  size_t max_services = 1000;             // beyond: spans count under service "{overflow}"
  size_t max_graph_edges = 10000;         // beyond: one edge {overflow} -> {overflow}
  uint64_t pairing_wait_ns = 2'000'000'000;  // how long a span waits for the other end's
  size_t max_pending_spans = 100000;      // spans waiting to be paired
  size_t max_label_bytes = 256;           // longer attribute values are cut
  std::vector<PeerName> peer_names;
  std::function<uint64_t()> now_unix_ns;  // injectable clock; default: the system clock
};

struct SpanMetricsStats {
  uint64_t spans = 0;
  uint64_t series_overflowed = 0;     // spans recorded into an overflow series
  uint64_t services_overflowed = 0;   // spans of services past max_services
  uint64_t edges_overflowed = 0;      // graph requests folded into the overflow edge
  uint64_t pending_evicted = 0;       // spans counted unpaired early: pending table full
  uint64_t graph_pairs = 0;           // requests whose both ends were traced here
  uint64_t graph_unpaired = 0;        // requests seen from one end only
};

class SpanMetrics {
 public:
  static constexpr std::string_view kOverflowName = "{overflow}";
  static constexpr std::string_view kOverflowAttribute = "otel.metric.overflow";

  explicit SpanMetrics(SpanMetricsOptions options = {});

  void Add(const spans::Span& span);
  // Counts spans whose other end did not arrive in time; call about once a second.
  void Tick();
  // Counts every span still waiting as unpaired (end of a capture).
  void FlushPending();

  MetricsSnapshot Collect() const;
  SpanMetricsStats stats() const;

 private:
  // The span attributes span metrics read (labels, and the status code for the graph's
  // failed count), by slot.
  enum LabelSlot : uint8_t {
    kMethod,
    kStatusCode,
    kProtocolVersion,
    kRoute,
    kServerAddress,
    kServerPort,
    kErrorType,
    kMessagingSystem,
    kMessagingOperation,
    kMessagingDestination,
    kLabelSlotCount
  };
  using LabelAttributes = std::array<const spans::AttributeValue*, kLabelSlotCount>;
  static LabelAttributes FindLabelAttributes(const spans::Span& span);
  struct Series {
    uint64_t start_unix_ns = 0;
    HistogramData histogram;
  };
  struct MetricSeries {
    std::map<Labels, Series> series;
  };
  struct ServiceMetrics {
    size_t series_count = 0;
    std::map<std::string, MetricSeries> by_metric;  // metric name -> series
  };
  struct EdgeKey {
    std::string client;
    std::string server;
    std::string connection_type;
    bool operator<(const EdgeKey& o) const {
      return std::tie(client, server, connection_type) <
             std::tie(o.client, o.server, o.connection_type);
    }
  };
  struct Edge {
    uint64_t start_unix_ns = 0;
    uint64_t total = 0;
    uint64_t failed = 0;
    HistogramData server_seconds;
    HistogramData client_seconds;
  };
  // Where a span's label combination was recorded, so the next span with the same one
  // needs no label strings, sorting or map walks.
  struct ResolvedSeries {
    Series* series = nullptr;
    bool service_overflowed = false;
    bool series_overflowed = false;
  };
  // Which call an end belongs to, as raw bytes: "h" and both endpoints client first
  // (HTTP), or "m" and the producer's span id (messaging). A fixed array: no allocation.
  struct PairingKey {
    std::array<uint8_t, 1 + 2 * 18> bytes{};
    bool operator==(const PairingKey&) const = default;
  };
  struct PairingKeyHash {
    size_t operator()(const PairingKey& k) const { return spans::HashKeyBytes(k.bytes.data(), k.bytes.size()); }
  };

  // One end of a call, waiting for the other end's span.
  struct PendingEnd {
    uint64_t deadline_unix_ns = 0;
    PairingKey key;
    bool is_server = false;
    std::string service;
    // The other end, named only if its span never arrives (formatting costs more than pairing).
    std::array<uint8_t, 16> peer_address{};
    uint16_t peer_port = 0;
    bool peer_with_port = false;  // a server is IP:PORT, a client (ephemeral port) only IP
    std::string_view connection_type;  // "" or "messaging_system"
    double seconds = 0;
    bool failed = false;
  };

  void RecordRed(const spans::Span& span, const LabelAttributes& found, uint64_t now);
  void RecordEnd(const spans::Span& span, const LabelAttributes& found, uint64_t now);
  void CountUnpaired(const PendingEnd& end, uint64_t now);
  // `client_name` and `server_name` as the span or peer names them (cut here).
  void CountEdge(std::string_view client_name, std::string_view server_name, std::string_view connection_type,
                 const PendingEnd* client, const PendingEnd* server, uint64_t now);
  static Edge NewEdge(uint64_t now);
  PendingEnd PopOldest();  // pending_ must not be empty
  void RecyclePendingNode(std::map<uint64_t, PendingEnd>::node_type node);
  void RecycleKeyNode(std::unordered_map<PairingKey, std::vector<uint64_t>, PairingKeyHash>::node_type node);
  void ExpireLocked(uint64_t now, bool all);
  std::string PeerNameFor(const uint8_t address[16], uint16_t port, bool with_port) const;
  std::string Cut(std::string_view value) const;
  uint64_t Now() const;
  // The clock's last tick (a few ms behind at most): what a span's deadlines need, at a
  // fraction of a precise reading, taken once per span.
  uint64_t CoarseNow() const;

  SpanMetricsOptions options_;
  mutable std::mutex mutex_;
  std::map<std::string, ServiceMetrics> services_;
  size_t series_total_ = 0;
  std::unordered_map<std::string, ResolvedSeries> series_by_signature_;
  std::string signature_scratch_;
  std::map<EdgeKey, Edge> edges_;
  // Edges by the uncut names that led to them, like series_by_signature_ (overflowed
  // combinations are not remembered).
  std::unordered_map<std::string, Edge*> edge_by_signature_;
  // Pending ends in arrival order (= deadline order), and per pairing key the sequence
  // numbers of each side's ends, oldest first (HTTP/1 answers in order).
  std::map<uint64_t, PendingEnd> pending_;
  using PendingByKey = std::unordered_map<PairingKey, std::vector<uint64_t>, PairingKeyHash>;
  PendingByKey pending_by_key_[2];  // usually one each
  // Nodes of both tables kept after their entry went (the vector keeps its storage): an
  // end that waits for its other end then allocates nothing.
  using PendingNode = std::map<uint64_t, PendingEnd>::node_type;
  using KeyNode = PendingByKey::node_type;
  static constexpr size_t kMaxSpareNodes = 64;
  std::vector<PendingNode> spare_pending_nodes_;
  std::vector<KeyNode> spare_key_nodes_;
  uint64_t next_sequence_ = 0;
  SpanMetricsStats stats_;
};

}  // namespace flowtracer::metrics
