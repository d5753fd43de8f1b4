// HTTP exchanges -> spans, with ids decided when each request starts so that spans of
// one trace agree whatever order they finish in. Parent rules (docs/trace-linking.md):
//   server span: incoming traceparent, else the same-host client span on the other end
//                of the connection, else a new trace;
//   client span: the one server request in flight on the thread that sent it (in an
//                event-loop process: the one in the whole process), else a root with
//                the reason; a traceparent the application sent fixes its trace id
//                and span id.
// Spans linked together share a TraceGroup. A group started without a traceparent may
// still take the trace id of a child client call that carries one (an SDK in the
// service started the trace), so its finished spans are held until no request of the
// group is open (or the hold bounds force them out).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <memory_resource>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "agent/conntrack/connection_memory.h"
#include "agent/conntrack/connection_tracker.h"
#include "agent/process/process_info.h"
#include "agent/spans/ids.h"
#include "agent/spans/key_hash.h"
#include "agent/spans/route.h"
#include "agent/spans/span.h"

namespace flowtracer::spans {

struct AssemblerOptions {
  size_t max_routes_per_service = 200;
  int64_t monotonic_to_unix_ns = 0;  // added to kernel timestamps
  size_t max_open_requests = 65536;  // requests whose ids are decided but not yet emitted
  // Finished spans waiting for their trace id to settle: bounded in count and age.
  size_t max_held_spans = 16384;
  uint64_t max_hold_ns = 5ull * 1000 * 1000 * 1000;
  size_t max_event_loop_processes = 65536;
  // Requests still open this long after they started are forgotten (their exchange was
  // lost: the tracker ends unanswered requests after 30 s).
  uint64_t max_open_age_ns = 60ull * 1000 * 1000 * 1000;
};

struct AssemblerStats {
  uint64_t spans = 0;
  uint64_t parent_from_traceparent = 0;
  uint64_t parent_from_same_host = 0;
  uint64_t parent_from_same_host_late = 0;     // the server's event reached the agent first
  uint64_t same_host_not_linked = 0;           // the two ends were in different settled traces
  uint64_t parent_from_thread = 0;
  uint64_t parent_from_event_loop = 0;
  uint64_t parent_ambiguous = 0;               // several server requests on the sending thread
  uint64_t parent_event_loop_concurrent = 0;   // event loop: several in the process
  uint64_t open_requests_dropped = 0;
  uint64_t traces_adopted = 0;                 // groups that took a child's traceparent trace id
  uint64_t held_spans_forced_out_age = 0;      // released before their trace settled: too old
  uint64_t held_spans_forced_out_count = 0;    // ... too many held
  uint64_t held_spans_released_at_exit = 0;
  uint64_t event_loop_table_full = 0;          // event-loop process not remembered
  uint64_t open_requests_expired = 0;          // open past max_open_age_ns: exchange lost
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
  void OnConnectionForgotten(const conntrack::ConnectionInfo& connection) override;

  // Releases held spans older than max_hold_ns; `now_ns` on the kernel's clock.
  void Tick(uint64_t now_ns);
  // Releases every held span (agent shutdown).
  void Flush();

  size_t held_spans() const { return held_span_count_; }
  size_t open_requests() const { return open_requests_.size(); }
  size_t server_requests_in_flight() const;

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
  // Settles that request's trace: its id leaves the process with the message.
  ThreadParent ServerRequestOnThread(uint32_t pid, uint32_t tid);
  // Other work in flight on a thread (a message being processed); added to the server
  // requests when a client span's parent is chosen.
  void SetThreadParentLookup(std::function<ThreadParent(uint32_t pid, uint32_t tid)> lookup) {
    thread_parent_lookup_ = std::move(lookup);
  }

 private:
  class GroupMemory;
  struct TraceGroup;

