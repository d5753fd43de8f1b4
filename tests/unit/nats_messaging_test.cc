// NATS through the connection tracker (detection, reassembly, gaps) and the messaging
// assembler (producer/consumer spans and their links), fed with ring buffer records.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/conntrack/connection_tracker.h"
#include "agent/process/process_info.h"
#include "agent/spans/call_summary.h"
#include "agent/spans/ids.h"
#include "agent/spans/messaging_assembler.h"
#include "agent/spans/span_assembler.h"
#include "exporters/capture_output.h"
#include "tests/unit/kernel_records.h"
#include "tests/unit/temp_proc_root.h"

namespace flowtracer {
namespace {

using conntrack::NatsMessageRecord;
using spans::Span;
using spans::SpanKind;

std::string ReadFixture(const std::string& name) {
  std::ifstream file(std::string(FLOWTRACER_FIXTURES_DIR) + "/nats/" + name, std::ios::binary);
  EXPECT_TRUE(file.good()) << name;
  return std::string(std::istreambuf_iterator<char>(file), {});
}

ft_tuple Tuple(uint16_t local_port, uint16_t remote_port) {
  ft_tuple tuple{};
  for (uint8_t* addr : {tuple.local_addr, tuple.remote_addr}) {
    addr[10] = addr[11] = 0xff;
    addr[12] = 127;
    addr[15] = 1;
  }
  tuple.local_port = local_port;
  tuple.remote_port = remote_port;
  tuple.family = 2;
  return tuple;
}

std::optional<std::string> Str(const Span& span, const std::string& key) {
  const spans::AttributeValue* value = span.Find(key);
  if (!value || !std::holds_alternative<std::string>(*value)) return std::nullopt;
  return std::get<std::string>(*value);
}

// Records NATS messages as the tracker reports them.
struct RecordingSink : conntrack::TrackerSink {
  std::vector<std::pair<conntrack::ConnectionInfo, NatsMessageRecord>> messages;
  void OnHttpExchange(const conntrack::ConnectionInfo&, const conntrack::HttpExchange&) override {}
  void OnNatsMessage(const conntrack::ConnectionInfo& c, const NatsMessageRecord& m) override {
    messages.emplace_back(c, m);
  }
};

// Ring buffer records -> ConnectionTracker -> sink.
class Feeder {
 public:
  explicit Feeder(conntrack::TrackerSink* sink, conntrack::KernelControl* control = nullptr)
      : tracker({}, sink, control) {}

  void Open(uint64_t conn_id, ft_role role, uint32_t pid, std::string_view comm, const ft_tuple& tuple,
            uint64_t ts = 1) {
    feeder_.Open(conn_id, role, pid, comm, tuple, ts);
  }
  void Close(uint64_t conn_id, uint64_t ts) { feeder_.Close(conn_id, ts); }
  // One call that moved `length` bytes (default: all of `captured`).
  void Data(uint64_t conn_id, ft_direction direction, uint32_t tid, std::string_view captured, uint64_t ts,
            uint32_t length = UINT32_MAX) {
    feeder_.Data(conn_id, direction, tid, captured, ts, length);
  }
  void Write(uint64_t conn_id, uint32_t tid, std::string_view bytes, uint64_t ts) { feeder_.Write(conn_id, tid, bytes, ts); }
  void Read(uint64_t conn_id, uint32_t tid, std::string_view bytes, uint64_t ts) { feeder_.Read(conn_id, tid, bytes, ts); }

  conntrack::ConnectionTracker tracker;

