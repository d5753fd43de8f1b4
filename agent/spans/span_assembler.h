// HTTP exchanges -> spans, with ids decided when each request starts so that spans of
// one trace agree whatever order they finish in. Parent rules (docs/trace-linking.md):
//   server span: incoming traceparent, else the same-host client span on the other end
//                of the connection, else a new trace;
//   client span: the one server request in flight on the thread that sent it, else a
//                root (with the reason when it was ambiguous); a traceparent the
//                application sent fixes its trace id and span id.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/conntrack/connection_tracker.h"
#include "agent/process/process_info.h"
#include "agent/spans/ids.h"
#include "agent/spans/route.h"
#include "agent/spans/span.h"

namespace flowtracer::spans {

struct AssemblerOptions {
  size_t max_routes_per_service = 200;
  int64_t monotonic_to_unix_ns = 0;  // added to kernel timestamps
  size_t max_open_requests = 65536;  // requests whose ids are decided but not yet emitted
};

struct AssemblerStats {
  uint64_t spans = 0;
  uint64_t parent_from_traceparent = 0;
  uint64_t parent_from_same_host = 0;
  uint64_t parent_from_thread = 0;
  uint64_t parent_ambiguous = 0;
  uint64_t open_requests_dropped = 0;
};

class SpanAssembler : public conntrack::TrackerSink {
 public:
  using SpanHandler = std::function<void(const Span&)>;

  SpanAssembler(AssemblerOptions options, process::ProcessRegistry* processes, SpanHandler handler);

  void OnHttpRequestStarted(const conntrack::ConnectionInfo& connection,
                            const conntrack::HttpMessageRecord& request) override;
  void OnHttpExchange(const conntrack::ConnectionInfo& connection,
                      const conntrack::HttpExchange& exchange) override;
  void OnConnectionClosed(const conntrack::ConnectionInfo& connection, uint64_t bytes_sent,
                          uint64_t bytes_received) override;

  const AssemblerStats& stats() const { return stats_; }
  const RouteLimiter& routes() const { return routes_; }

  // ---- Messaging (agent/spans/messaging_assembler.h) ----
  // Work in flight on one thread that may be the parent of what the thread sends.
  struct ThreadParent {
    TraceId trace_id{};
    SpanId span_id{};
    int candidates = 0;  // 1: the parent above; 0: none; more: ambiguous
  };
  // Server requests in flight on this thread (the parent of a publish it makes).
  ThreadParent ServerRequestOnThread(uint32_t pid, uint32_t tid) const;
  // Other work in flight on a thread (a message being processed); added to the server
  // requests when a client span's parent is chosen.
  void SetThreadParentLookup(std::function<ThreadParent(uint32_t pid, uint32_t tid)> lookup) {
    thread_parent_lookup_ = std::move(lookup);
  }

 private:
  struct RequestIds {
    TraceId trace_id{};
    SpanId span_id{};
    SpanId parent_span_id{};
    std::string parent_source;  // "traceparent", "same_host", "thread" or ""
    bool ambiguous = false;
    uint32_t pid = 0;
    uint32_t tid = 0;
  };
  struct RequestKey {
    uint64_t conn_id;
    uint64_t index;
    bool operator==(const RequestKey&) const = default;
  };
  struct RequestKeyHash {
    size_t operator()(const RequestKey& k) const { return k.conn_id * 1000003u ^ k.index; }
  };

  RequestIds DecideServerIds(const conntrack::ConnectionInfo& connection,
                             const conntrack::HttpMessageRecord& request);
  RequestIds DecideClientIds(const conntrack::ConnectionInfo& connection,
                             const conntrack::HttpMessageRecord& request);
  Span BuildSpan(const conntrack::ConnectionInfo& connection, const conntrack::HttpExchange& exchange,
                 const RequestIds& ids);
  void ForgetInFlight(uint32_t pid, const RequestKey& key);

  AssemblerOptions options_;
  process::ProcessRegistry* processes_;
  SpanHandler handler_;
  RouteLimiter routes_;
  AssemblerStats stats_;

  std::unordered_map<RequestKey, RequestIds, RequestKeyHash> open_requests_;
  // Server requests read but not yet answered, per process.
  std::unordered_map<uint32_t, std::vector<RequestKey>> server_in_flight_;
  // Client requests not yet matched to a same-host server span, by the client's
  // (local, remote) endpoints; the server looks them up by its (remote, local).
  std::unordered_map<std::string, std::deque<RequestIds>> unmatched_client_requests_;
  std::function<ThreadParent(uint32_t pid, uint32_t tid)> thread_parent_lookup_;
};

// "127.0.0.1", "::1" (IPv4-mapped addresses print as IPv4).
std::string FormatAddress(const uint8_t address[16]);

}  // namespace flowtracer::spans
