#include "agent/spans/messaging_assembler.h"

#include <algorithm>

#include "agent/spans/ids.h"

namespace flowtracer::spans {
namespace {

using conntrack::NatsMessageRecord;
using nats::Verb;

// Span names carry the subject, except reply inboxes: one random subject per request
// would make names unbounded.
std::string SubjectForName(const std::string& subject) {
  return subject.starts_with("_INBOX.") ? "_INBOX" : subject;
}

}  // namespace

MessagingAssembler::MessagingAssembler(MessagingOptions options, process::ProcessRegistry* processes,
                                       SpanAssembler* http, SpanHandler handler, HopHandler hop_handler)
    : options_(options),
      processes_(processes),
      http_(http),
      handler_(std::move(handler)),
      hop_handler_(std::move(hop_handler)) {
  http_->SetThreadParentLookup([this](uint32_t pid, uint32_t tid) { return ConsumerOnThread(pid, tid); });
}

void MessagingAssembler::OnHttpRequestStarted(const conntrack::ConnectionInfo& connection,
                                              const conntrack::HttpMessageRecord& request) {
  http_->OnHttpRequestStarted(connection, request);
}

void MessagingAssembler::OnHttpExchange(const conntrack::ConnectionInfo& connection,
                                        const conntrack::HttpExchange& exchange) {
  auto in_flight = consumers_by_pid_.find(connection.pid);
  if (connection.role == FT_ROLE_CLIENT && in_flight != consumers_by_pid_.end()) {
    // A call made while a message was processed: the processing lasted at least until it ended.
    uint64_t end_ns = exchange.response ? exchange.response->end_ns : exchange.request.end_ns;
    uint64_t end_unix_ns = end_ns + options_.monotonic_to_unix_ns;
    for (Consumer& consumer : in_flight->second) {
      if (consumer.tid == exchange.request.tid)
        consumer.span.end_unix_ns = std::max(consumer.span.end_unix_ns, end_unix_ns);
    }
  }
  http_->OnHttpExchange(connection, exchange);
}

void MessagingAssembler::OnConnectionClosed(const conntrack::ConnectionInfo& connection, uint64_t bytes_sent,
                                            uint64_t bytes_received) {
  EndConsumers(connection.pid, [&](const Consumer& c) { return c.connection.conn_id == connection.conn_id; });
  http_->OnConnectionClosed(connection, bytes_sent, bytes_received);
}

void MessagingAssembler::OnConnectionForgotten(const conntrack::ConnectionInfo& connection) {
  EndConsumers(connection.pid, [&](const Consumer& c) { return c.connection.conn_id == connection.conn_id; });
  http_->OnConnectionForgotten(connection);
}

void MessagingAssembler::OnNatsMessage(const conntrack::ConnectionInfo& connection,
                                       const NatsMessageRecord& record) {
  // The server's side of the same bytes would give every span twice: spans come from
  // the clients (publishers and subscribers) only.
  if (connection.role != FT_ROLE_CLIENT) return;
  if (record.from_client) {
    if (record.message.verb == Verb::kPub || record.message.verb == Verb::kHpub) OnPublish(connection, record);
    return;
  }
  // The thread that processed earlier deliveries reads the connection again: it is done.
  EndConsumers(connection.pid, [&](const Consumer& c) {
    return c.connection.conn_id == connection.conn_id && c.tid == record.tid && c.delivered_ns < record.start_ns;
  });
  if (record.message.verb == Verb::kMsg || record.message.verb == Verb::kHmsg) OnDelivery(connection, record);
}

SpanAssembler::ThreadParent MessagingAssembler::ConsumerOnThread(uint32_t pid, uint32_t tid) const {
  SpanAssembler::ThreadParent found;
  auto in_flight = consumers_by_pid_.find(pid);
  if (in_flight == consumers_by_pid_.end()) return found;
  for (const Consumer& consumer : in_flight->second) {
    if (consumer.tid != tid) continue;
    found.trace_id = consumer.span.trace_id;
    found.span_id = consumer.span.span_id;
    ++found.candidates;
  }
  return found;
}

Span MessagingAssembler::BaseSpan(const conntrack::ConnectionInfo& connection, const NatsMessageRecord& record,
                                  SpanKind kind) {
  const nats::Message& message = record.message;
  bool producer = kind == SpanKind::kProducer;
  Span span;
  span.kind = kind;
  span.service = processes_->Get(connection.pid, connection.comm).service_name;
  span.pid = connection.pid;
  span.tuple = connection.tuple;
  span.name = std::string(producer ? "publish " : "process ") + SubjectForName(message.subject);
  span.start_unix_ns = record.start_ns + options_.monotonic_to_unix_ns;
  span.end_unix_ns = std::max(record.end_ns, record.start_ns) + options_.monotonic_to_unix_ns;
  std::string peer_address = FormatAddress(connection.tuple.remote_addr);
  auto& a = span.attributes;
  a.push_back({"messaging.system", std::string("nats")});
  a.push_back({"messaging.destination.name", message.subject});
  a.push_back({"messaging.operation.type", std::string(producer ? "publish" : "process")});
  a.push_back({"messaging.operation.name", std::string(nats::VerbName(message.verb))});
  a.push_back({"messaging.message.body.size", static_cast<int64_t>(message.body_bytes())});
  if (!message.reply_to.empty()) a.push_back({"messaging.nats.reply_to", message.reply_to});
  if (!producer) a.push_back({"messaging.nats.subscription.id", message.sid});
  if (!record.queue_group.empty()) a.push_back({"messaging.consumer.group.name", record.queue_group});
  a.push_back({"server.address", peer_address});
  a.push_back({"server.port", int64_t{connection.tuple.remote_port}});
  a.push_back({"network.peer.address", peer_address});
  a.push_back({"network.peer.port", int64_t{connection.tuple.remote_port}});
  a.push_back({"process.pid", int64_t{connection.pid}});
  a.push_back({"thread.id", int64_t{record.tid}});
  if (message.status_code >= 400) {
    // e.g. 503 No Responders delivered to a request's inbox.
    span.status = StatusCode::kError;
    a.push_back({"error.type", std::to_string(message.status_code)});
  }
  if (connection.role_inferred) a.push_back({"flowtracer.role_inferred", true});
  return span;
}

void MessagingAssembler::OnPublish(const conntrack::ConnectionInfo& connection, const NatsMessageRecord& record) {
  Span span = BaseSpan(connection, record, SpanKind::kProducer);
  // The parent: the one server request or message being processed on the publishing thread.
  SpanAssembler::ThreadParent parent = http_->ServerRequestOnThread(connection.pid, record.tid);
  SpanAssembler::ThreadParent consumer = ConsumerOnThread(connection.pid, record.tid);
  if (parent.candidates == 0) parent = consumer;
  else parent.candidates += consumer.candidates;

  std::optional<TraceContext> context;
  if (record.headers_complete) context = ParseTraceparent(record.message.Header("traceparent"));
  if (context) {
    // The application propagates: its ids are the ones the subscribers will see.
    span.trace_id = context->trace_id;
    span.span_id = context->parent_id;
  } else {
    span.span_id = NewSpanId();
  }
  if (parent.candidates == 1 && (!context || parent.trace_id == context->trace_id)) {
    span.trace_id = parent.trace_id;
    span.parent_span_id = parent.span_id;
    span.attributes.push_back({"flowtracer.parent.source", std::string("thread")});
  } else if (parent.candidates > 1) {
    span.attributes.push_back({"flowtracer.parent.unresolved", std::string("ambiguous")});
  }
  if (IsZero(span.trace_id)) span.trace_id = NewTraceId();

  if (record.fingerprint) {
    // Expire by age first, then make room by dropping the oldest (counted).
    uint64_t horizon = record.start_ns > options_.publish_match_window_ns
                           ? record.start_ns - options_.publish_match_window_ns : 0;
    while (!publish_order_.empty() &&
           (publish_order_.front().second < horizon || publish_count_ >= options_.max_publishes)) {
      if (publish_order_.front().second >= horizon) ++stats_.publishes_dropped_table_full;
      auto it = publishes_.find(publish_order_.front().first);
      if (it != publishes_.end()) {
        it->second.pop_front();
        if (it->second.empty()) publishes_.erase(it);
      }
      publish_order_.pop_front();
      --publish_count_;
    }
    publishes_[*record.fingerprint].push_back({span.trace_id, span.span_id, record.start_ns, span.service});
    publish_order_.emplace_back(*record.fingerprint, record.start_ns);
    ++publish_count_;
  }
  ++stats_.producer_spans;
  handler_(span);
}

const MessagingAssembler::Publish* MessagingAssembler::FindPublish(uint64_t fingerprint, uint64_t delivered_ns) {
  auto it = publishes_.find(fingerprint);
  if (it == publishes_.end()) return nullptr;
  // The latest publish before the delivery: identical messages published in a row are
  // delivered in order, and a subject's fan-out shares one publish.
  for (auto publish = it->second.rbegin(); publish != it->second.rend(); ++publish) {
    if (publish->start_ns <= delivered_ns &&
        delivered_ns - publish->start_ns <= options_.publish_match_window_ns)
      return &*publish;
  }
  return nullptr;
}

void MessagingAssembler::OnDelivery(const conntrack::ConnectionInfo& connection, const NatsMessageRecord& record) {
  Consumer consumer;
  consumer.span = BaseSpan(connection, record, SpanKind::kConsumer);
  consumer.connection = connection;
  consumer.tid = record.tid;
  consumer.delivered_ns = record.end_ns;
  Span& span = consumer.span;
  span.span_id = NewSpanId();
  const Publish* publish = record.fingerprint ? FindPublish(*record.fingerprint, record.start_ns) : nullptr;
  std::optional<TraceContext> context;
  if (record.headers_complete) context = ParseTraceparent(record.message.Header("traceparent"));
  if (context) {
    span.trace_id = context->trace_id;
    span.parent_span_id = context->parent_id;
    span.attributes.push_back({"flowtracer.parent.source", std::string("traceparent")});
    ++stats_.parent_from_headers;
    if (publish && publish->span_id == context->parent_id) consumer.producer_service = publish->service;
  } else if (publish) {
    span.trace_id = publish->trace_id;
    span.parent_span_id = publish->span_id;
    // Inferred: same subject and body as a publish on this host, not propagated context.
    span.attributes.push_back({"flowtracer.parent.source", std::string("payload_match")});
    ++stats_.parent_from_fingerprint;
    consumer.producer_service = publish->service;
  } else {
    span.trace_id = NewTraceId();
    ++stats_.deliveries_unlinked;
  }
  if (consumer_count_ >= options_.max_consumers_in_flight) {
    ++stats_.consumers_dropped_table_full;
    EmitConsumer(consumer);
    return;
  }
  consumers_by_pid_[connection.pid].push_back(std::move(consumer));
  ++consumer_count_;
}

void MessagingAssembler::EmitConsumer(Consumer& consumer) {
  ++stats_.consumer_spans;
  handler_(consumer.span);
  if (hop_handler_ && !consumer.producer_service.empty()) hop_handler_(consumer.producer_service, consumer.span);
}

void MessagingAssembler::EndConsumers(std::optional<uint32_t> pid,
                                      const std::function<bool(const Consumer&)>& done) {
  auto end_in = [&](std::vector<Consumer>& consumers) {
    auto kept = consumers.begin();
    for (auto it = consumers.begin(); it != consumers.end(); ++it) {
      if (done(*it)) {
        EmitConsumer(*it);
        --consumer_count_;
      } else {
        if (kept != it) *kept = std::move(*it);
        ++kept;
      }
    }
    consumers.erase(kept, consumers.end());
  };
  if (pid) {
    auto it = consumers_by_pid_.find(*pid);
    if (it == consumers_by_pid_.end()) return;
    end_in(it->second);
    if (it->second.empty()) consumers_by_pid_.erase(it);
    return;
  }
  for (auto& [_, consumers] : consumers_by_pid_) end_in(consumers);
  std::erase_if(consumers_by_pid_, [](const auto& entry) { return entry.second.empty(); });
}

void MessagingAssembler::Tick(uint64_t now_ns) {
  if (now_ns <= options_.max_processing_ns) return;
  uint64_t deadline = now_ns - options_.max_processing_ns;
  EndConsumers(std::nullopt, [&](const Consumer& c) { return c.delivered_ns < deadline; });
}

void MessagingAssembler::Flush() {
  EndConsumers(std::nullopt, [](const Consumer&) { return true; });
}

}  // namespace flowtracer::spans