  // A counted reference to a TraceGroup. Not std::shared_ptr: its counts are atomic, and
  // a locked instruction waits for every store before it to drain (about six per span);
  // groups are made and used on the capture thread only.
  class GroupPtr {
   public:
    GroupPtr() = default;
    GroupPtr(std::nullptr_t) {}  // NOLINT: like a pointer
    explicit GroupPtr(TraceGroup* group);
    GroupPtr(const GroupPtr& other);
    GroupPtr(GroupPtr&& other) noexcept : group_(std::exchange(other.group_, nullptr)) {}
    GroupPtr& operator=(GroupPtr other) noexcept {
      std::swap(group_, other.group_);
      return *this;
    }
    ~GroupPtr();
    void reset() { *this = GroupPtr(); }
    TraceGroup* get() const { return group_; }
    TraceGroup* operator->() const { return group_; }
    TraceGroup& operator*() const { return *group_; }
    explicit operator bool() const { return group_ != nullptr; }
    bool operator==(const GroupPtr& other) const { return group_ == other.group_; }

   private:
    TraceGroup* group_ = nullptr;
  };

  // Finished spans waiting for their trace id to settle. With: its trace id came from its
  // own header. Spans are held by pointer: a span is ~200 bytes of strings and vectors,
  // and each move of one touched them all.
  using HeldSpans = std::vector<std::pair<std::unique_ptr<Span>, bool>>;

  // Spans linked to each other: one trace id, settled once nothing can change it.
  struct TraceGroup {
    TraceId trace_id{};
    bool settled = false;     // from a traceparent, or no request of the group is open
    bool adopted = false;     // the trace id came from a child call's traceparent
    size_t open_requests = 0; // started, exchange not yet ended
    HeldSpans held;
    uint64_t first_held_ns = 0;
    GroupPtr merged_into;  // set when joined to another group
    uint32_t references = 0;  // GroupPtrs to it
    GroupMemory* memory = nullptr;  // where it goes back when the last reference goes
  };

  // Both ends of a connection, client first: addresses and ports as the kernel gives them.
  // A fixed array, not a string: keys built per request allocate nothing.
  struct Endpoints {
    std::array<uint8_t, 36> bytes{};
    bool operator==(const Endpoints&) const = default;
  };
  struct EndpointsHash {
    size_t operator()(const Endpoints& e) const { return HashKeyBytes(e.bytes.data(), e.bytes.size()); }
  };
  static Endpoints EndpointKey(const uint8_t addr_a[16], uint16_t port_a, const uint8_t addr_b[16],
                               uint16_t port_b);

  struct RequestIds {
    GroupPtr group;
    bool trace_from_header = false;  // this request's own traceparent gave the trace id
    SpanId span_id{};
    SpanId parent_span_id{};
    std::string trace_state;
    // Literals, so a request's ids copy no strings:
    std::string_view parent_source;  // "traceparent", "same_host", "thread", "event_loop" or ""
    std::string_view unresolved;     // why no parent was chosen: "ambiguous", "event_loop_concurrent"
    uint32_t pid = 0;
    uint32_t tid = 0;
    uint64_t start_ns = 0;
    Endpoints endpoints;  // of the connection, client side first
    bool server = false;
    bool waiting_for_client = false;  // queued in unmatched_server_requests_ when it started

    // Back to a new request's state, keeping trace_state's storage: ids are decided in
    // place in a reused table node, not built and moved in.
    void Reset() {
      group.reset();
      trace_from_header = false;
      span_id = {};
      parent_span_id = {};
      trace_state.clear();
      parent_source = {};
      unresolved = {};
      pid = 0;
      tid = 0;
      start_ns = 0;
      endpoints = {};
      server = false;
      waiting_for_client = false;
    }
  };
  struct RequestKey {
    uint64_t conn_id;
    uint64_t index;
    bool operator==(const RequestKey&) const = default;
  };
  struct RequestKeyHash {
    size_t operator()(const RequestKey& k) const { return k.conn_id * 1000003u ^ k.index; }
  };

