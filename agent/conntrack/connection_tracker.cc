#include "agent/conntrack/connection_tracker.h"

#include <malloc.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>

namespace flowtracer::conntrack {

struct ConnectionTracker::Connection {
  ConnectionInfo info;
  ByteStream streams[2];  // indexed by ft_direction
  // Per-protocol state is made when the protocol is found and, for HTTP, released while
  // the connection is quiet: an idle keep-alive connection then holds this struct alone.
  std::unique_ptr<Http1Conversation> http;
  std::unique_ptr<NatsConversation> nats;
  uint64_t next_request_index = 0;  // HTTP numbering kept across released conversations
  uint64_t last_activity_ns = 0;
  uint64_t control_skip_until[2] = {0, 0};  // what the kernel was last told
  bool control_ignore = false;
  bool shed = false;       // outside the traced share: the kernel is told to ignore it
  uint32_t share_key = 0;  // ConnectionShareKey of the tuple

  explicit Connection(size_t max_buffered)
      : streams{ByteStream(max_buffered), ByteStream(max_buffered)} {}

  ByteStream& requests() {
    return streams[info.role == FT_ROLE_CLIENT ? FT_DIR_EGRESS : FT_DIR_INGRESS];
  }
  ByteStream& responses() {
    return streams[info.role == FT_ROLE_CLIENT ? FT_DIR_INGRESS : FT_DIR_EGRESS];
  }
  Http1Conversation& Http() {
    if (!http) http = std::make_unique<Http1Conversation>(next_request_index);
    return *http;
  }
};

void ConnectionTracker::ConnectionDeleter::operator()(Connection* connection) const {
  connection->~Connection();
  memory->deallocate(connection, sizeof(Connection), alignof(Connection));
}

ConnectionTracker::ConnectionTracker(TrackerOptions options, TrackerSink* sink, KernelControl* control,
                                     SocketLiveness* liveness)
    : options_(options), sink_(sink), control_(control), liveness_(liveness) {
  if (!liveness_ && options_.close_check_idle_ns > 0) {
    own_liveness_ = std::make_unique<ProcSocketLiveness>();
    liveness_ = own_liveness_.get();
  }
}

ConnectionTracker::~ConnectionTracker() = default;

size_t ConnectionTracker::connection_struct_bytes() { return sizeof(Connection); }

void ConnectionTracker::OnRecord(const void* data, size_t size) {
  RawEvent event = DecodeRawEvent(data, size);
  if (auto* conn = std::get_if<ft_conn_event>(&event)) {
    OnConnEvent(*conn);
  } else if (auto* io = std::get_if<DataEvent>(&event)) {
    OnData(*io);
  } else {
    ++stats_.malformed_records;
  }
}

ConnectionTracker::Connection* ConnectionTracker::Find(uint64_t conn_id) {
  auto it = connections_.find(conn_id);
  return it == connections_.end() ? nullptr : it->second.get();
}

void ConnectionTracker::OnConnEvent(const ft_conn_event& event) {
  if (event.header.type == FT_EVENT_CONN_OPEN) {
    if (Find(event.header.conn_id)) return;
    if (connections_.size() >= options_.max_connections) {
      // Evict the least recently active connection: bounded memory beats completeness.
      auto oldest = std::min_element(connections_.begin(), connections_.end(), [](auto& a, auto& b) {
        return a.second->last_activity_ns < b.second->last_activity_ns;
      });
      ++stats_.connections_evicted_full;
      if (sink_) sink_->OnConnectionForgotten(oldest->second->info);
      // One the kernel ignores (shed, or no protocol we parse) looks the least active
      // however busy it is: its kernel entry stays (an LRU map ages it out), else the
      // kernel would copy its bytes for a connection no longer known here.
      Remove(oldest, /*forget_kernel_control=*/!oldest->second->control_ignore);
    }
    std::unique_ptr<Connection, ConnectionDeleter> connection(
        new (connection_memory_.allocate(sizeof(Connection), alignof(Connection)))
            Connection(options_.max_buffered_bytes_per_stream),
        ConnectionDeleter{&connection_memory_});
    ConnectionInfo& info = connection->info;
    info.conn_id = event.header.conn_id;
    info.pid = event.header.pid;
    info.comm.assign(event.comm, strnlen(event.comm, sizeof(event.comm)));
    info.tuple = event.tuple;
    info.role = static_cast<ft_role>(event.role);
    info.open_ns = event.header.timestamp_ns;
    connection->last_activity_ns = event.header.timestamp_ns;
    connection->share_key = ConnectionShareKey(info.tuple);
    Connection& added = *connections_.emplace(info.conn_id, std::move(connection)).first->second;
    if (added.share_key >= traced_share_) Shed(added);
    return;
  }
  auto it = connections_.find(event.header.conn_id);  // one lookup: churn closes as often as it opens
  if (it == connections_.end()) return;
  Process(*it->second, /*closing=*/true);
  if (sink_) sink_->OnConnectionClosed(it->second->info, event.bytes_sent, event.bytes_received);
  Remove(it);
}

void ConnectionTracker::OnData(const DataEvent& event) {
  Connection* connection = Find(event.header.header.conn_id);
  if (!connection) {
    ++stats_.data_for_unknown_connection;
    return;
  }
  const ft_data_event& data = event.header;
  connection->last_activity_ns = data.header.timestamp_ns;
  // Records the kernel wrote before it learnt the connection was shed.
  if (connection->shed) return;
  ByteStream& stream = connection->streams[data.direction & 1];
  // Parsed in place in the record; only what a later call completes is copied.
  stream.AddBorrowed(data.position, data.length, data.payload_offset, event.payload,
                     data.header.timestamp_ns, data.header.tid, data.seq_start);
  Process(*connection, /*closing=*/false);
  stream.KeepBorrowed();
}

namespace {

// True when `data` begins a request or response of HTTP/1.x (what detection looks for).
bool StartsHttp1(std::string_view data, protocols::MessageType type) {
  // RFC 9112 2.2: a server ignores empty lines received before a request line.
  if (type == protocols::MessageType::kRequest) {
    while (data.starts_with("\r\n")) data.remove_prefix(2);
  }
  if (data.empty()) return false;
  http1::Message head;
  auto state = http1::ParseHead(type, data, &head);
  return state == protocols::ParseState::kSuccess ||
         (state == protocols::ParseState::kNeedsMoreData && http1::FindMessageStart(type, data) == 0);
}

// Verbs only NATS clients send, and only servers (PING and PONG go both ways).
constexpr std::initializer_list<nats::Verb> kNatsClientVerbs = {
    nats::Verb::kConnect, nats::Verb::kPub, nats::Verb::kHpub, nats::Verb::kSub, nats::Verb::kUnsub};
constexpr std::initializer_list<nats::Verb> kNatsServerVerbs = {
    nats::Verb::kInfo, nats::Verb::kMsg, nats::Verb::kHmsg, nats::Verb::kOk, nats::Verb::kErr};

// True when `data` starts with a whole control line whose verb is one of `verbs`,
// after any PINGs and PONGs.
bool StartsNats(std::string_view data, std::initializer_list<nats::Verb> verbs) {
  for (int lines = 0; lines < 8; ++lines) {
    nats::Message message;
    if (nats::ParseControlLine(data, &message) != protocols::ParseState::kSuccess) return false;
    if (message.verb != nats::Verb::kPing && message.verb != nats::Verb::kPong)
      return std::find(verbs.begin(), verbs.end(), message.verb) != verbs.end();
    data.remove_prefix(message.control_bytes);
  }
  return false;
}

}  // namespace

void ConnectionTracker::Process(Connection& connection, bool closing) {
  ConnectionInfo& info = connection.info;
  if (info.protocol == Protocol::kOpaque) {
    connection.streams[0].SkipAll();
    connection.streams[1].SkipAll();
    return;
  }
  if (info.protocol == Protocol::kUnknown) {
    std::string_view egress = connection.streams[FT_DIR_EGRESS].Contiguous();
    std::string_view ingress = connection.streams[FT_DIR_INGRESS].Contiguous();
    // Whoever sends a request is the client: this also resolves the role of connections
    // opened before the agent started.
    if (StartsHttp1(egress, protocols::MessageType::kRequest) ||
        StartsHttp1(ingress, protocols::MessageType::kRequest)) {
      ft_role role = StartsHttp1(egress, protocols::MessageType::kRequest) ? FT_ROLE_CLIENT : FT_ROLE_SERVER;
      if (info.role == FT_ROLE_UNKNOWN) info.role_inferred = true;
      info.role = role;
      info.protocol = Protocol::kHttp1;
    } else if (StartsNats(egress, kNatsClientVerbs) || StartsNats(ingress, kNatsServerVerbs) ||
               StartsNats(egress, kNatsServerVerbs) || StartsNats(ingress, kNatsClientVerbs)) {
      // NATS: the server greets with INFO and the client answers CONNECT. A connection
      // older than the agent starts anywhere: verbs only one side sends decide the role.
      bool client = StartsNats(egress, kNatsClientVerbs) || StartsNats(ingress, kNatsServerVerbs);
      if (info.role == FT_ROLE_UNKNOWN) info.role_inferred = true;
      info.role = client ? FT_ROLE_CLIENT : FT_ROLE_SERVER;
      info.protocol = Protocol::kNats;
      if (!client) {
        // The broker's side repeats its clients' bytes and spans come from the clients:
        // the kernel stops copying it (a broker moves more bytes than anyone).
        ++stats_.nats_broker_connections_ignored;
        info.protocol = Protocol::kOpaque;
        UpdateKernelControl(connection);
        connection.streams[0].SkipAll();
        connection.streams[1].SkipAll();
        return;
      }
      connection.nats = std::make_unique<NatsConversation>();
    } else if (connection.streams[0].end_position() - connection.streams[0].read_position() +
                       connection.streams[1].end_position() - connection.streams[1].read_position() >=
                   options_.detect_bytes ||
               closing) {
      info.protocol = Protocol::kOpaque;
      ++stats_.connections_ignored;
      UpdateKernelControl(connection);
      connection.streams[0].SkipAll();
      connection.streams[1].SkipAll();
      return;
    } else {
      return;  // wait for more bytes
    }
  }

  if (info.protocol == Protocol::kNats) {
    ProcessNats(connection, closing);
    return;
  }

  const RequestStarted started = StartedCallback(connection);
  Http1Conversation& http = connection.Http();
  if (closing) {
    http.Close(connection.requests(), connection.responses(), &exchanges_, &started);
  } else {
    http.Process(connection.requests(), connection.responses(), &exchanges_, &started);
  }
  if (http.upgraded()) info.protocol = Protocol::kOpaque;
  Emit(connection, exchanges_);
  exchanges_.clear();
  if (!closing) UpdateKernelControl(connection);
}

void ConnectionTracker::ProcessNats(Connection& connection, bool closing) {
  std::vector<NatsMessageRecord> messages;
  connection.nats->Process(connection.requests(), connection.responses(), &messages);
  if (sink_) {
    for (const NatsMessageRecord& message : messages) sink_->OnNatsMessage(connection.info, message);
  }
  if (!closing) UpdateKernelControl(connection);
}

RequestStarted ConnectionTracker::StartedCallback(Connection& connection) {
  // Passed to the sink as the head is parsed, not copied for later: a copy of each
  // request's message (its kept header fields) was a measurable part of every span.
  return [this, &connection](const HttpMessageRecord& request) {
    if (sink_) sink_->OnHttpRequestStarted(connection.info, request);
  };
}

void ConnectionTracker::Emit(Connection& connection, const std::vector<HttpExchange>& exchanges) {
  if (!sink_) return;
  for (const HttpExchange& exchange : exchanges) sink_->OnHttpExchange(connection.info, exchange);
}

void ConnectionTracker::UpdateKernelControl(Connection& connection) {
  if (!control_) return;
  ft_conn_control control{};
  bool ignore = connection.info.protocol == Protocol::kOpaque || connection.shed;
  uint64_t wanted[2] = {0, 0};
  if (!ignore) {
    const NatsConversation* nats = connection.nats.get();
    const Http1Conversation* http = connection.http.get();
    std::optional<uint64_t> request_end, response_end;
    if (nats) {
      request_end = nats->ClientFrameEnd();
      response_end = nats->ServerFrameEnd();
    } else if (http) {
      request_end = http->RequestBodyEnd();
      response_end = http->ResponseBodyEnd();
    }
    int request_dir = connection.info.role == FT_ROLE_CLIENT ? FT_DIR_EGRESS : FT_DIR_INGRESS;
    if (request_end) wanted[request_dir] = *request_end;
    if (response_end) wanted[request_dir ^ 1] = *response_end;
  }
  bool worth_it = ignore != connection.control_ignore;
  for (int dir = 0; dir < 2; ++dir) {
    if (wanted[dir] >= connection.streams[dir].end_position() + options_.min_skip_bytes &&
        wanted[dir] > connection.control_skip_until[dir])
      worth_it = true;
  }
  if (!worth_it) return;
  for (int dir = 0; dir < 2; ++dir) {
    control.skip_until[dir] = std::max(wanted[dir], connection.control_skip_until[dir]);
    connection.control_skip_until[dir] = control.skip_until[dir];
  }
  control.flags = ignore ? FT_CONTROL_IGNORE : 0;
  connection.control_ignore = ignore;
  control_->SetConnControl(connection.info.conn_id, control);
}

uint32_t ConnectionShareKey(const ft_tuple& tuple) {
  // The two endpoints in a fixed order, so the server's socket and the client's agree.
  std::array<uint8_t, 18> a{}, b{};
  std::memcpy(a.data(), tuple.local_addr, 16);
  std::memcpy(b.data(), tuple.remote_addr, 16);
  a[16] = tuple.local_port >> 8, a[17] = tuple.local_port & 0xff;
  b[16] = tuple.remote_port >> 8, b[17] = tuple.remote_port & 0xff;
  if (b < a) std::swap(a, b);
  // FNV-1a over both, then a final mix: ports differ in few bits between connections.
  uint64_t hash = 1469598103934665603ull;
  for (const auto* endpoint : {&a, &b}) {
    for (uint8_t byte : *endpoint) hash = (hash ^ byte) * 1099511628211ull;
  }
  hash ^= hash >> 33;
  hash *= 0xff51afd7ed558ccdull;
  hash ^= hash >> 33;
  return static_cast<uint32_t>(hash & 0xffff);
}

void ConnectionTracker::SetTracedShare(uint32_t share, uint64_t now_ns) {
  share = std::min(share, kAllConnectionsTraced);
  if (share == traced_share_) return;
  traced_share_ = share;
  for (auto& [id, connection] : connections_) {
    const bool shed = connection->share_key >= share;
    if (shed == connection->shed) continue;
    if (shed) {
      Shed(*connection);
    } else {
      // Traced again: the streams start afresh at the next bytes, the parser at the next
      // message start (what was moved meanwhile is not a gap). Its activity while shed
      // was not seen: it counts from now, not from when it was shed.
      connection->shed = false;
      connection->last_activity_ns = std::max(connection->last_activity_ns, now_ns);
      UpdateKernelControl(*connection);
    }
  }
}

void ConnectionTracker::Shed(Connection& connection) {
  ++stats_.connections_shed;
  const size_t unfinished = connection.http ? connection.http->unfinished_requests() : 0;
  stats_.requests_shed += unfinished;
  // Its requests will never finish: the sink forgets them as for an evicted connection.
  if (sink_ && unfinished > 0) sink_->OnConnectionForgotten(connection.info);
  // Made again when traced again, numbering on (ids are keyed by request number).
  ReleaseHttp(connection);
  Account(connection);  // what the old streams and parsers counted stays counted
  const size_t max_buffered = options_.max_buffered_bytes_per_stream;
  connection.streams[0] = ByteStream(max_buffered);
  connection.streams[1] = ByteStream(max_buffered);
  if (connection.nats) connection.nats = std::make_unique<NatsConversation>();
  connection.control_skip_until[0] = connection.control_skip_until[1] = 0;
  connection.shed = true;
  UpdateKernelControl(connection);
}

void ConnectionTracker::Account(const Connection& connection) {
  for (const ByteStream& stream : connection.streams) {
    stats_.gap_bytes += stream.gap_bytes();
    stats_.stream_overflow_drops += stream.overflow_drops();
  }
  if (connection.http) AccountHttp(*connection.http);
  if (const NatsConversation* nats = connection.nats.get()) {
    stats_.nats_resyncs += nats->stats().resyncs;
    stats_.nats_messages_without_fingerprint += nats->stats().messages_without_fingerprint;
    stats_.nats_uncaptured_bytes += nats->stats().uncaptured_bytes;
  }
}

void ConnectionTracker::AccountHttp(const Http1Conversation& http) {
  const Http1Stats& stats = http.stats();
  stats_.http_resyncs += stats.resyncs;
  stats_.http_orphan_responses += stats.orphan_responses;
  stats_.http_pending_overflow += stats.pending_overflow;
  stats_.http_late_responses += stats.late_responses;
}

void ConnectionTracker::ReleaseHttp(Connection& connection) {
  if (!connection.http) return;
  AccountHttp(*connection.http);
  connection.next_request_index = connection.http->next_request_index();
  connection.http.reset();
}

void ConnectionTracker::ReleaseIdleMemory(Connection& connection) {
  if (connection.http && connection.http->idle()) ReleaseHttp(connection);
  for (ByteStream& stream : connection.streams) stream.ReleaseIdleMemory();
}

void ConnectionTracker::Remove(uint64_t conn_id) {
  auto it = connections_.find(conn_id);
  if (it != connections_.end()) Remove(it);
}

void ConnectionTracker::Remove(Table::iterator it, bool forget_kernel_control) {
  Account(*it->second);
  if (control_ && forget_kernel_control &&
      (it->second->control_ignore || it->second->control_skip_until[0] || it->second->control_skip_until[1]))
    control_->ForgetConnControl(it->first);
  connections_.erase(it);
}

void ConnectionTracker::Tick(uint64_t now_ns) {
  const bool check_closes = liveness_ && options_.close_check_idle_ns > 0 && now_ns >= next_close_check_ns_;
  if (check_closes) {
    next_close_check_ns_ = now_ns + options_.close_check_idle_ns / 2;
    liveness_->BeginSweep();
  }
  std::vector<uint64_t> idle;
  std::vector<uint64_t> gone;
  for (auto& [id, connection] : connections_) {
    if (now_ns > options_.response_timeout_ns && connection->http) {
      std::vector<HttpExchange> expired;
      connection->http->ExpireOlderThan(now_ns - options_.response_timeout_ns, &expired);
      Emit(*connection, expired);
    }
    if (now_ns >= connection->last_activity_ns + options_.release_idle_after_ns) ReleaseIdleMemory(*connection);
    // A connection the kernel is told to ignore (no protocol we parse, or shed) shows no
    // activity here however busy it is: it leaves on its close, or when its socket is
    // found gone, never by idle age, which would hand it back to the kernel as unknown.
    if (!connection->control_ignore && now_ns > connection->last_activity_ns + options_.idle_timeout_ns) {
      idle.push_back(id);
    } else if (check_closes && now_ns >= connection->last_activity_ns + options_.close_check_idle_ns &&
               !liveness_->MayBeOpen(connection->info.pid, connection->info.tuple)) {
      gone.push_back(id);
    }
  }
  for (uint64_t id : idle) {
    ++stats_.connections_evicted_idle;
    if (sink_) sink_->OnConnectionForgotten(connections_.at(id)->info);
    Remove(id);
  }
  // When it closed is unknown: its open requests end as forgotten, not as closed.
  for (uint64_t id : gone) {
    ++stats_.connections_close_missed;
    if (sink_) sink_->OnConnectionForgotten(connections_.at(id)->info);
    Remove(id);
  }
  if (options_.trim_when_free_heap_bytes > 0 && now_ns >= next_trim_check_ns_) {
    next_trim_check_ns_ = now_ns + kTrimCheckIntervalNs;
    const size_t free_bytes = options_.free_heap_bytes ? options_.free_heap_bytes() : mallinfo2().fordblks;
    if (free_bytes >= options_.trim_when_free_heap_bytes) {
      if (options_.trim_heap) options_.trim_heap();
      else malloc_trim(0);
    }
  }
}

void ConnectionTracker::Flush(uint64_t* in_flight) {
  for (auto& [id, connection] : connections_) {
    // Parse what arrived; exchanges still open are in flight, not failed.
    if (connection->info.protocol == Protocol::kHttp1) {
      std::vector<HttpExchange> exchanges;
      const RequestStarted started = StartedCallback(*connection);
      Http1Conversation& http = connection->Http();
      http.Process(connection->requests(), connection->responses(), &exchanges, &started);
      Emit(*connection, exchanges);
      if (in_flight) *in_flight += http.pending_requests();
    } else if (connection->info.protocol == Protocol::kNats) {
      ProcessNats(*connection, /*closing=*/true);
    }
    Account(*connection);
  }
  connections_.clear();
}

}  // namespace flowtracer::conntrack