 private:
  records::RecordFeeder feeder_{[this](const void* data, size_t size) { tracker.OnRecord(data, size); }};
};

constexpr std::string_view kInfo = "INFO {\"server_id\":\"x\",\"version\":\"2.9.10\",\"headers\":true} \r\n";
constexpr std::string_view kConnect = "CONNECT {\"verbose\":false,\"headers\":true}\r\nPING\r\n";

// ---- Tracker: detection and framing.

TEST(NatsStreamTest, ServerFixtureReplayedInEveryChunkSize) {
  const std::string publisher = ReadFixture("publisher_sent.bin");
  const std::string subscriber = ReadFixture("subscriber_received.bin");
  for (size_t chunk : {size_t{1}, size_t{7}, size_t{100}, size_t{4096}, size_t{FT_MAX_PAYLOAD}}) {
    RecordingSink sink;
    Feeder f(&sink);
    f.Open(1, FT_ROLE_UNKNOWN, 10, "pub", Tuple(40001, 4222));
    f.Open(2, FT_ROLE_UNKNOWN, 20, "sub", Tuple(40002, 4222));
    f.Read(1, 10, kInfo, 5);
    uint64_t ts = 10;
    for (size_t at = 0; at < publisher.size(); at += chunk)
      f.Write(1, 10, std::string_view(publisher).substr(at, chunk), ++ts);
    for (size_t at = 0; at < subscriber.size(); at += chunk)
      f.Read(2, 20, std::string_view(subscriber).substr(at, chunk), ++ts);

    std::vector<NatsMessageRecord> publishes, deliveries;
    for (const auto& [connection, record] : sink.messages) {
      EXPECT_EQ(connection.protocol, conntrack::Protocol::kNats);
      EXPECT_EQ(connection.role, FT_ROLE_CLIENT);  // INFO was received: this side is the client
      if (record.message.verb == nats::Verb::kPub || record.message.verb == nats::Verb::kHpub)
        publishes.push_back(record);
      if (record.message.verb == nats::Verb::kMsg || record.message.verb == nats::Verb::kHmsg)
        deliveries.push_back(record);
    }
    ASSERT_EQ(publishes.size(), 6u) << "chunk " << chunk;
    ASSERT_EQ(deliveries.size(), 7u) << "chunk " << chunk;
    EXPECT_EQ(publishes[2].message.Header("traceparent"), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    EXPECT_EQ(publishes[3].message.body_bytes(), 76800u);
    // Every delivery carries the fingerprint of the publish it came from.
    for (const NatsMessageRecord& delivery : deliveries) {
      ASSERT_TRUE(delivery.fingerprint.has_value());
      int matches = 0;
      for (const NatsMessageRecord& publish : publishes)
        if (publish.fingerprint == delivery.fingerprint && publish.message.subject == delivery.message.subject)
          ++matches;
      EXPECT_EQ(matches, 1) << delivery.message.subject;
    }
    EXPECT_EQ(f.tracker.stats().nats_resyncs, 0u);
  }
}

TEST(NatsStreamTest, ManyMessagesInOneReadAndSplitPayloads) {
  RecordingSink sink;
  Feeder f(&sink);
  f.Open(1, FT_ROLE_CLIENT, 10, "sub", Tuple(40001, 4222));
  f.Read(1, 10, std::string(kInfo) + "PING\r\nMSG a 1 3\r\nabc\r\nMSG b 1 _INBOX.9 0\r\n\r\nMSG c 1 10\r\n01234", 100);
  ASSERT_EQ(sink.messages.size(), 4u);  // INFO, PING, a, b: c is not whole yet
  EXPECT_EQ(sink.messages[3].second.message.reply_to, "_INBOX.9");
  f.Read(1, 10, "567", 200);
  EXPECT_EQ(sink.messages.size(), 4u);
  f.Read(1, 10, "89\r\nPONG\r\n", 300);
  ASSERT_EQ(sink.messages.size(), 6u);
  const NatsMessageRecord& c = sink.messages[4].second;
  EXPECT_EQ(c.message.subject, "c");
  EXPECT_EQ(c.start_ns, 100u);
  EXPECT_EQ(c.end_ns, 300u);
  EXPECT_EQ(c.fingerprint, conntrack::NatsFingerprint("c", 10, "0123456789"));
  EXPECT_EQ(sink.messages[5].second.message.verb, nats::Verb::kPong);
}

TEST(NatsStreamTest, GapInsideAPayloadAndGarbageResync) {
  RecordingSink sink;
  Feeder f(&sink);
  f.Open(1, FT_ROLE_CLIENT, 10, "sub", Tuple(40001, 4222));
  f.Read(1, 10, kInfo, 100);
  // A 3000-byte body of which the kernel copied nothing: framing by length still works.
  f.Read(1, 10, "MSG big 1 3000\r\n", 110);
  f.Data(1, FT_DIR_INGRESS, 10, "", 120, 3002);
  f.Read(1, 10, "MSG after 1 2\r\nok\r\n", 130);
  // A call that was not captured at all, then mid-message bytes, then a message.
  f.Data(1, FT_DIR_INGRESS, 10, "", 140, 50);
  f.Read(1, 10, "tail of something\r\nMSG resynced 1 2\r\nok\r\n", 150);
  std::vector<std::string> subjects;
  for (const auto& [connection, record] : sink.messages)
    if (record.message.verb == nats::Verb::kMsg) subjects.push_back(record.message.subject);
  EXPECT_EQ(subjects, (std::vector<std::string>{"big", "after", "resynced"}));
  EXPECT_FALSE(sink.messages[1].second.fingerprint.has_value());  // "big": body not captured
  f.tracker.Flush();
  EXPECT_GE(f.tracker.stats().nats_messages_without_fingerprint, 1u);
  EXPECT_GE(f.tracker.stats().nats_resyncs, 1u);
  EXPECT_EQ(f.tracker.stats().nats_uncaptured_bytes, 50u);  // the body of "big" was framed, not lost
}

struct RecordingControl : conntrack::KernelControl {
  std::vector<std::pair<uint64_t, ft_conn_control>> sets;
  void SetConnControl(uint64_t conn_id, const ft_conn_control& control) override { sets.emplace_back(conn_id, control); }
  void ForgetConnControl(uint64_t) override {}
};

TEST(NatsStreamTest, BrokerSideIgnoredAndHttpStillHttp) {
  RecordingSink sink;
  RecordingControl control;
  Feeder f(&sink, &control);
  f.Open(1, FT_ROLE_UNKNOWN, 10, "nats-server", Tuple(4222, 40001));
  f.Write(1, 10, kInfo, 100);
  f.Read(1, 10, kConnect, 110);
  f.Read(1, 10, "PUB a 2\r\nhi\r\n", 120);
  EXPECT_TRUE(sink.messages.empty());
  EXPECT_EQ(f.tracker.stats().nats_broker_connections_ignored, 1u);
  ASSERT_EQ(control.sets.size(), 1u);
  EXPECT_EQ(control.sets[0].second.flags, FT_CONTROL_IGNORE);  // the kernel stops copying
  f.Open(2, FT_ROLE_UNKNOWN, 10, "web", Tuple(8080, 40002));
  f.Read(2, 10, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 120);
  f.Write(2, 10, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 130);
  f.tracker.Flush();
  EXPECT_TRUE(sink.messages.empty());  // the HTTP connection gave no NATS messages
}

TEST(NatsStreamTest, LargeBodiesAreSkippedByTheKernel) {
  RecordingSink sink;
  RecordingControl control;
  Feeder f(&sink, &control);
  f.Open(1, FT_ROLE_CLIENT, 10, "sub", Tuple(40001, 4222));
  f.Read(1, 10, kInfo, 100);
  std::string head = "MSG big 1 100000\r\n";
  f.Read(1, 10, head + std::string(2000, 'x'), 110);
  ASSERT_FALSE(control.sets.empty());
  uint64_t frame_end = kInfo.size() + head.size() + 100000 + 2;
  EXPECT_EQ(control.sets.back().second.skip_until[FT_DIR_INGRESS], frame_end);
  // The kernel then reports the skipped bytes as uncaptured: framing still holds.
  f.Data(1, FT_DIR_INGRESS, 10, "", 120, 100000 - 2000 + 2);
  f.Read(1, 10, "MSG after 1 2\r\nok\r\n", 130);
  ASSERT_EQ(sink.messages.size(), 3u);
  EXPECT_EQ(sink.messages[1].second.message.subject, "big");
  EXPECT_TRUE(sink.messages[1].second.fingerprint.has_value());  // from the first 1 KiB
  EXPECT_EQ(sink.messages[1].second.end_ns, 120u);
  EXPECT_EQ(sink.messages[2].second.message.subject, "after");
}

TEST(NatsStreamTest, ConnectionOlderThanTheAgentIsDetectedMidStream) {
  RecordingSink sink;
  Feeder f(&sink);
  f.Open(1, FT_ROLE_UNKNOWN, 10, "sub", Tuple(40001, 4222));
  f.Read(1, 10, "PING\r\n", 90);  // both sides send PING: not enough to decide
  EXPECT_TRUE(sink.messages.empty());
  f.Read(1, 10, "MSG a 1 2\r\nhi\r\n", 100);
  f.Open(2, FT_ROLE_UNKNOWN, 20, "pub", Tuple(40002, 4222));
  f.Write(2, 20, "PUB a 2\r\nhi\r\n", 110);
  ASSERT_EQ(sink.messages.size(), 3u);
  EXPECT_EQ(sink.messages[0].second.message.verb, nats::Verb::kPing);
  EXPECT_EQ(sink.messages[1].second.message.verb, nats::Verb::kMsg);
  EXPECT_EQ(sink.messages[1].first.role, FT_ROLE_CLIENT);
  EXPECT_TRUE(sink.messages[1].first.role_inferred);
  EXPECT_EQ(sink.messages[2].first.role, FT_ROLE_CLIENT);
  EXPECT_EQ(sink.messages[2].second.fingerprint, sink.messages[1].second.fingerprint);
}

TEST(NatsStreamTest, ConnectIsNatsAndHttpConnectStaysHttp) {
  RecordingSink sink;
  Feeder f(&sink);
  // As the Go client sends it (JSON without spaces), seen before the server's INFO.
  f.Open(1, FT_ROLE_UNKNOWN, 10, "go-client", Tuple(40001, 4222));
  f.Write(1, 10,
          "CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"go\",\"version\":\"1.11.0\","
          "\"protocol\":1,\"headers\":true}\r\nPING\r\n",
          100);
  ASSERT_EQ(sink.messages.size(), 2u);
  EXPECT_EQ(sink.messages[0].first.protocol, conntrack::Protocol::kNats);
  EXPECT_EQ(sink.messages[0].first.role, FT_ROLE_CLIENT);
  // An HTTP proxy's CONNECT is HTTP.
  f.Open(2, FT_ROLE_UNKNOWN, 10, "curl", Tuple(40002, 3128));
  f.Write(2, 10, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 110);
  f.tracker.Flush();
  EXPECT_EQ(sink.messages.size(), 2u);
}

// ---- Spans: ring buffer records -> tracker -> messaging + HTTP assemblers.

class Pipeline {
 public:
  Pipeline()
      : processes(proc_root_.path()),
        http({}, &processes, [this](const Span& span) { spans.push_back(span); }),
        messaging({}, &processes, &http, [this](const Span& span) { spans.push_back(span); },
                  [this](const std::string& producer, const Span& consumer) { summary.AddMessageHop(producer, consumer); }),
        feeder(&messaging) {}

  std::vector<Span> OfKind(SpanKind kind) const {
    std::vector<Span> found;
    for (const Span& span : spans)
      if (span.kind == kind) found.push_back(span);
    return found;
  }

  TempProcRoot proc_root_;
  process::ProcessRegistry processes;
  spans::SpanAssembler http;
  spans::MessagingAssembler messaging;
  Feeder feeder;
  spans::CallSummary summary;
  std::vector<Span> spans;
};

constexpr uint32_t kCheckoutPid = 100, kNotifyPid = 200, kNatsPid = 300, kMailPid = 400;

// checkout (HTTP server) publishes `publish` on NATS; notify reads the delivery and calls
// mail over HTTP; nats-server's own side of both connections is traced too.
void RunCheckoutFlow(Pipeline& p, std::string_view publish, std::string_view delivery,
                     const std::string& inbound_headers = "") {
  Feeder& f = p.feeder;
  f.Open(1, FT_ROLE_SERVER, kCheckoutPid, "checkout", Tuple(8080, 50000));   // HTTP in
  f.Open(2, FT_ROLE_CLIENT, kCheckoutPid, "checkout", Tuple(50001, 4222));   // publisher
  f.Open(3, FT_ROLE_SERVER, kNatsPid, "nats-server", Tuple(4222, 50001));
  f.Open(4, FT_ROLE_CLIENT, kNotifyPid, "notify", Tuple(50002, 4222));       // subscriber
  f.Open(5, FT_ROLE_SERVER, kNatsPid, "nats-server", Tuple(4222, 50002));
  f.Open(6, FT_ROLE_CLIENT, kNotifyPid, "notify", Tuple(50003, 9090));       // HTTP out
  f.Open(7, FT_ROLE_SERVER, kMailPid, "mail", Tuple(9090, 50003));
  for (auto [client, server, client_tid] : {std::tuple{2, 3, 101u}, std::tuple{4, 5, 201u}}) {
    f.Write(server, 301, kInfo, 10);
    f.Read(client, client_tid, kInfo, 11);
    f.Write(client, client_tid, std::string(kConnect) + "SUB orders.created 1\r\n", 12);
    f.Read(server, 301, std::string(kConnect) + "SUB orders.created 1\r\n", 13);
  }
  f.Read(1, 101, "POST /checkout HTTP/1.1\r\nHost: shop\r\n" + inbound_headers + "Content-Length: 0\r\n\r\n", 1000);
  f.Write(2, 101, publish, 1100);
  f.Read(3, 301, publish, 1150);
  f.Write(1, 101, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1200);
  f.Write(5, 302, delivery, 1300);
  f.Read(4, 201, delivery, 1350);
  f.Write(6, 201, "GET /send HTTP/1.1\r\nHost: mail\r\n\r\n", 1400);
  f.Read(7, 401, "GET /send HTTP/1.1\r\nHost: mail\r\n\r\n", 1450);
  f.Write(7, 401, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1500);
  f.Read(6, 201, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1550);
  f.Read(4, 201, "PING\r\n", 5000);  // the subscriber's thread reads again: processing ended
}

void ExpectOneTrace(const Pipeline& p, const std::string& consumer_parent_source) {
  std::vector<Span> servers = p.OfKind(SpanKind::kServer), producers = p.OfKind(SpanKind::kProducer),
                    consumers = p.OfKind(SpanKind::kConsumer), clients = p.OfKind(SpanKind::kClient);
  ASSERT_EQ(servers.size(), 2u);
  ASSERT_EQ(producers.size(), 1u);  // nats-server's side gave no spans
  ASSERT_EQ(consumers.size(), 1u);
  ASSERT_EQ(clients.size(), 1u);
  const Span& checkout = servers[0].service == "checkout" ? servers[0] : servers[1];
  const Span& mail = servers[0].service == "mail" ? servers[0] : servers[1];
  const Span& producer = producers[0];
  const Span& consumer = consumers[0];
  const Span& client = clients[0];
  for (const Span* span : {&producer, &consumer, &client, &mail}) EXPECT_EQ(span->trace_id, checkout.trace_id);
  EXPECT_EQ(producer.parent_span_id, checkout.span_id);
  EXPECT_EQ(consumer.parent_span_id, producer.span_id);
  EXPECT_EQ(client.parent_span_id, consumer.span_id);
  EXPECT_EQ(mail.parent_span_id, client.span_id);
  EXPECT_EQ(Str(producer, "flowtracer.parent.source"), "thread");
  EXPECT_EQ(Str(consumer, "flowtracer.parent.source"), consumer_parent_source);
  EXPECT_EQ(Str(client, "flowtracer.parent.source"), "thread");
  EXPECT_EQ(producer.name, "publish orders.created");
  EXPECT_EQ(consumer.name, "process orders.created");
  EXPECT_EQ(producer.service, "checkout");
  EXPECT_EQ(consumer.service, "notify");
  EXPECT_EQ(Str(producer, "messaging.system"), "nats");
  EXPECT_EQ(Str(consumer, "messaging.destination.name"), "orders.created");
  EXPECT_EQ(Str(producer, "messaging.operation.type"), "publish");
  EXPECT_EQ(Str(consumer, "messaging.operation.type"), "process");
  EXPECT_EQ(std::get<int64_t>(*consumer.Find("messaging.message.body.size")), 12);
  // The consumer span lasts until the HTTP call it caused ended.
  EXPECT_EQ(consumer.end_unix_ns - consumer.start_unix_ns, 1550u - 1350u);
  std::vector<spans::CallSummaryRow> rows = p.summary.Rows();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].caller, "checkout");
  EXPECT_EQ(rows[0].callee, "notify via orders.created");
  EXPECT_EQ(rows[0].count, 1u);
}

TEST(MessagingAssemblerTest, PlainPubLinkedByPayload) {
  Pipeline p;
  RunCheckoutFlow(p, "PUB orders.created 12\r\n{\"order\":42}\r\n", "MSG orders.created 1 12\r\n{\"order\":42}\r\n");
  p.messaging.Flush();
  ExpectOneTrace(p, "payload_match");
  EXPECT_EQ(p.messaging.stats().parent_from_fingerprint, 1u);
}

TEST(MessagingAssemblerTest, TraceparentInHeaders) {
  Pipeline p;
  const std::string trace = "0af7651916cd43dd8448eb211c80319c", span = "b7ad6b7169203331";
  std::string block = "NATS/1.0\r\ntraceparent: 00-" + trace + "-" + span + "-01\r\n\r\n";
  std::string sizes = std::to_string(block.size()) + " " + std::to_string(block.size() + 12);
  // The publisher's SDK continues the incoming request's trace in the message headers.
  RunCheckoutFlow(p, "HPUB orders.created " + sizes + "\r\n" + block + "{\"order\":42}\r\n",
                  "HMSG orders.created 1 " + sizes + "\r\n" + block + "{\"order\":42}\r\n",
                  "traceparent: 00-" + trace + "-1111111111111111-01\r\n");
  p.messaging.Flush();
  ExpectOneTrace(p, "traceparent");
  std::vector<Span> producers = p.OfKind(SpanKind::kProducer);
  ASSERT_EQ(producers.size(), 1u);
  EXPECT_EQ(spans::ToHex(producers[0].trace_id), trace);
  EXPECT_EQ(spans::ToHex(producers[0].span_id), span);  // the header's ids, as the subscriber sees them
  EXPECT_EQ(Str(p.OfKind(SpanKind::kConsumer)[0], "messaging.operation.name"), "HMSG");
  EXPECT_EQ(p.messaging.stats().parent_from_headers, 1u);
}

TEST(MessagingAssemblerTest, FanOutTwoSubscribersOneProducer) {
  Pipeline p;
  Feeder& f = p.feeder;
  f.Open(1, FT_ROLE_CLIENT, kCheckoutPid, "checkout", Tuple(50001, 4222));
  f.Open(2, FT_ROLE_CLIENT, kNotifyPid, "notify", Tuple(50002, 4222));
  f.Open(3, FT_ROLE_CLIENT, kMailPid, "audit", Tuple(50003, 4222));
  for (uint64_t conn : {1, 2, 3}) {
    f.Read(conn, 7, kInfo, 10);
    f.Write(conn, 7, kConnect, 11);
  }
  f.Write(1, 7, "PUB orders.created 2\r\nhi\r\n", 100);
  f.Read(2, 8, "MSG orders.created 1 2\r\nhi\r\n", 200);
  f.Read(3, 9, "MSG orders.created 5 2\r\nhi\r\n", 210);
  f.Read(2, 8, "MSG orders.created 1 2\r\nho\r\n", 220);  // no publish with this body
  p.messaging.Flush();
  std::vector<Span> producers = p.OfKind(SpanKind::kProducer), consumers = p.OfKind(SpanKind::kConsumer);
  ASSERT_EQ(producers.size(), 1u);
  ASSERT_EQ(consumers.size(), 3u);
  int linked = 0;
  for (const Span& consumer : consumers) {
    if (consumer.parent_span_id != producers[0].span_id) continue;
    ++linked;
    EXPECT_EQ(consumer.trace_id, producers[0].trace_id);
  }
  EXPECT_EQ(linked, 2);
  EXPECT_EQ(p.messaging.stats().deliveries_unlinked, 1u);
}

TEST(MessagingAssemblerTest, RequestReplyAndQueueGroups) {
  Pipeline p;
  Feeder& f = p.feeder;
  f.Open(1, FT_ROLE_CLIENT, kCheckoutPid, "checkout", Tuple(50001, 4222));  // requester
  f.Open(2, FT_ROLE_CLIENT, kNotifyPid, "pricing", Tuple(50002, 4222));     // responder
  f.Read(1, 7, kInfo, 10);
  f.Read(2, 8, kInfo, 10);
  f.Write(1, 7, std::string(kConnect) + "SUB _INBOX.abc.* 1\r\n", 11);
  f.Write(2, 8, std::string(kConnect) + "SUB price.get workers 4\r\n", 11);
  f.Write(1, 7, "PUB price.get _INBOX.abc.1 3\r\nsku\r\n", 100);
  f.Read(2, 8, "MSG price.get 4 _INBOX.abc.1 3\r\nsku\r\n", 110);
  f.Write(2, 8, "PUB _INBOX.abc.1 2\r\n42\r\n", 120);  // the reply, while processing the request
  f.Read(1, 7, "MSG _INBOX.abc.1 1 2\r\n42\r\n", 130);
  f.Read(2, 8, "PING\r\n", 200);
  p.messaging.Flush();
  std::vector<Span> producers = p.OfKind(SpanKind::kProducer), consumers = p.OfKind(SpanKind::kConsumer);
  ASSERT_EQ(producers.size(), 2u);
  ASSERT_EQ(consumers.size(), 2u);
  const Span& request = producers[0];
  const Span& reply = producers[1];
  const Span& served = consumers[0].service == "pricing" ? consumers[0] : consumers[1];
  const Span& answered = consumers[0].service == "pricing" ? consumers[1] : consumers[0];
  EXPECT_EQ(Str(request, "messaging.nats.reply_to"), "_INBOX.abc.1");
  EXPECT_EQ(served.parent_span_id, request.span_id);
  EXPECT_EQ(Str(served, "messaging.consumer.group.name"), "workers");
  EXPECT_EQ(reply.parent_span_id, served.span_id);  // published while the request was processed
  EXPECT_EQ(reply.name, "publish _INBOX");
  EXPECT_EQ(answered.parent_span_id, reply.span_id);
  EXPECT_FALSE(answered.Find("messaging.consumer.group.name"));
  for (const Span& span : {reply, served, answered}) EXPECT_EQ(span.trace_id, request.trace_id);
}

TEST(MessagingAssemblerTest, ProcessingEndsOnTimeoutAndCloseAndSpansSkipThePlainTable) {
  TempProcRoot root;
  process::ProcessRegistry processes(root.path());
  std::vector<Span> out;
  spans::SpanAssembler http({}, &processes, [&](const Span& s) { out.push_back(s); });
  spans::MessagingOptions options;
  options.max_processing_ns = 1000;
  spans::MessagingAssembler messaging(options, &processes, &http, [&](const Span& s) { out.push_back(s); });
  Feeder f(&messaging);
  f.Open(1, FT_ROLE_CLIENT, 1, "sub", Tuple(50001, 4222));
  f.Open(2, FT_ROLE_CLIENT, 1, "sub", Tuple(50002, 4222));
  f.Read(1, 7, std::string(kInfo) + "MSG a 1 1\r\nx\r\n", 100);
  f.Read(2, 8, std::string(kInfo) + "MSG b 1 1\r\nx\r\n", 5000);
  EXPECT_TRUE(out.empty());  // both still being processed
  EXPECT_EQ(messaging.ConsumerOnThread(1, 7).candidates, 1);
  messaging.Tick(2000);  // "a" was delivered more than 1000 ns ago
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].name, "process a");
  EXPECT_EQ(messaging.ConsumerOnThread(1, 7).candidates, 0);
  f.Close(2, 6000);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].name, "process b");
  // Messaging spans reach the caller -> callee table only as message hops.
  spans::CallSummary summary;
  for (const Span& span : out) summary.Add(span);
  EXPECT_TRUE(summary.Rows().empty());
}

