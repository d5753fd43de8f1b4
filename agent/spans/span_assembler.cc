#include "agent/spans/span_assembler.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "agent/text/copy.h"

namespace flowtracer::spans {
namespace {

// Host header "example.com:8080" -> "example.com"; "[::1]:80" -> "::1".
// The most attributes an HTTP span carries (20 from BuildSpan, 1 from Emit), so the
// vector is allocated once.
constexpr size_t kSpanAttributesReserved = 21;

std::string_view HostWithoutPort(std::string_view host) {
  if (host.starts_with('[')) {
    size_t close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(1, close - 1);
  }
  size_t colon = host.find(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

}  // namespace

namespace {
// inet_ntop formats IPv4 through sprintf: ~1 800 instructions, twice per span.
char* AppendOctet(char* out, uint8_t value) {
  if (value >= 100) {
    *out++ = static_cast<char>('0' + value / 100);
    value %= 100;
    *out++ = static_cast<char>('0' + value / 10);
  } else if (value >= 10) {
    *out++ = static_cast<char>('0' + value / 10);
  }
  *out++ = static_cast<char>('0' + value % 10);
  return out;
}
}  // namespace

std::string FormatAddress(const uint8_t address[16]) {
  static const uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(address, kMappedPrefix, 12) == 0) {
    char text[16];  // "255.255.255.255": fits the string's inline buffer, no allocation
    char* end = text;
    for (int i = 12; i < 16; ++i) {
      if (i > 12) *end++ = '.';
      end = AppendOctet(end, address[i]);
    }
    return std::string(text, end);
  }
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(AF_INET6, address, text, sizeof(text));
  return text;
}

std::string FormatEndpoint(const uint8_t address[16], uint16_t port) {
  std::string text = FormatAddress(address);
  if (text.find(':') != std::string::npos) text = "[" + text + "]";
  return text + ":" + std::to_string(port);
}

SpanAssembler::Endpoints SpanAssembler::EndpointKey(const uint8_t addr_a[16], uint16_t port_a,
                                                   const uint8_t addr_b[16], uint16_t port_b) {
  Endpoints key;
  std::memcpy(key.bytes.data(), addr_a, 16);
  std::memcpy(key.bytes.data() + 16, &port_a, 2);
  std::memcpy(key.bytes.data() + 18, addr_b, 16);
  std::memcpy(key.bytes.data() + 34, &port_b, 2);
  return key;
}

SpanAssembler::SpanAssembler(AssemblerOptions options, process::ProcessRegistry* processes,
                             SpanHandler handler)
    : options_(options),
      processes_(processes),
      handler_(std::move(handler)),
      routes_(options.max_routes_per_service),
      reused_span_{std::make_unique<Span>(), std::make_unique<Span>()} {}

SpanAssembler::GroupPtr::GroupPtr(TraceGroup* group) : group_(group) {
  if (group_) ++group_->references;
}

SpanAssembler::GroupPtr::GroupPtr(const GroupPtr& other) : group_(other.group_) {
  if (group_) ++group_->references;
}

SpanAssembler::GroupPtr::~GroupPtr() {
  if (group_ && --group_->references == 0) group_->memory->Delete(group_);
}

SpanAssembler::GroupPtr SpanAssembler::NewGroup(const TraceId& trace_id, bool settled) {
  GroupPtr group(group_memory_->New());
  group->trace_id = trace_id;
  group->settled = settled;
  return group;
}

void SpanAssembler::DecideServerIds(const conntrack::ConnectionInfo& connection,
                                    const conntrack::HttpMessageRecord& request, RequestIds& ids) {
  ids.span_id = NewSpanId();
  // The same-host client request this one answers is taken off its queue even when the
  // traceparent decides the parent. Requests before it will never be read: dropped.
  const ft_tuple& t = connection.tuple;
  struct ClientEnd {
    SpanId span_id;
    GroupPtr group;
  };
  std::optional<ClientEnd> client;
  if (request.start_seq) {
    auto it = unmatched_client_requests_.find(EndpointKey(t.remote_addr, t.remote_port, t.local_addr, t.local_port));
    if (it != unmatched_client_requests_.end()) {
      auto& queue = it->second;
      auto match = std::find_if(queue.begin(), queue.end(),
                                [&](const UnmatchedClient& c) { return c.seq == *request.start_seq; });
      if (match != queue.end()) {
        client = ClientEnd{match->span_id, std::move(match->group)};
        queue.erase(queue.begin(), match + 1);
      }
    }
  }
  if (auto context = ExtractTraceContext(request.head.headers())) {
    ids.group = NewGroup(context->trace_id, /*settled=*/true);
    ids.trace_from_header = true;
    ids.parent_span_id = context->parent_id;
    ids.trace_state = std::move(context->trace_state);
    ids.parent_source = "traceparent";
    ++stats_.parent_from_traceparent;
    return;
  }
  if (client) {
    ids.group = Root(client->group);
    ids.parent_span_id = client->span_id;
    ids.parent_source = "same_host";
    ++stats_.parent_from_same_host;
    return;
  }
  // May still take the trace id of a child call that carries a traceparent, or join
  // its same-host client when that one's event comes later.
  ids.group = NewGroup(NewTraceId(), /*settled=*/false);
}

void SpanAssembler::DecideClientIds(const conntrack::ConnectionInfo& connection,
                                    const conntrack::HttpMessageRecord& request, RequestIds& ids) {
  // The server request this call is made for. Threads that serve one request at a time:
  // the one in flight on the sending thread. Event loops (a thread seen serving several
  // connections at once) may run any request's code, or work of no request, on any
  // thread: only when exactly one server request is in flight in the whole process.
  // Several candidates: no parent, because a wrong parent is worse than none.
  const RequestIds* parent = nullptr;
  int on_thread = 0;
  size_t in_process = 0;
  if (auto in_flight = server_in_flight_.find(connection.pid); in_flight != server_in_flight_.end()) {
    in_process = in_flight->second.size();
    for (const RequestKey& key : in_flight->second) {
      auto open = open_requests_.find(key);
      if (open != open_requests_.end() && open->second.tid == request.tid) {
        parent = &open->second;
        ++on_thread;
      }
    }
  }
  bool event_loop = event_loop_pids_.contains(connection.pid);
  if (on_thread > 1) {
    ids.unresolved = "ambiguous";
    ++stats_.parent_ambiguous;
    parent = nullptr;
  } else if (on_thread == 1 && event_loop && in_process > 1) {
    ids.unresolved = "event_loop_concurrent";
    ++stats_.parent_event_loop_concurrent;
    parent = nullptr;
  }
  // Messaging: a message being processed on the thread is a parent like a server request.
  RequestIds message_parent;
  if (thread_parent_lookup_ && ids.unresolved.empty()) {
    ThreadParent other = thread_parent_lookup_(connection.pid, request.tid);
    if (other.candidates == 1 && on_thread == 0) {
      // The consumer span's trace came with the message: it is settled.
      message_parent.group = NewGroup(other.trace_id, /*settled=*/true);
      message_parent.span_id = other.span_id;
      parent = &message_parent;
    } else if (other.candidates > 1 || (other.candidates == 1 && on_thread == 1)) {
      ids.unresolved = "ambiguous";
      ++stats_.parent_ambiguous;
      parent = nullptr;
    }
  }

  auto context = ExtractTraceContext(request.head.headers());
  if (context) {
    // The application propagates (an SDK): its ids are the ones the callee will see.
    ids.span_id = context->parent_id;
    ids.trace_state = context->trace_state;
    ids.trace_from_header = true;
  } else {
    ids.span_id = NewSpanId();
  }
  GroupPtr parent_group = parent ? Root(parent->group) : nullptr;
  if (parent && context && parent_group->trace_id != context->trace_id) {
    if (parent_group->settled) {
      parent = nullptr;  // the SDK's trace is another one: linking would mix two traces
    } else {
      // Mixed services: the server request has no traceparent but the SDK inside the
      // service started a trace for it. The group (and all linked to it) takes that id.
      parent_group->trace_id = context->trace_id;
      parent_group->adopted = true;
      ++stats_.traces_adopted;
      Settle(parent_group);
    }
  }
  if (parent) {
    ids.group = parent_group;
    ids.parent_span_id = parent->span_id;
    ids.parent_source = event_loop ? "event_loop" : "thread";
    ++(event_loop ? stats_.parent_from_event_loop : stats_.parent_from_thread);
  } else if (context) {
    ids.group = NewGroup(context->trace_id, /*settled=*/true);
  } else {
    ids.group = NewGroup(NewTraceId(), /*settled=*/false);
  }
}

void SpanAssembler::OnHttpRequestStarted(const conntrack::ConnectionInfo& connection,
                                         const conntrack::HttpMessageRecord& request) {
  if (open_requests_.size() >= options_.max_open_requests) {
    ++stats_.open_requests_dropped;  // its span gets fresh ids when it finishes
    return;
  }
  RequestKey key{connection.conn_id, request.request_index};
  // The ids are decided in the table node they are kept in, out of the table.
  OpenRequests::node_type node;
  if (!spare_request_nodes_.empty()) {
    node = std::move(spare_request_nodes_.back());
    spare_request_nodes_.pop_back();
  } else {
    node = open_requests_.extract(open_requests_.try_emplace(key).first);
  }
  node.mapped().Reset();
  StartRequest(connection, request, key, node.mapped());
  node.key() = key;
  auto inserted = open_requests_.insert(std::move(node));
  if (!inserted.inserted) {
    inserted.position->second = std::move(inserted.node.mapped());
    inserted.node.mapped().group.reset();
    if (spare_request_nodes_.size() < kMaxSpareRequestNodes) spare_request_nodes_.push_back(std::move(inserted.node));
  }
}

void SpanAssembler::StartRequest(const conntrack::ConnectionInfo& connection,
                                 const conntrack::HttpMessageRecord& request, const RequestKey& key,
                                 RequestIds& ids) {
  bool server = connection.role == FT_ROLE_SERVER;
  if (server) {
    DecideServerIds(connection, request, ids);
  } else {
    DecideClientIds(connection, request, ids);
  }
  ids.pid = connection.pid;
  ids.tid = request.tid;
  ids.start_ns = request.start_ns;
  ids.server = server;
  ++ids.group->open_requests;
  const ft_tuple& t = connection.tuple;
  ids.endpoints = server ? EndpointKey(t.remote_addr, t.remote_port, t.local_addr, t.local_port)
                         : EndpointKey(t.local_addr, t.local_port, t.remote_addr, t.remote_port);
  if (server) {
    auto& in_flight = server_in_flight_[connection.pid];
    // A thread reading a new request on another connection while one it read is still
    // unanswered multiplexes: the process runs an event loop.
    if (!event_loop_pids_.contains(connection.pid)) {
      bool multiplexing = std::any_of(in_flight.begin(), in_flight.end(), [&](const RequestKey& other) {
        auto open = open_requests_.find(other);
        return other.conn_id != key.conn_id && open != open_requests_.end() && open->second.tid == request.tid;
      });
      if (multiplexing) {
        if (event_loop_pids_.size() < options_.max_event_loop_processes)
          event_loop_pids_.insert(connection.pid);
        else
          ++stats_.event_loop_table_full;
      }
    }
    in_flight.push_back(key);
    if (request.start_seq && ids.parent_source.empty()) {
      auto& waiting = WaitingServers(ids.endpoints);
      if (waiting.size() >= kMaxUnmatchedPerConnection) waiting.erase(waiting.begin());
      waiting.push_back({*request.start_seq, key});
      ids.waiting_for_client = true;
    }
    return;
  }
  const Endpoints& endpoints = ids.endpoints;
  if (request.start_seq) {
    // The server on this host may have read this request before its write reached us.
    if (auto it = unmatched_server_requests_.find(endpoints); it != unmatched_server_requests_.end()) {
      auto& waiting = it->second;
      auto match = std::find_if(waiting.begin(), waiting.end(),
                                [&](const UnmatchedServer& w) { return w.seq == *request.start_seq; });
      std::optional<RequestKey> server_key;
      if (match != waiting.end()) {
        server_key = match->key;
        waiting.erase(match);
      }
      if (waiting.empty()) EraseWaitingServers(it);
      if (server_key) {
        LinkLateServer(*server_key, ids);
        return;
      }
    }
    auto& queue = unmatched_client_requests_[endpoints];
    if (queue.size() >= kMaxUnmatchedPerConnection) queue.erase(queue.begin());
    queue.push_back({*request.start_seq, ids.span_id, ids.group});
  }
}

const SpanAssembler::GroupPtr& SpanAssembler::Root(const GroupPtr& group) {
  const GroupPtr* root = &group;
  while ((*root)->merged_into) root = &(*root)->merged_into;
  return *root;
}

bool SpanAssembler::Merge(const GroupPtr& from_any, const GroupPtr& into_any) {
  GroupPtr from = Root(from_any), into = Root(into_any);
  if (from == into) return true;
  if (from->settled && into->settled && from->trace_id != into->trace_id) return false;
  if (from->settled && !into->settled) {
    into->trace_id = from->trace_id;
    into->adopted = from->adopted;
    into->settled = true;
  }
  into->open_requests += from->open_requests;
  from->open_requests = 0;
  if (!from->held.empty()) {
    if (into->held.empty()) {
      into->first_held_ns = from->first_held_ns;
      holding_[into.get()] = into;
    } else {
      into->first_held_ns = std::min(into->first_held_ns, from->first_held_ns);
    }
    for (auto& entry : from->held) into->held.push_back(std::move(entry));
    from->held.clear();
    holding_.erase(from.get());
  }
  from->merged_into = into;
  if (into->settled) Settle(into);
  return true;
}

void SpanAssembler::LinkLateServer(const RequestKey& server_key, const RequestIds& client) {
  auto server = open_requests_.find(server_key);
  if (server == open_requests_.end() || !server->second.parent_source.empty()) return;
  if (!Merge(server->second.group, client.group)) {
    ++stats_.same_host_not_linked;
    return;
  }
  server->second.group = Root(client.group);
  server->second.parent_span_id = client.span_id;
  server->second.parent_source = "same_host";
  ++stats_.parent_from_same_host;
  ++stats_.parent_from_same_host_late;
}

void SpanAssembler::ForgetWaitingServer(const Endpoints& endpoints, const RequestKey& key) {
  auto it = unmatched_server_requests_.find(endpoints);
  if (it == unmatched_server_requests_.end()) return;
  std::erase_if(it->second, [&](const UnmatchedServer& w) { return w.key == key; });
  if (it->second.empty()) EraseWaitingServers(it);
}

std::vector<SpanAssembler::UnmatchedServer>& SpanAssembler::WaitingServers(const Endpoints& endpoints) {
  if (auto it = unmatched_server_requests_.find(endpoints); it != unmatched_server_requests_.end()) return it->second;
  if (spare_waiting_nodes_.empty()) return unmatched_server_requests_[endpoints];
  UnmatchedServers::node_type node = std::move(spare_waiting_nodes_.back());
  spare_waiting_nodes_.pop_back();
  node.key() = endpoints;
  return unmatched_server_requests_.insert(std::move(node)).position->second;
}

void SpanAssembler::EraseWaitingServers(UnmatchedServers::iterator it) {
  UnmatchedServers::node_type node = unmatched_server_requests_.extract(it);
  if (spare_waiting_nodes_.size() < kMaxSpareWaitingNodes) {
    node.mapped().clear();
    spare_waiting_nodes_.push_back(std::move(node));
  }
}

void SpanAssembler::ForgetInFlight(uint32_t pid, const RequestKey& key) {
  auto it = server_in_flight_.find(pid);
  if (it == server_in_flight_.end()) return;
  std::erase(it->second, key);
  if (it->second.empty() && server_in_flight_.size() > kMaxIdleInFlightProcesses) server_in_flight_.erase(it);
}

std::string_view SpanAssembler::RemoteAddressText(const uint8_t address[16]) {
  if (remote_address_text_.empty() || std::memcmp(address, remote_address_.data(), remote_address_.size()) != 0) {
    remote_address_text_ = FormatAddress(address);
    std::memcpy(remote_address_.data(), address, remote_address_.size());
  }
  return remote_address_text_;
}

size_t SpanAssembler::server_requests_in_flight() const {
  size_t count = 0;
  for (const auto& [pid, keys] : server_in_flight_) count += keys.size();
  return count;
}

void SpanAssembler::Emit(Span& span, bool trace_from_header, const TraceGroup& group) {
  span.trace_id = group.trace_id;
  if (group.adopted && !trace_from_header) span.attributes.push_back({"flowtracer.trace.adopted", true});
  ++stats_.spans;
  handler_(span);
}

void SpanAssembler::Settle(const GroupPtr& group) {
  group->settled = true;
  if (group->held.empty()) return;
  held_span_count_ -= group->held.size();
  HeldSpans held = std::move(group->held);
  group->held.clear();
  // Its node is kept for the next group to hold a span (still pointing at this group,
  // which it keeps alive until then).
  if (auto node = holding_.extract(group.get())) spare_holding_node_ = std::move(node);
  for (auto& [span, from_header] : held) {
    Emit(*span, from_header, *group);
    auto& spare = spare_spans_[span->kind == SpanKind::kServer];
    if (spare.size() < kMaxSpareSpans) spare.push_back(std::move(span));
  }
  held.clear();
  // A list a burst grew is let go: kept, it would hold its memory for good.
  if (spare_held_.size() < kMaxSpareHeldLists && held.capacity() <= kMaxSpareHeldListSpans)
    spare_held_.push_back(std::move(held));
}

void SpanAssembler::CloseRequest(const GroupPtr& any) {
  const GroupPtr& group = Root(any);
  if (group->open_requests > 0) --group->open_requests;
  // Nothing of the group is open: no child call can join it and change its trace id.
  if (group->open_requests == 0 && !group->settled) Settle(group);
}

void SpanAssembler::Hold(const GroupPtr& group, std::unique_ptr<Span> span, bool trace_from_header,
                         uint64_t now_ns) {
  if (held_span_count_ >= options_.max_held_spans) {
    // Full: the group holding the oldest span goes out with the trace id it has now.
    auto oldest = std::min_element(holding_.begin(), holding_.end(), [](const auto& a, const auto& b) {
      return a.second->first_held_ns < b.second->first_held_ns;
    });
    if (oldest != holding_.end()) {
      GroupPtr victim = oldest->second;
      stats_.held_spans_forced_out_count += victim->held.size();
      Settle(victim);
    }
  }
  if (group->held.empty()) {
    group->first_held_ns = now_ns;
    if (spare_holding_node_) {
      spare_holding_node_.key() = group.get();
      spare_holding_node_.mapped() = group;
      holding_.insert(std::move(spare_holding_node_));  // a group is held once: no clash
    } else {
      holding_[group.get()] = group;
    }
    if (group->held.capacity() == 0 && !spare_held_.empty()) {
      group->held = std::move(spare_held_.back());
      spare_held_.pop_back();
    }
  }
  group->held.emplace_back(std::move(span), trace_from_header);
  ++held_span_count_;
}

void SpanAssembler::OnHttpExchange(const conntrack::ConnectionInfo& connection,
                                   const conntrack::HttpExchange& exchange) {
  RequestKey key{connection.conn_id, exchange.request.request_index};
  // Read where they were kept: the node leaves the table and is kept for the next request.
  OpenRequests::node_type node;
  if (auto it = open_requests_.find(key); it != open_requests_.end()) node = open_requests_.extract(it);
  if (!node) {
    unopened_ids_.Reset();
    unopened_ids_.group = NewGroup(NewTraceId(), /*settled=*/true);
    unopened_ids_.span_id = NewSpanId();
  }
  RequestIds& ids = node ? node.mapped() : unopened_ids_;
  OnRequestEnded(connection, exchange, key, ids);
  ids.group.reset();  // a kept node holds no group
  if (node && spare_request_nodes_.size() < kMaxSpareRequestNodes) spare_request_nodes_.push_back(std::move(node));
}

void SpanAssembler::OnRequestEnded(const conntrack::ConnectionInfo& connection,
                                   const conntrack::HttpExchange& exchange, const RequestKey& key,
                                   const RequestIds& ids) {
  if (connection.role == FT_ROLE_SERVER) {
    ForgetInFlight(connection.pid, key);
    if (ids.waiting_for_client) ForgetWaitingServer(ids.endpoints, key);
  }
  const bool server = connection.role == FT_ROLE_SERVER;
  std::unique_ptr<Span>& span = reused_span_[server];
  BuildSpan(connection, exchange, ids, span.get());
  CloseRequest(ids.group);  // may settle it, releasing the spans it held
  const GroupPtr& group = Root(ids.group);
  if (group->settled) {
    Emit(*span, ids.trace_from_header, *group);
  } else {
    uint64_t end_ns = exchange.response ? exchange.response->end_ns : exchange.request.end_ns;
    Hold(group, std::move(span), ids.trace_from_header, end_ns);
    // The next span of this kind is built over a released one, or from nothing.
    std::vector<std::unique_ptr<Span>>& spare = spare_spans_[server];
    if (spare.empty()) {
      span = std::make_unique<Span>();
    } else {
      span = std::move(spare.back());
      spare.pop_back();
    }
  }
}

void SpanAssembler::Forget(const conntrack::ConnectionInfo& connection) {
  const ft_tuple& t = connection.tuple;
  if (connection.role == FT_ROLE_CLIENT) {
    // Requests the server side never read (or a remote server): nothing will match them.
    unmatched_client_requests_.erase(EndpointKey(t.local_addr, t.local_port, t.remote_addr, t.remote_port));
  } else {
    unmatched_server_requests_.erase(EndpointKey(t.remote_addr, t.remote_port, t.local_addr, t.local_port));
  }
  // Requests whose exchange will never come (the tracker dropped them) no longer count as
  // in flight, at once; they leave the open table, and stop keeping their group open, at
  // the next sweep (within a second): a scan of every open request for each of thousands
  // of closes, or of connections shed at once, would cost their product.
  if (auto it = server_in_flight_.find(connection.pid); it != server_in_flight_.end()) {
    std::erase_if(it->second, [&](const RequestKey& k) { return k.conn_id == connection.conn_id; });
    if (it->second.empty()) server_in_flight_.erase(it);
  }
  forgotten_connections_.insert(connection.conn_id);
}

void SpanAssembler::OnConnectionClosed(const conntrack::ConnectionInfo& connection, uint64_t, uint64_t) {
  Forget(connection);
}

void SpanAssembler::OnConnectionForgotten(const conntrack::ConnectionInfo& connection) {
  Forget(connection);
}

void SpanAssembler::ExpireOpenRequests(uint64_t now_ns) {
  std::vector<GroupPtr> dropped;
  std::erase_if(open_requests_, [&](auto& entry) {
    if (!forgotten_connections_.contains(entry.first.conn_id)) return false;
    dropped.push_back(entry.second.group);
    return true;
  });
  forgotten_connections_.clear();
  for (const GroupPtr& group : dropped) CloseRequest(group);

  std::vector<std::pair<RequestKey, RequestIds>> expired;
  for (const auto& [key, ids] : open_requests_) {
    if (ids.start_ns + options_.max_open_age_ns <= now_ns) expired.emplace_back(key, ids);
  }
  for (const auto& [key, ids] : expired) {
    open_requests_.erase(key);
    if (ids.server) {
      ForgetInFlight(ids.pid, key);
      ForgetWaitingServer(ids.endpoints, key);
    }
    CloseRequest(ids.group);
    ++stats_.open_requests_expired;
  }
}

void SpanAssembler::Tick(uint64_t now_ns) {
  // A sweep of every open request: once a second is enough for a 60 s bound.
  if (now_ns >= last_open_sweep_ns_ + 1000ull * 1000 * 1000) {
    last_open_sweep_ns_ = now_ns;
    ExpireOpenRequests(now_ns);
  }
  std::vector<GroupPtr> expired;
  for (const auto& [raw, group] : holding_) {
    if (now_ns >= group->first_held_ns + options_.max_hold_ns) expired.push_back(group);
  }
  for (const GroupPtr& group : expired) {
    stats_.held_spans_forced_out_age += group->held.size();
    Settle(group);
  }
}

void SpanAssembler::Flush() {
  std::vector<GroupPtr> all;
  for (const auto& [raw, group] : holding_) all.push_back(group);
  for (const GroupPtr& group : all) {
    stats_.held_spans_released_at_exit += group->held.size();
    Settle(group);
  }
}

SpanAssembler::ThreadParent SpanAssembler::ServerRequestOnThread(uint32_t pid, uint32_t tid) {
  ThreadParent found;
  auto in_flight = server_in_flight_.find(pid);
  if (in_flight == server_in_flight_.end()) return found;
  GroupPtr group;
  for (const RequestKey& key : in_flight->second) {
    auto open = open_requests_.find(key);
    if (open == open_requests_.end() || open->second.tid != tid) continue;
    group = Root(open->second.group);
    found.span_id = open->second.span_id;
    ++found.candidates;
  }
  // The same rule as for client calls: in an event loop, only a lone request is certain.
  if (found.candidates == 1 && event_loop_pids_.contains(pid) && in_flight->second.size() > 1) {
    found.candidates = 2;
  }
  if (found.candidates == 1) {
    // The trace id leaves the process with the message: from now on it cannot change.
    Settle(group);
    found.trace_id = group->trace_id;
  }
  return found;
}

namespace {
// Writes a span's attributes over those of the span built before it, in place: keys and
// string values keep their storage, so a span like the last costs no allocation. Inlined
// into BuildSpan, where every key is a literal: comparing a slot's key with it is then a
// length test and a few loads, not a call to memcmp.
class AttributeWriter {
 public:
  explicit AttributeWriter(std::vector<Attribute>* attributes) : attributes_(*attributes) {}
  AttributeWriter(const AttributeWriter&) = delete;
  AttributeWriter& operator=(const AttributeWriter&) = delete;
  ~AttributeWriter() { attributes_.resize(count_); }