  // Fill `ids`, reset.
  void DecideServerIds(const conntrack::ConnectionInfo& connection, const conntrack::HttpMessageRecord& request,
                       RequestIds& ids);
  void DecideClientIds(const conntrack::ConnectionInfo& connection, const conntrack::HttpMessageRecord& request,
                       RequestIds& ids);
  void OnRequestEnded(const conntrack::ConnectionInfo& connection, const conntrack::HttpExchange& exchange,
                      const RequestKey& key, const RequestIds& ids);
  // Decides a started request's ids into `ids` (reset) and queues it for pairing.
  void StartRequest(const conntrack::ConnectionInfo& connection, const conntrack::HttpMessageRecord& request,
                    const RequestKey& key, RequestIds& ids);
  // Writes the span over `out` (the span built last), reusing its strings' storage.
  void BuildSpan(const conntrack::ConnectionInfo& connection, const conntrack::HttpExchange& exchange,
                 const RequestIds& ids, Span* out);
  void ForgetInFlight(uint32_t pid, const RequestKey& key);
  void ExpireOpenRequests(uint64_t now_ns);
  void Forget(const conntrack::ConnectionInfo& connection);
  void CloseRequest(const GroupPtr& group);
  void Settle(const GroupPtr& group);
  // The group `group` was merged into, itself if none: a reference to the pointer that
  // owns it (in `group` or in a group of its chain), so no reference count is touched.
  static const GroupPtr& Root(const GroupPtr& group);
  bool Merge(const GroupPtr& from, const GroupPtr& into);
  void LinkLateServer(const RequestKey& server_key, const RequestIds& client);
  void ForgetWaitingServer(const Endpoints& endpoints, const RequestKey& key);
  void Emit(Span& span, bool trace_from_header, const TraceGroup& group);
  void Hold(const GroupPtr& group, std::unique_ptr<Span> span, bool trace_from_header, uint64_t now_ns);
  GroupPtr NewGroup(const TraceId& trace_id, bool settled);

  // Memory for trace groups, made and freed at the rate of requests: freed blocks are kept
  // for the next groups, so a group costs no malloc and free.
  class GroupMemory {
   public:
    GroupMemory() = default;
    GroupMemory(const GroupMemory&) = delete;
    GroupMemory& operator=(const GroupMemory&) = delete;
    ~GroupMemory() {
      for (void* block : spare_) ::operator delete(block);
    }
    TraceGroup* New() {
      void* block;
      if (!spare_.empty()) {
        block = spare_.back();
        spare_.pop_back();
      } else {
        block = ::operator new(sizeof(TraceGroup));
      }
      auto* group = new (block) TraceGroup();
      group->memory = this;
      return group;
    }
    void Delete(TraceGroup* group) {
      group->~TraceGroup();
      if (spare_.size() < kMaxSpareBlocks) {
        spare_.push_back(group);
      } else {
        ::operator delete(group);
      }
    }

   private:
    // A few: more, filled during a burst and kept, hold scattered heap pages afterwards.
    static constexpr size_t kMaxSpareBlocks = 16;
    std::vector<void*> spare_;
  };

  AssemblerOptions options_;
  process::ProcessRegistry* processes_;
  SpanHandler handler_;
  RouteLimiter routes_;
  AssemblerStats stats_;
  // Before every table that holds groups: destroyed after them. Its own allocation keeps
  // its address for the groups' allocators.
  std::unique_ptr<GroupMemory> group_memory_ = std::make_unique<GroupMemory>();