TEST(MessagingAssemblerTest, TextAndJsonOutput) {
  Pipeline p;
  RunCheckoutFlow(p, "PUB orders.created 12\r\n{\"order\":42}\r\n", "MSG orders.created 1 12\r\n{\"order\":42}\r\n");
  p.messaging.Flush();
  const Span producer = p.OfKind(SpanKind::kProducer).at(0);
  const Span consumer = p.OfKind(SpanKind::kConsumer).at(0);
  std::string line = exporters::SpanToText(producer);
  EXPECT_NE(line.find(" checkout   prod   publish orders.crea~   - "), std::string::npos) << line;
  EXPECT_LE(line.size(), 80u);
  line = exporters::SpanToText(consumer);
  EXPECT_NE(line.find(" notify     cons   process orders.crea~   - "), std::string::npos) << line;
  nlohmann::json json = exporters::SpanToJson(consumer);
  EXPECT_EQ(json["kind"], "CONSUMER");
  EXPECT_EQ(json["parent_span_id"], spans::ToHex(producer.span_id));
  EXPECT_EQ(json["attributes"]["messaging.system"], "nats");
  EXPECT_EQ(json["attributes"]["messaging.nats.subscription.id"], "1");
  EXPECT_EQ(json["attributes"]["server.port"], 4222);
}

