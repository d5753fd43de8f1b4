// Turns ring buffer records into per-connection byte streams and hands them to the
// protocol parser; emits finished HTTP exchanges. Owns every per-connection table of
// the agent, each bounded by count and by idle age.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <memory_resource>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/conntrack/byte_stream.h"
#include "agent/conntrack/connection_memory.h"
#include "agent/conntrack/http1_stream.h"
#include "agent/conntrack/nats_stream.h"
#include "agent/conntrack/raw_event.h"
#include "agent/conntrack/socket_liveness.h"
#include "flowtracer/events.h"

namespace flowtracer::conntrack {

enum class Protocol : uint8_t { kUnknown, kHttp1, kNats, kOpaque };

// Ordered by size: one is kept per tracked connection.
struct ConnectionInfo {
  uint64_t conn_id = 0;
  uint64_t open_ns = 0;
  std::string comm;
  ft_tuple tuple{};
  uint32_t pid = 0;
  ft_role role = FT_ROLE_UNKNOWN;  // resolved from the traffic when the kernel did not know
  bool role_inferred = false;
  Protocol protocol = Protocol::kUnknown;
};

// Receives what the tracker finishes. Called synchronously from OnRecord/Tick/Flush.
class TrackerSink {
 public:
  virtual ~TrackerSink() = default;
  // A request's head was parsed (before its exchange finishes): ids are decided here.
  virtual void OnHttpRequestStarted(const ConnectionInfo&, const HttpMessageRecord&) {}
  virtual void OnHttpExchange(const ConnectionInfo& connection, const HttpExchange& exchange) = 0;
  virtual void OnConnectionClosed(const ConnectionInfo&, uint64_t /*bytes_sent*/,
                                  uint64_t /*bytes_received*/) {}
  // The tracker dropped the connection without a close (table full, idle): requests
  // still awaiting a response will never finish.
  virtual void OnConnectionForgotten(const ConnectionInfo&) {}
  // A whole NATS message, in order within its direction.
  virtual void OnNatsMessage(const ConnectionInfo&, const NatsMessageRecord&) {}
};

// The kernel side of copy control (SocketTracer in production, a fake in tests).
class KernelControl {
 public:
  virtual ~KernelControl() = default;
  virtual void SetConnControl(uint64_t conn_id, const ft_conn_control& control) = 0;
  virtual void ForgetConnControl(uint64_t conn_id) = 0;
};

struct TrackerOptions {
  size_t max_connections = 65536;
  uint64_t idle_timeout_ns = 300ull * 1000 * 1000 * 1000;     // no I/O for this long: forgotten
  uint64_t response_timeout_ns = 30ull * 1000 * 1000 * 1000;  // request unanswered: span ends
  size_t max_buffered_bytes_per_stream = 256 * 1024;
  // Captured bytes (both directions together) without a recognisable protocol before
  // the connection is handed back to the kernel as "ignore".
  size_t detect_bytes = 4096;
  // Skip hints smaller than this are not worth a map update.
  uint64_t min_skip_bytes = 4096;
  // Connections idle this long are looked up in the kernel's socket tables (at most every
  // half of it) and forgotten when their socket is gone: their close event was lost.
  // 0: never (the commands that trace set it; tests inject a SocketLiveness).
  uint64_t close_check_idle_ns = 0;
  // Connections quiet this long give back per-protocol and buffer storage they can make
  // again (checked on Tick, so per-event work is unchanged).
  uint64_t release_idle_after_ns = 1ull * 1000 * 1000 * 1000;
  // Freed heap is handed back to the system (malloc_trim) when at least this much of it is
  // free, looked at every 10 s on Tick. glibc keeps freed heap for reuse: after a burst of
  // connections (whose requests' span state and held spans go over the following seconds),
  // or once a large pool of connections has gone quiet and given back its HTTP state, the
  // process would otherwise stay at its peak size. 0: never.
  size_t trim_when_free_heap_bytes = 4u << 20;
  // What reads the heap's free bytes and what hands them back (tests fake both); empty:
  // mallinfo2's free bytes and malloc_trim(0).
  std::function<size_t()> free_heap_bytes;
  std::function<void()> trim_heap;
};

// Shares of connections traced are in 1/65536: this is all of them (see SetTracedShare).
inline constexpr uint32_t kAllConnectionsTraced = 65536;

// Where a connection falls among shares, in [0, 65536): it is traced while the share is
// above it. The same for both ends of a connection (the endpoints are ordered first), so
// a client and a server on one host, or on two hosts with one budget, are shed together.
uint32_t ConnectionShareKey(const ft_tuple& tuple);

struct TrackerStats {
  uint64_t malformed_records = 0;
  uint64_t data_for_unknown_connection = 0;  // its CONN_OPEN was lost
  uint64_t connections_evicted_full = 0;
  uint64_t connections_evicted_idle = 0;
  uint64_t connections_close_missed = 0;  // socket gone, close event never seen
  uint64_t gap_bytes = 0;
  uint64_t stream_overflow_drops = 0;
  uint64_t http_resyncs = 0;
  uint64_t http_orphan_responses = 0;
  uint64_t http_pending_overflow = 0;
  uint64_t http_late_responses = 0;  // came after their request had timed out
  uint64_t connections_ignored = 0;  // no known protocol
  uint64_t nats_resyncs = 0;
  uint64_t nats_broker_connections_ignored = 0;  // nats-server's side: spans come from its clients
  uint64_t nats_messages_without_fingerprint = 0;
  uint64_t nats_uncaptured_bytes = 0;  // where messages may have been: those are lost
  uint64_t connections_shed = 0;  // left untraced to keep within the CPU budget (opens, or later)
  uint64_t requests_shed = 0;     // in flight on a connection when it was shed: no span
};

class ConnectionTracker {
 public:
  // `liveness` answers close checks; when null and options.close_check_idle_ns is set,
  // the tracker reads /proc.
  ConnectionTracker(TrackerOptions options, TrackerSink* sink, KernelControl* control = nullptr,
                    SocketLiveness* liveness = nullptr);
  ~ConnectionTracker();