  using OpenRequests = std::unordered_map<RequestKey, RequestIds, RequestKeyHash>;
  OpenRequests open_requests_;
  // Nodes of requests that ended, reused for the next ones: opening a request allocates
  // nothing (the table holds every request between its start and its end).
  static constexpr size_t kMaxSpareRequestNodes = 64;
  std::vector<OpenRequests::node_type> spare_request_nodes_;
  // The ids of an exchange whose request was not open (dropped when the table was full).
  RequestIds unopened_ids_;
  // Connections the tracker closed or dropped since the last sweep of open_requests_.
  std::unordered_set<uint64_t> forgotten_connections_;
  // Server requests read but not yet answered, per process. A process's entry stays
  // when it has none (its next request then allocates nothing) while the table is small.
  std::unordered_map<uint32_t, std::vector<RequestKey>> server_in_flight_;
  static constexpr size_t kMaxIdleInFlightProcesses = 1024;
  // Same-host pairing, by the client's (local, remote) endpoints (the server's
  // (remote, local)) and the TCP sequence number of the request's first byte, which
  // both ends share. Either end's event may reach the agent first: a client request
  // waits for its server, or a server request without a parent for its client.
  struct UnmatchedClient {
    uint32_t seq;
    SpanId span_id;
    GroupPtr group;
  };
  struct UnmatchedServer {
    uint32_t seq;
    RequestKey key;
  };
  // Only requests not yet read by the other end wait here (pipelining depth): a request
  // that finds no entry is left without a same-host parent, never given a wrong one.
  static constexpr size_t kMaxUnmatchedPerConnection = 16;
  // Queues of at most 16, oldest first: a vector allocates once (a deque twice, 576 bytes).
  // A client connection's queue stays, empty, until the connection is forgotten, so its
  // next request allocates nothing. Queues and their nodes live as long as connections, so
  // they come from blocks of their own like the tracker's connections: from the heap, one
  // small node per idle connection among each burst's short-lived allocations kept those
  // pages resident (10 000 idle tracked connections: 12 MB of heap for 3 MB in use).
  conntrack::ConnectionMemory client_queue_memory_;
  std::pmr::unordered_map<Endpoints, std::pmr::vector<UnmatchedClient>, EndpointsHash> unmatched_client_requests_{
      &client_queue_memory_};
  using UnmatchedServers = std::unordered_map<Endpoints, std::vector<UnmatchedServer>, EndpointsHash>;
  UnmatchedServers unmatched_server_requests_;
  // A server connection's queue goes when it empties (most connections of a server
  // traced alone never pair: its clients are elsewhere); its node and the vector's
  // storage are kept here for the next request to wait, so waiting allocates nothing.
  static constexpr size_t kMaxSpareWaitingNodes = 64;
  std::vector<UnmatchedServers::node_type> spare_waiting_nodes_;
  std::vector<UnmatchedServer>& WaitingServers(const Endpoints& endpoints);
  void EraseWaitingServers(UnmatchedServers::iterator it);
  // Processes seen serving several connections' requests at once on one thread.
  std::unordered_set<uint32_t> event_loop_pids_;
  // Groups holding finished spans, and how many spans they hold in all.
  std::unordered_map<TraceGroup*, GroupPtr> holding_;
  // The storage of groups released from holding, for the next ones: a same-host server
  // span is held until its client's response is read, one group per call, and as many
  // groups hold at once as calls are in flight.
  decltype(holding_)::node_type spare_holding_node_;
  static constexpr size_t kMaxSpareHeldLists = 32;
  static constexpr size_t kMaxSpareHeldListSpans = 16;
  std::vector<HeldSpans> spare_held_;
  size_t held_span_count_ = 0;
  uint64_t last_open_sweep_ns_ = 0;
  std::function<ThreadParent(uint32_t pid, uint32_t tid)> thread_parent_lookup_;
  // The span being built and emitted, one per kind (index: server): handlers see it by
  // reference during the call only. A span is built over the last one of its kind, whose
  // attributes have the same keys in the same places, so no key is rewritten.
  std::unique_ptr<Span> reused_span_[2];
  std::string templated_path_;  // BuildSpan's, kept for its storage
  // The last remote address BuildSpan formatted, and its text: most spans in a row come
  // from the same few peers (formatting one is ~150 instructions).
  std::string_view RemoteAddressText(const uint8_t address[16]);
  std::array<uint8_t, 16> remote_address_{};
  std::string remote_address_text_;
  // Spans released from holding, per kind, kept for their storage: the next held span's
  // successor is built over one (a same-host server span is held until its client's
  // response is read).
  static constexpr size_t kMaxSpareSpans = 32;
  std::vector<std::unique_ptr<Span>> spare_spans_[2];
};

// "127.0.0.1", "::1" (IPv4-mapped addresses print as IPv4).
std::string FormatAddress(const uint8_t address[16]);
// "127.0.0.1:8080", "[::1]:8080".
std::string FormatEndpoint(const uint8_t address[16], uint16_t port);

}  // namespace flowtracer::spans