TEST(MessagingAssemblerTest, CallsAfterABatchOfDeliveriesAreAmbiguous) {
  Pipeline p;
  Feeder& f = p.feeder;
  f.Open(1, FT_ROLE_CLIENT, kNotifyPid, "notify", Tuple(50002, 4222));
  f.Open(2, FT_ROLE_CLIENT, kNotifyPid, "notify", Tuple(50003, 9090));
  f.Read(1, 8, kInfo, 10);
  // Two messages in one read: a call the thread makes next may be for either.
  f.Read(1, 8, "MSG a 1 1\r\nx\r\nMSG a 1 1\r\ny\r\n", 100);
  f.Write(2, 8, "GET /send HTTP/1.1\r\nHost: mail\r\n\r\n", 110);
  f.Read(2, 8, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 120);
  p.messaging.Flush();
  std::vector<Span> clients = p.OfKind(SpanKind::kClient);
  ASSERT_EQ(clients.size(), 1u);
  EXPECT_TRUE(spans::IsZero(clients[0].parent_span_id));
  EXPECT_EQ(Str(clients[0], "flowtracer.parent.unresolved"), "ambiguous");
  EXPECT_EQ(p.OfKind(SpanKind::kConsumer).size(), 2u);
}

TEST(MessagingAssemblerTest, NoRespondersFromARealServerIsAnError) {
  Pipeline p;
  Feeder& f = p.feeder;
  f.Open(1, FT_ROLE_CLIENT, kCheckoutPid, "checkout", Tuple(50001, 4222));
  const std::string sent = ReadFixture("publisher_sent.bin");
  const std::string received = ReadFixture("publisher_received.bin");
  f.Read(1, 7, received.substr(0, received.find("\r\n") + 2), 10);  // INFO
  for (size_t at = 0; at < sent.size(); at += FT_MAX_PAYLOAD)
    f.Write(1, 7, std::string_view(sent).substr(at, FT_MAX_PAYLOAD), 20);
  f.Read(1, 7, received.substr(received.find("\r\n") + 2), 30);
  p.messaging.Flush();
  std::vector<Span> consumers = p.OfKind(SpanKind::kConsumer);
  ASSERT_EQ(consumers.size(), 1u);
  EXPECT_EQ(consumers[0].name, "process _INBOX");
  EXPECT_EQ(consumers[0].status, spans::StatusCode::kError);
  EXPECT_EQ(Str(consumers[0], "error.type"), "503");
  // The request itself and the publishes before it.
  std::vector<Span> producers = p.OfKind(SpanKind::kProducer);
  ASSERT_EQ(producers.size(), 6u);
  EXPECT_EQ(Str(producers.back(), "messaging.nats.reply_to"), "_INBOX.req.1");
}