  [[gnu::always_inline]] void String(std::string_view key, std::string_view value) {
    if (Attribute* slot = Next(key)) {
      if (auto* string_value = std::get_if<std::string>(&slot->value)) {
        text::CopyInto(*string_value, value);  // a span's own attribute is never the value
      } else {
        slot->value = std::string(value);
      }
    } else {
      attributes_.push_back({std::string(key), std::string(value)});
    }
  }
  [[gnu::always_inline]] void Int(std::string_view key, int64_t value) { Scalar(key, value); }
  [[gnu::always_inline]] void Bool(std::string_view key, bool value) { Scalar(key, value); }

 private:
  // The next slot with `key` written into it, or null when a new one must be added.
  [[gnu::always_inline]] Attribute* Next(std::string_view key) {
    if (count_ == attributes_.size()) {
      ++count_;
      return nullptr;
    }
    Attribute& slot = attributes_[count_++];
    // Spelled out: operator== is not always inlined, and then memcmp is called with a
    // length it cannot see is a small constant.
    if (slot.key.size() != key.size() || std::memcmp(slot.key.data(), key.data(), key.size()) != 0)
      slot.key.assign(key);
    return &slot;
  }
  template <typename T>
  [[gnu::always_inline]] void Scalar(std::string_view key, T value) {
    if (Attribute* slot = Next(key)) {
      if (T* same = std::get_if<T>(&slot->value)) {
        *same = value;
      } else {
        slot->value = value;
      }
    } else {
      attributes_.push_back({std::string(key), value});
    }
  }