  // One ring buffer record, as the kernel wrote it.
  void OnRecord(const void* data, size_t size);
  void OnConnEvent(const ft_conn_event& event);
  void OnData(const DataEvent& event);

  // Timeouts and idle eviction; `now_ns` on the kernel's clock (CLOCK_MONOTONIC).
  void Tick(uint64_t now_ns);

  // Ends every connection as if closed (agent shutdown). Requests still awaiting a
  // response are counted in `in_flight` and not emitted.
  void Flush(uint64_t* in_flight = nullptr);

  // Trace only the connections whose ConnectionShareKey is below `share` (of 65536); the
  // kernel stops copying the others. A connection shed mid-request loses that request
  // (counted); one traced again resumes at its next message.
  // `now_ns` (the kernel's clock) starts the idle age of connections traced again.
  void SetTracedShare(uint32_t share, uint64_t now_ns);
  uint32_t traced_share() const { return traced_share_; }

  const TrackerStats& stats() const { return stats_; }
  size_t connection_count() const { return connections_.size(); }
  // Bytes a tracked connection takes in the table before any per-protocol state or
  // buffered bytes (for tests and the scale benchmark's accounting).
  static size_t connection_struct_bytes();
  // Bytes of connections and table nodes, which are not in the malloc heap (for tests).
  size_t connection_memory_bytes() const { return connection_memory_.in_use_bytes(); }

 private:
  struct Connection;
  Connection* Find(uint64_t conn_id);
  void Process(Connection& connection, bool closing);
  struct ConnectionDeleter {
    ConnectionMemory* memory;
    void operator()(Connection* connection) const;
  };
  // Connections and their nodes live in connection_memory_ (see ConnectionMemory).
  using Table = std::pmr::unordered_map<uint64_t, std::unique_ptr<Connection, ConnectionDeleter>>;
  void Remove(uint64_t conn_id);
  void Remove(Table::iterator it, bool forget_kernel_control = true);
  void Account(const Connection& connection);
  void AccountHttp(const Http1Conversation& http);
  // Drops the HTTP state (counted, numbering kept); it is made again when needed.
  void ReleaseHttp(Connection& connection);
  void ReleaseIdleMemory(Connection& connection);
  // Reports each request to the sink as its head is parsed.
  RequestStarted StartedCallback(Connection& connection);
  void Emit(Connection& connection, const std::vector<HttpExchange>& exchanges);
  void UpdateKernelControl(Connection& connection);
  void Shed(Connection& connection);
  void ProcessNats(Connection& connection, bool closing);

  TrackerOptions options_;
  TrackerSink* sink_;
  KernelControl* control_;
  std::unique_ptr<SocketLiveness> own_liveness_;
  SocketLiveness* liveness_;
  uint64_t next_close_check_ns_ = 0;
  // A trim walks the heap (milliseconds at 100 MB): looked at every 10 s, not per close.
  static constexpr uint64_t kTrimCheckIntervalNs = 10'000'000'000;
  uint64_t next_trim_check_ns_ = 0;
  ConnectionMemory connection_memory_;  // before connections_: outlives them
  Table connections_{&connection_memory_};
  // What one Process call finished, reused between calls (most calls finish one exchange:
  // not a vector allocated for each).
  std::vector<HttpExchange> exchanges_;
  uint32_t traced_share_ = kAllConnectionsTraced;
  TrackerStats stats_;
};

}  // namespace flowtracer::conntrack