TEST(MessagingAssemblerTest, PublishTableIsBoundedAndExpires) {
  TempProcRoot root;
  process::ProcessRegistry processes(root.path());
  std::vector<Span> out;
  spans::SpanAssembler http({}, &processes, [&](const Span& s) { out.push_back(s); });
  spans::MessagingOptions options;
  options.max_publishes = 4;
  options.publish_match_window_ns = 1000;
  spans::MessagingAssembler messaging(options, &processes, &http, [&](const Span& s) { out.push_back(s); });
  Feeder f(&messaging);
  f.Open(1, FT_ROLE_CLIENT, 1, "pub", Tuple(50001, 4222));
  f.Open(2, FT_ROLE_CLIENT, 2, "sub", Tuple(50002, 4222));
  f.Read(1, 7, kInfo, 1);
  f.Read(2, 8, kInfo, 1);
  for (int i = 0; i < 6; ++i) f.Write(1, 7, "PUB s 1\r\n" + std::to_string(i) + "\r\n", 100 + i);
  EXPECT_EQ(messaging.stats().publishes_dropped_table_full, 2u);
  f.Read(2, 8, "MSG s 1 1\r\n0\r\n", 200);  // dropped: unlinked
  f.Read(2, 8, "MSG s 1 1\r\n5\r\n", 210);  // kept: linked
  f.Read(2, 8, "MSG s 1 1\r\n4\r\n", 5000);  // too late after its publish
  messaging.Flush();
  EXPECT_EQ(messaging.stats().parent_from_fingerprint, 1u);
  EXPECT_EQ(messaging.stats().deliveries_unlinked, 2u);
}

}  // namespace
}  // namespace flowtracer
