// NATS messages -> PRODUCER and CONSUMER spans, linked into the traces of the HTTP spans
// around them. Parent rules (docs/trace-linking.md, "Messaging"):
//   producer: the one server request or message being processed on the publishing
//             thread; a traceparent in the HPUB headers fixes its trace id and span id;
//   consumer: the traceparent in the HMSG headers, else the same-host publish with the
//             same subject and body (fingerprint), else a new trace;
//   work done while a message is processed (an HTTP call from the thread that read it)
//             is a child of its consumer span.
// HTTP events pass through to the SpanAssembler; this class only watches client
// exchanges to extend the consumer span that caused them.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/conntrack/connection_tracker.h"
#include "agent/process/process_info.h"
#include "agent/spans/span.h"
#include "agent/spans/span_assembler.h"

namespace flowtracer::spans {

struct MessagingOptions {
  int64_t monotonic_to_unix_ns = 0;                         // added to kernel timestamps
  size_t max_publishes = 16384;                             // publishes a delivery can still match
  uint64_t publish_match_window_ns = 30ull * 1000 * 1000 * 1000;
  // A message counts as being processed until its thread reads the connection again, the
  // connection closes, or this long after delivery.
  uint64_t max_processing_ns = 30ull * 1000 * 1000 * 1000;
  size_t max_consumers_in_flight = 65536;
};

struct MessagingStats {
  uint64_t producer_spans = 0;
  uint64_t consumer_spans = 0;
  uint64_t parent_from_headers = 0;        // consumer spans linked by traceparent
  uint64_t parent_from_fingerprint = 0;    // consumer spans linked by subject and body
  uint64_t deliveries_unlinked = 0;        // no traceparent and no publish matched
  uint64_t publishes_dropped_table_full = 0;
  uint64_t consumers_dropped_table_full = 0;  // emitted at once, without processing time
};

class MessagingAssembler : public conntrack::TrackerSink {
 public:
  using SpanHandler = std::function<void(const Span&)>;
  // A consumer span linked to a publish on this host, with the publisher's service.
  using HopHandler = std::function<void(const std::string& producer_service, const Span& consumer)>;

  // Registers ConsumerOnThread with `http` (which must outlive this) as its source of
  // thread parents besides server requests.
  MessagingAssembler(MessagingOptions options, process::ProcessRegistry* processes, SpanAssembler* http,
                     SpanHandler handler, HopHandler hop_handler = {});
  ~MessagingAssembler() override { http_->SetThreadParentLookup(nullptr); }
  MessagingAssembler(const MessagingAssembler&) = delete;
  MessagingAssembler& operator=(const MessagingAssembler&) = delete;

  void OnHttpRequestStarted(const conntrack::ConnectionInfo& connection,
                            const conntrack::HttpMessageRecord& request) override;
  void OnHttpExchange(const conntrack::ConnectionInfo& connection,
                      const conntrack::HttpExchange& exchange) override;
  void OnConnectionClosed(const conntrack::ConnectionInfo& connection, uint64_t bytes_sent,
                          uint64_t bytes_received) override;
  // Dropped without a close (table full, idle, socket gone, shed): as a close for the
  // consumers it served, and passed on so HTTP forgets its unfinished requests.
  void OnConnectionForgotten(const conntrack::ConnectionInfo& connection) override;
  void OnNatsMessage(const conntrack::ConnectionInfo& connection,
                     const conntrack::NatsMessageRecord& record) override;

  // Ends processing that ran too long; `now_ns` on the kernel's clock.
  void Tick(uint64_t now_ns);
  // Emits every consumer span still open (end of capture).
  void Flush();

  // Messages being processed on this thread (the parent of work it does).
  SpanAssembler::ThreadParent ConsumerOnThread(uint32_t pid, uint32_t tid) const;

  const MessagingStats& stats() const { return stats_; }

 private:
  struct Publish {
    TraceId trace_id{};
    SpanId span_id{};
    uint64_t start_ns = 0;
    std::string service;
  };
  struct Consumer {
    Span span;  // built at delivery; end extended by the work it caused
    conntrack::ConnectionInfo connection;
    uint32_t tid = 0;
    uint64_t delivered_ns = 0;  // end of the call that delivered the message
    std::string producer_service;  // "" when not linked to a publish on this host
  };

  void OnPublish(const conntrack::ConnectionInfo& connection, const conntrack::NatsMessageRecord& record);
  void OnDelivery(const conntrack::ConnectionInfo& connection, const conntrack::NatsMessageRecord& record);
  const Publish* FindPublish(uint64_t fingerprint, uint64_t delivered_ns);
  Span BaseSpan(const conntrack::ConnectionInfo& connection, const conntrack::NatsMessageRecord& record,
                SpanKind kind);
  void EmitConsumer(Consumer& consumer);
  // Ends (emits) the consumers of process `pid` (every process when nullopt) that match
  // `done`, in delivery order.
  void EndConsumers(std::optional<uint32_t> pid, const std::function<bool(const Consumer&)>& done);

  MessagingOptions options_;
  process::ProcessRegistry* processes_;
  SpanAssembler* http_;
  SpanHandler handler_;
  HopHandler hop_handler_;
  MessagingStats stats_;

  std::unordered_map<uint64_t, std::deque<Publish>> publishes_;  // by fingerprint, oldest first
  std::deque<std::pair<uint64_t, uint64_t>> publish_order_;      // (fingerprint, start_ns), for expiry
  size_t publish_count_ = 0;
  // In flight, per process (lookups are by thread), each in delivery order.
  std::unordered_map<uint32_t, std::vector<Consumer>> consumers_by_pid_;
  size_t consumer_count_ = 0;
};

}  // namespace flowtracer::spans
