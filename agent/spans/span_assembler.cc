#include "agent/spans/span_assembler.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <optional>

namespace flowtracer::spans {
namespace {

std::string EndpointKey(const uint8_t addr_a[16], uint16_t port_a, const uint8_t addr_b[16], uint16_t port_b) {
  std::string key(36, '\0');
  std::memcpy(key.data(), addr_a, 16);
  std::memcpy(key.data() + 16, &port_a, 2);
  std::memcpy(key.data() + 18, addr_b, 16);
  std::memcpy(key.data() + 34, &port_b, 2);
  return key;
}

// Host header "example.com:8080" -> "example.com"; "[::1]:80" -> "::1".
std::string_view HostWithoutPort(std::string_view host) {
  if (host.starts_with('[')) {
    size_t close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(1, close - 1);
  }
  size_t colon = host.find(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

}  // namespace

std::string FormatAddress(const uint8_t address[16]) {
  static const uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char text[INET6_ADDRSTRLEN] = {};
  if (std::memcmp(address, kMappedPrefix, 12) == 0) {
    inet_ntop(AF_INET, address + 12, text, sizeof(text));
  } else {
    inet_ntop(AF_INET6, address, text, sizeof(text));
  }
  return text;
}

SpanAssembler::SpanAssembler(AssemblerOptions options, process::ProcessRegistry* processes,
                             SpanHandler handler)
    : options_(options),
      processes_(processes),
      handler_(std::move(handler)),
      routes_(options.max_routes_per_service) {}

SpanAssembler::RequestIds SpanAssembler::DecideServerIds(const conntrack::ConnectionInfo& connection,
                                                         const conntrack::HttpMessageRecord& request) {
  RequestIds ids;
  ids.span_id = NewSpanId();
  // The same-host client request this one answers is taken off its queue even when the
  // traceparent decides the parent: the queue must stay in step with the connection.
  const ft_tuple& t = connection.tuple;
  std::optional<RequestIds> client;
  auto it = unmatched_client_requests_.find(EndpointKey(t.remote_addr, t.remote_port, t.local_addr, t.local_port));
  if (it != unmatched_client_requests_.end() && !it->second.empty()) {
    client = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) unmatched_client_requests_.erase(it);
  }
  if (auto context = ParseTraceparent(request.head.Header("traceparent"))) {
    ids.trace_id = context->trace_id;
    ids.parent_span_id = context->parent_id;
    ids.parent_source = "traceparent";
    ++stats_.parent_from_traceparent;
    return ids;
  }
  if (client) {
    ids.trace_id = client->trace_id;
    ids.parent_span_id = client->span_id;
    ids.parent_source = "same_host";
    ++stats_.parent_from_same_host;
    return ids;
  }
  ids.trace_id = NewTraceId();
  return ids;
}

SpanAssembler::RequestIds SpanAssembler::DecideClientIds(const conntrack::ConnectionInfo& connection,
                                                         const conntrack::HttpMessageRecord& request) {
  RequestIds ids;
  // The server request this call is made for: only when exactly one is in flight on the
  // sending thread. Several (an event loop serving concurrent requests) is ambiguous,
  // and a wrong parent is worse than none.
  const RequestIds* parent = nullptr;
  int candidates = 0;
  if (auto in_flight = server_in_flight_.find(connection.pid); in_flight != server_in_flight_.end()) {
    for (const RequestKey& key : in_flight->second) {
      auto open = open_requests_.find(key);
      if (open != open_requests_.end() && open->second.tid == request.tid) {
        parent = &open->second;
        ++candidates;
      }
    }
  }
  // Messaging: a message being processed on the thread is a parent like a server request.
  RequestIds other_parent;
  if (thread_parent_lookup_) {
    ThreadParent other = thread_parent_lookup_(connection.pid, request.tid);
    if (other.candidates == 1 && candidates == 0) {
      other_parent.trace_id = other.trace_id;
      other_parent.span_id = other.span_id;
      parent = &other_parent;
    }
    candidates += other.candidates;
  }
  auto context = ParseTraceparent(request.head.Header("traceparent"));
  if (context) {
    // The application propagates (an SDK): its ids are the ones the callee will see.
    ids.trace_id = context->trace_id;
    ids.span_id = context->parent_id;
  } else {
    ids.span_id = NewSpanId();
  }
  if (candidates == 1 && (!context || parent->trace_id == context->trace_id)) {
    ids.trace_id = parent->trace_id;
    ids.parent_span_id = parent->span_id;
    ids.parent_source = "thread";
    ++stats_.parent_from_thread;
  } else if (candidates > 1) {
    ids.ambiguous = true;
    ++stats_.parent_ambiguous;
  }
  if (IsZero(ids.trace_id)) ids.trace_id = NewTraceId();
  return ids;
}

void SpanAssembler::OnHttpRequestStarted(const conntrack::ConnectionInfo& connection,
                                         const conntrack::HttpMessageRecord& request) {
  if (open_requests_.size() >= options_.max_open_requests) {
    ++stats_.open_requests_dropped;  // its span gets fresh ids when it finishes
    return;
  }
  RequestKey key{connection.conn_id, request.request_index};
  bool server = connection.role == FT_ROLE_SERVER;
  RequestIds ids = server ? DecideServerIds(connection, request) : DecideClientIds(connection, request);
  ids.pid = connection.pid;
  ids.tid = request.tid;
  if (server) {
    server_in_flight_[connection.pid].push_back(key);
  } else {
    const ft_tuple& t = connection.tuple;
    auto& queue = unmatched_client_requests_[EndpointKey(t.local_addr, t.local_port, t.remote_addr, t.remote_port)];
    if (queue.size() < 64) queue.push_back(ids);
  }
  open_requests_[key] = ids;
}

void SpanAssembler::ForgetInFlight(uint32_t pid, const RequestKey& key) {
  auto it = server_in_flight_.find(pid);
  if (it == server_in_flight_.end()) return;
  std::erase(it->second, key);
  if (it->second.empty()) server_in_flight_.erase(it);
}

void SpanAssembler::OnHttpExchange(const conntrack::ConnectionInfo& connection,
                                   const conntrack::HttpExchange& exchange) {
  RequestKey key{connection.conn_id, exchange.request.request_index};
  RequestIds ids;
  if (auto it = open_requests_.find(key); it != open_requests_.end()) {
    ids = it->second;
    open_requests_.erase(it);
  } else {
    ids.trace_id = NewTraceId();
    ids.span_id = NewSpanId();
  }
  if (connection.role == FT_ROLE_SERVER) ForgetInFlight(connection.pid, key);
  Span span = BuildSpan(connection, exchange, ids);
  ++stats_.spans;
  handler_(span);
}

void SpanAssembler::OnConnectionClosed(const conntrack::ConnectionInfo& connection, uint64_t, uint64_t) {
  const ft_tuple& t = connection.tuple;
  if (connection.role == FT_ROLE_CLIENT) {
    // Requests the server side never read (or a remote server): nothing will match them.
    unmatched_client_requests_.erase(EndpointKey(t.local_addr, t.local_port, t.remote_addr, t.remote_port));
  }
  // Exchanges of this connection were all emitted before the close reached us.
  std::erase_if(open_requests_, [&](const auto& entry) { return entry.first.conn_id == connection.conn_id; });
  if (auto it = server_in_flight_.find(connection.pid); it != server_in_flight_.end()) {
    std::erase_if(it->second, [&](const RequestKey& k) { return k.conn_id == connection.conn_id; });
    if (it->second.empty()) server_in_flight_.erase(it);
  }
}

SpanAssembler::ThreadParent SpanAssembler::ServerRequestOnThread(uint32_t pid, uint32_t tid) const {
  ThreadParent found;
  auto in_flight = server_in_flight_.find(pid);
  if (in_flight == server_in_flight_.end()) return found;
  for (const RequestKey& key : in_flight->second) {
    auto open = open_requests_.find(key);
    if (open == open_requests_.end() || open->second.tid != tid) continue;
    found.trace_id = open->second.trace_id;
    found.span_id = open->second.span_id;
    ++found.candidates;
  }
  return found;
}

Span SpanAssembler::BuildSpan(const conntrack::ConnectionInfo& connection,
                              const conntrack::HttpExchange& exchange, const RequestIds& ids) {
  const conntrack::HttpMessageRecord& request = exchange.request;
  const http1::Message& head = request.head;
  const process::ProcessInfo& process = processes_->Get(connection.pid, connection.comm);
  bool server = connection.role == FT_ROLE_SERVER;

  Span span;
  span.trace_id = ids.trace_id;
  span.span_id = ids.span_id;
  span.parent_span_id = ids.parent_span_id;
  span.kind = server ? SpanKind::kServer : SpanKind::kClient;
  span.service = process.service_name;
  span.pid = connection.pid;
  span.tuple = connection.tuple;

  std::string route = routes_.Admit(span.service, TemplatePath(head.target));
  span.name = head.method + " " + route;

  uint64_t end_ns = exchange.response ? exchange.response->end_ns : request.end_ns;
  span.start_unix_ns = request.start_ns + options_.monotonic_to_unix_ns;
  span.end_unix_ns = std::max(end_ns, request.start_ns) + options_.monotonic_to_unix_ns;

  std::string local_address = FormatAddress(connection.tuple.local_addr);
  std::string remote_address = FormatAddress(connection.tuple.remote_addr);
  std::string_view host = HostWithoutPort(head.Header("host"));
  auto& a = span.attributes;
  a.push_back({"http.request.method", head.method});
  a.push_back({"url.path", std::string(PathOf(head.target))});
  a.push_back({"http.route", route});
  if (server) {
    a.push_back({"server.address", host.empty() ? local_address : std::string(host)});
    a.push_back({"server.port", int64_t{connection.tuple.local_port}});
    a.push_back({"client.address", remote_address});
    a.push_back({"client.port", int64_t{connection.tuple.remote_port}});
  } else {
    a.push_back({"server.address", host.empty() ? remote_address : std::string(host)});
    a.push_back({"server.port", int64_t{connection.tuple.remote_port}});
  }
  a.push_back({"network.peer.address", remote_address});
  a.push_back({"network.peer.port", int64_t{connection.tuple.remote_port}});
  a.push_back({"network.protocol.version", "1." + std::to_string(head.minor_version)});
  a.push_back({"http.request.body.size", static_cast<int64_t>(request.body_bytes)});
  if (std::string_view agent = head.Header("user-agent"); !agent.empty())
    a.push_back({"user_agent.original", std::string(agent)});
  a.push_back({"process.pid", int64_t{connection.pid}});
  a.push_back({"thread.id", int64_t{request.tid}});

  if (exchange.response) {
    int status = exchange.response->head.status_code;
    a.push_back({"http.response.status_code", int64_t{status}});
    a.push_back({"http.response.body.size", static_cast<int64_t>(exchange.response->body_bytes)});
    // Semantic conventions: 5xx is an error for servers; 4xx too for clients.
    if (status >= 500 || (!server && status >= 400)) {
      span.status = StatusCode::kError;
      a.push_back({"error.type", std::to_string(status)});
    }
  } else {
    span.status = StatusCode::kError;
    a.push_back({"error.type", exchange.error_type.empty() ? "no_response" : exchange.error_type});
  }
  if (!ids.parent_source.empty()) a.push_back({"flowtracer.parent.source", ids.parent_source});
  if (ids.ambiguous) a.push_back({"flowtracer.parent.unresolved", "ambiguous"});
  if (connection.role_inferred) a.push_back({"flowtracer.role_inferred", true});
  return span;
}

}  // namespace flowtracer::spans