  std::vector<Attribute>& attributes_;
  size_t count_ = 0;
};
}  // namespace

void SpanAssembler::BuildSpan(const conntrack::ConnectionInfo& connection,
                              const conntrack::HttpExchange& exchange, const RequestIds& ids, Span* out) {
  const conntrack::HttpMessageRecord& request = exchange.request;
  const http1::Message& head = request.head;
  const process::ProcessInfo& process = processes_->Get(connection.pid, connection.comm);
  bool server = connection.role == FT_ROLE_SERVER;

  // Every field is written: `out` holds the previous span.
  Span& span = *out;
  span.trace_id = ids.group->trace_id;  // final when emitted (see Emit)
  span.span_id = ids.span_id;
  span.parent_span_id = ids.parent_span_id;
  span.trace_state = ids.trace_state;
  span.kind = server ? SpanKind::kServer : SpanKind::kClient;
  span.service = process.service_name;
  span.pid = connection.pid;
  span.tuple = connection.tuple;
  span.status = StatusCode::kUnset;

  const std::string_view path = PathOf(head.target());
  TemplatePathOf(path, &templated_path_);
  const std::string_view route = routes_.Admit(span.service, templated_path_);
  span.name.assign(head.method()).append(1, ' ').append(route);

  uint64_t end_ns = exchange.response ? exchange.response->end_ns : request.end_ns;
  span.start_unix_ns = request.start_ns + options_.monotonic_to_unix_ns;
  span.end_unix_ns = std::max(end_ns, request.start_ns) + options_.monotonic_to_unix_ns;

  const std::string_view remote_address = RemoteAddressText(connection.tuple.remote_addr);
  std::string_view host = HostWithoutPort(head.Header("host"));
  span.attributes.reserve(kSpanAttributesReserved);
  AttributeWriter a(&span.attributes);
  a.String("http.request.method", head.method());
  a.String("url.path", path);
  a.String("http.route", route);
  if (server) {
    if (host.empty()) {
      a.String("server.address", FormatAddress(connection.tuple.local_addr));
    } else {
      a.String("server.address", host);
    }
    a.Int("server.port", connection.tuple.local_port);
    a.String("client.address", remote_address);
    a.Int("client.port", connection.tuple.remote_port);
  } else {
    a.String("server.address", host.empty() ? remote_address : host);
    a.Int("server.port", connection.tuple.remote_port);
  }
  a.String("network.peer.address", remote_address);
  a.Int("network.peer.port", connection.tuple.remote_port);
  if (head.minor_version >= 0 && head.minor_version <= 9) {
    const char version[] = {'1', '.', static_cast<char>('0' + head.minor_version)};
    a.String("network.protocol.version", std::string_view(version, sizeof(version)));
  } else {
    a.String("network.protocol.version", "1." + std::to_string(head.minor_version));
  }
  a.Int("http.request.body.size", static_cast<int64_t>(request.body_bytes));
  if (std::string_view agent = head.Header("user-agent"); !agent.empty()) a.String("user_agent.original", agent);
  a.Int("process.pid", connection.pid);
  a.Int("thread.id", request.tid);

  if (exchange.response) {
    int status = exchange.response->head.status_code;
    a.Int("http.response.status_code", status);
    a.Int("http.response.body.size", static_cast<int64_t>(exchange.response->body_bytes));
    // Semantic conventions: 5xx is an error for servers; 4xx too for clients.
    if (status >= 500 || (!server && status >= 400)) {
      span.status = StatusCode::kError;
      a.String("error.type", std::to_string(status));
    }
  } else {
    span.status = StatusCode::kError;
    a.String("error.type", exchange.error_type.empty() ? std::string_view("no_response") : exchange.error_type);
  }
  if (!ids.parent_source.empty()) a.String("flowtracer.parent.source", ids.parent_source);
  if (!ids.unresolved.empty()) a.String("flowtracer.parent.unresolved", ids.unresolved);
  if (connection.role_inferred) a.Bool("flowtracer.role_inferred", true);
}

}  // namespace flowtracer::spans
