#include "agent/spans/span_assembler.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "agent/conntrack/connection_tracker.h"
#include "agent/process/process_info.h"
#include "agent/spans/ids.h"
#include "tests/unit/kernel_records.h"
#include "tests/unit/temp_proc_root.h"

namespace flowtracer::spans {
namespace {

using conntrack::ConnectionInfo;
using conntrack::HttpExchange;
using conntrack::HttpMessageRecord;

constexpr std::string_view kTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr std::string_view kParent = "00f067aa0ba902b7";

struct Endpoint {
  std::array<uint8_t, 16> address;
  uint16_t port;
};

Endpoint V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
  return {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d}, port};
}

ft_tuple Tuple(const Endpoint& local, const Endpoint& remote) {
  ft_tuple tuple{};
  std::memcpy(tuple.local_addr, local.address.data(), 16);
  std::memcpy(tuple.remote_addr, remote.address.data(), 16);
  tuple.local_port = local.port;
  tuple.remote_port = remote.port;
  tuple.family = 2;
  return tuple;
}

std::optional<std::string> Str(const Span& span, const std::string& key) {
  const AttributeValue* value = span.Find(key);
  if (!value || !std::holds_alternative<std::string>(*value)) return std::nullopt;
  return std::get<std::string>(*value);
}

std::optional<int64_t> Int(const Span& span, const std::string& key) {
  const AttributeValue* value = span.Find(key);
  if (!value || !std::holds_alternative<int64_t>(*value)) return std::nullopt;
  return std::get<int64_t>(*value);
}

std::vector<std::string> Keys(const Span& span) {
  std::vector<std::string> keys;
  for (const Attribute& a : span.attributes) keys.push_back(a.key);
  return keys;
}

bool Has(const Span& span, const std::string& key) { return span.Find(key) != nullptr; }

// The span whose url.path is `path` (spans held for their trace come out later).
const Span& ByPath(const std::vector<Span>& spans, const std::string& path) {
  for (const Span& span : spans) {
    const AttributeValue* value = span.Find("url.path");
    if (value && std::get<std::string>(*value) == path) return span;
  }
  ADD_FAILURE() << "no span for " << path;
  static const Span kNone;
  return kNone;
}

// Ring buffer records -> ConnectionTracker -> SpanAssembler -> spans.
class Pipeline {
 public:
  explicit Pipeline(AssemblerOptions options = {}, conntrack::TrackerOptions tracker_options = {})
      : processes(proc_root_.path()),
        assembler(options, &processes, [this](const Span& span) { spans.push_back(span); }),
        tracker(tracker_options, &assembler) {}

  void Open(uint64_t conn_id, ft_role role, uint32_t pid, std::string_view comm, const ft_tuple& tuple,
            uint64_t ts = 1) {
    feeder_.Open(conn_id, role, pid, comm, tuple, ts);
  }
  void Close(uint64_t conn_id, uint64_t ts) { feeder_.Close(conn_id, ts); }
  void Write(uint64_t conn_id, uint32_t tid, std::string_view bytes, uint64_t ts) { feeder_.Write(conn_id, tid, bytes, ts); }
  void Read(uint64_t conn_id, uint32_t tid, std::string_view bytes, uint64_t ts) { feeder_.Read(conn_id, tid, bytes, ts); }
  // A read whose copy the kernel cut at `copied_bytes` (the payload cap).
  void ReadCut(uint64_t conn_id, uint32_t tid, std::string_view bytes, size_t copied_bytes, uint64_t ts) {
    feeder_.Data(conn_id, FT_DIR_INGRESS, tid, bytes.substr(0, copied_bytes), ts, static_cast<uint32_t>(bytes.size()));
  }

  TempProcRoot proc_root_;  // before `processes`, which is built from it
  process::ProcessRegistry processes;
  SpanAssembler assembler;
  conntrack::ConnectionTracker tracker;
  std::vector<Span> spans;

 private:
  records::RecordFeeder feeder_{[this](const void* data, size_t size) { tracker.OnRecord(data, size); }};
};

constexpr std::string_view kOk = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

std::string RequestWithTraceparent(std::string_view target, std::string_view traceparent) {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: svc\r\nTraceparent: " +
         std::string(traceparent) + "\r\n\r\n";
}

const Endpoint kGatewayEphemeral = V4(127, 0, 0, 1, 40000);
const Endpoint kBilling = V4(127, 0, 0, 1, 8080);
const Endpoint kRemoteClient = V4(10, 9, 9, 9, 5000);
const Endpoint kRemoteServer = V4(10, 1, 1, 1, 9090);

// ---- Server spans and traceparent.

TEST(SpanAssemblerTest, ForgettingAConnectionForgetsItsOpenRequestsOnly) {
  // Forgetting a connection takes its open requests (pipelined, several) and leaves those
  // of the others; batched into the once-a-second sweep, so thousands of closes cost one
  // pass, not one pass each.
  Pipeline p;
  for (uint64_t conn = 1; conn <= 3; ++conn) {
    p.Open(conn, FT_ROLE_SERVER, 100, "billing", Tuple(kBilling, V4(10, 9, 9, 9, static_cast<uint16_t>(5000 + conn))));
  }
  // Connection 2 answers its first 40 requests, then pipelines 3 that stay open.
  for (int i = 0; i < 40; ++i) {
    p.Read(2, 7, "GET /done HTTP/1.1\r\n\r\n", 10 + 2 * i);
    p.Write(2, 7, kOk, 11 + 2 * i);
  }
  p.Read(2, 7, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n", 200);
  p.Read(1, 8, "GET /one HTTP/1.1\r\n\r\n", 210);
  p.Read(3, 9, "GET /three HTTP/1.1\r\n\r\n", 220);
  ASSERT_EQ(p.assembler.open_requests(), 5u);
  // Dropped by the tracker (evicted, shed): no exchange comes, the assembler forgets.
  conntrack::ConnectionInfo dropped;
  dropped.conn_id = 2;
  dropped.pid = 100;
  dropped.role = FT_ROLE_SERVER;
  dropped.tuple = Tuple(kBilling, V4(10, 9, 9, 9, 5002));
  p.assembler.OnConnectionForgotten(dropped);
  EXPECT_EQ(p.assembler.server_requests_in_flight(), 2u);  // at once
  p.assembler.Tick(2ull * 1000 * 1000 * 1000);              // the open table at the next sweep
  EXPECT_EQ(p.assembler.open_requests(), 2u);
  EXPECT_EQ(p.assembler.stats().open_requests_expired, 0u);
  p.Close(1, 310);
  p.Close(3, 320);
  EXPECT_EQ(p.assembler.open_requests(), 0u);
  EXPECT_EQ(p.assembler.server_requests_in_flight(), 0u);
}

TEST(SpanAssemblerTest, ServerSpanAdoptsValidTraceparent) {
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 100, "billing", Tuple(kBilling, kRemoteClient));
  p.Read(1, 101, RequestWithTraceparent("/pay", "00-" + std::string(kTrace) + "-" + std::string(kParent) + "-01"),
         1000);
  p.Write(1, 101, kOk, 2000);
  ASSERT_EQ(p.spans.size(), 1u);
  const Span& span = p.spans[0];
  EXPECT_EQ(span.kind, SpanKind::kServer);
  EXPECT_EQ(ToHex(span.trace_id), kTrace);
  EXPECT_EQ(ToHex(span.parent_span_id), kParent);
  EXPECT_FALSE(IsZero(span.span_id));
  EXPECT_NE(span.span_id, span.parent_span_id);
  EXPECT_EQ(Str(span, "flowtracer.parent.source"), "traceparent");
  EXPECT_FALSE(Has(span, "flowtracer.parent.unresolved"));
  EXPECT_EQ(p.assembler.stats().parent_from_traceparent, 1u);
  EXPECT_EQ(p.assembler.stats().spans, 1u);
}

TEST(SpanAssemblerTest, InvalidTraceparentsAreIgnored) {
  const std::string trace(kTrace), parent(kParent);
  const std::vector<std::string> invalid = {
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  // uppercase
      "00-" + trace + "-00F067AA0BA902B7-01",                      // uppercase parent
      "00-00000000000000000000000000000000-" + parent + "-01",     // zero trace id
      "00-" + trace + "-0000000000000000-01",                      // zero parent id
      "ff-" + trace + "-" + parent + "-01",                        // version ff
      "00-" + trace + "-" + parent + "-01-extra",                  // version 00 with more
      "00-" + trace.substr(1) + "-" + parent + "-01",              // short trace id
      "00-" + trace + "-" + parent + "-1",                         // short flags
      "00-" + trace.substr(1) + "-0" + parent + "-01",             // misplaced dash
      "00_" + trace + "-" + parent + "-01",                        // bad separator
      "0g-" + trace + "-" + parent + "-01",                        // non-hex version
      "",                                                          // empty
  };
  for (const std::string& value : invalid) {
    SCOPED_TRACE(value);
    Pipeline p;
    p.Open(1, FT_ROLE_SERVER, 100, "billing", Tuple(kBilling, kRemoteClient));
    p.Read(1, 101, RequestWithTraceparent("/pay", value), 1000);
    p.Write(1, 101, kOk, 2000);
    ASSERT_EQ(p.spans.size(), 1u);
    const Span& span = p.spans[0];
    EXPECT_TRUE(IsZero(span.parent_span_id));
    EXPECT_FALSE(IsZero(span.trace_id));
    EXPECT_NE(ToHex(span.trace_id), kTrace);
    EXPECT_FALSE(Has(span, "flowtracer.parent.source"));
    EXPECT_EQ(p.assembler.stats().parent_from_traceparent, 0u);
  }
}

TEST(SpanAssemblerTest, TraceparentAtTheEndOf16KiBHeadAcrossWrites) {
  const std::string traceparent = "00-" + std::string(kTrace) + "-" + std::string(kParent) + "-01";
  std::string head = "GET /big-head HTTP/1.1\r\nHost: svc\r\n";
  for (int i = 0; head.size() < 16 * 1024 - 400; ++i) head += "X-Filler-" + std::to_string(i) + ": " + std::string(100, 'f') + "\r\n";
  head += "tracestate: vendor=opaque\r\ntraceparent: " + traceparent + "\r\ntracestate: other@sys=2\r\n\r\n";
  ASSERT_LE(head.size(), 16u * 1024);
  ASSERT_GT(head.size(), 16u * 1024 - 400);
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 100, "billing", Tuple(kBilling, kRemoteClient));
  // Five reads, split mid-line and inside the traceparent value.
  size_t cut_points[] = {0, 1000, 7777, head.size() - 60, head.size() - 3, head.size()};
  for (int i = 0; i < 5; ++i)
    p.Read(1, 101, std::string_view(head).substr(cut_points[i], cut_points[i + 1] - cut_points[i]), 1000 + i);
  p.Write(1, 101, kOk, 2000);
  ASSERT_EQ(p.spans.size(), 1u);
  EXPECT_EQ(ToHex(p.spans[0].trace_id), kTrace);
  EXPECT_EQ(ToHex(p.spans[0].parent_span_id), kParent);
  EXPECT_EQ(p.spans[0].trace_state, "vendor=opaque,other@sys=2");
  EXPECT_EQ(p.spans[0].start_unix_ns, 1000u);
}

TEST(SpanAssemblerTest, HeadCutByTheCopyCapIsNotTrusted) {
  // One read larger than the kernel's copy: the head runs into bytes never copied, so
  // its traceparent (past the cut) is unknown. The request is dropped and counted as a
  // resync, not given a trace it may not belong to.
  const std::string traceparent = "00-" + std::string(kTrace) + "-" + std::string(kParent) + "-01";
  std::string head = "GET /cut HTTP/1.1\r\nHost: svc\r\nX-Filler: " + std::string(600, 'f') +
                     "\r\ntraceparent: " + traceparent + "\r\n\r\n";
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 100, "billing", Tuple(kBilling, kRemoteClient));
  p.ReadCut(1, 101, head, 256, 1000);
  p.Write(1, 101, kOk, 2000);
  p.Read(1, 101, "GET /next HTTP/1.1\r\n\r\n", 3000);
  p.Write(1, 101, kOk, 4000);
  p.Close(1, 5000);
  ASSERT_EQ(p.spans.size(), 1u);
  EXPECT_EQ(Str(p.spans[0], "url.path"), "/next");
  EXPECT_NE(ToHex(p.spans[0].trace_id), kTrace);
  EXPECT_GE(p.tracker.stats().http_resyncs + p.tracker.stats().http_orphan_responses, 1u);
}

TEST(SpanAssemblerTest, TracestateTravelsWithTheTraceparent) {
  const std::string traceparent = "00-" + std::string(kTrace) + "-" + std::string(kParent) + "-01";
  Pipeline p;
  p.Open(1, FT_ROLE_CLIENT, 200, "gateway", Tuple(kGatewayEphemeral, kRemoteServer));
  p.Write(1, 201, "GET /x HTTP/1.1\r\ntraceparent: " + traceparent + "\r\ntracestate: congo=t61rcWkgMzE\r\n\r\n", 100);
  p.Read(1, 201, kOk, 110);
  // Without a valid traceparent the tracestate means nothing.
  p.Write(1, 201, "GET /y HTTP/1.1\r\ntraceparent: junk\r\ntracestate: congo=t61rcWkgMzE\r\n\r\n", 200);
  p.Read(1, 201, kOk, 210);
  // Two traceparent fields: ignored.
  p.Write(1, 201, "GET /z HTTP/1.1\r\ntraceparent: " + traceparent + "\r\ntraceparent: " + traceparent + "\r\n\r\n", 300);
  p.Read(1, 201, kOk, 310);
  ASSERT_EQ(p.spans.size(), 3u);
  EXPECT_EQ(ToHex(p.spans[0].span_id), kParent);
  EXPECT_EQ(p.spans[0].trace_state, "congo=t61rcWkgMzE");
  EXPECT_EQ(p.spans[1].trace_state, "");
  EXPECT_NE(ToHex(p.spans[1].trace_id), kTrace);
  EXPECT_NE(ToHex(p.spans[2].trace_id), kTrace);
  EXPECT_NE(ToHex(p.spans[2].span_id), kParent);
}

// ---- Client spans.

TEST(SpanAssemblerTest, ClientSpanCarryingTraceparentUsesItsIds) {
  const std::string traceparent = "00-" + std::string(kTrace) + "-" + std::string(kParent) + "-01";
  Pipeline p;
  p.Open(1, FT_ROLE_CLIENT, 200, "gateway", Tuple(kGatewayEphemeral, kBilling));
  p.Open(2, FT_ROLE_SERVER, 300, "billing", Tuple(kBilling, kGatewayEphemeral));
  const std::string request = RequestWithTraceparent("/charge", traceparent);
  p.Write(1, 201, request, 100);
  p.Read(2, 301, request, 110);
  p.Write(2, 301, kOk, 120);
  p.Read(1, 201, kOk, 130);
  ASSERT_EQ(p.spans.size(), 2u);
  const Span& server = p.spans[0];
  const Span& client = p.spans[1];
  EXPECT_EQ(client.kind, SpanKind::kClient);
  EXPECT_EQ(client.service, "gateway");
  EXPECT_EQ(ToHex(client.trace_id), kTrace);
  EXPECT_EQ(ToHex(client.span_id), kParent);
  EXPECT_TRUE(IsZero(client.parent_span_id));
  EXPECT_FALSE(Has(client, "flowtracer.parent.source"));
  // The callee links to it through the header.
  EXPECT_EQ(server.kind, SpanKind::kServer);
  EXPECT_EQ(server.service, "billing");
  EXPECT_EQ(ToHex(server.trace_id), kTrace);
  EXPECT_EQ(server.parent_span_id, client.span_id);
  EXPECT_EQ(Str(server, "flowtracer.parent.source"), "traceparent");
}

// ---- Same-host pairing.

TEST(SpanAssemblerTest, SameHostServerSpanIsChildOfClientSpan) {
  Pipeline p;
  p.Open(1, FT_ROLE_CLIENT, 200, "gateway", Tuple(kGatewayEphemeral, kBilling));
  p.Open(2, FT_ROLE_SERVER, 300, "billing", Tuple(kBilling, kGatewayEphemeral));
  for (int round = 0; round < 2; ++round) {
    uint64_t t = 1000 * (round + 1);
    std::string request = "GET /charge/" + std::to_string(round) + " HTTP/1.1\r\nHost: billing\r\n\r\n";
    p.Write(1, 201, request, t);
    p.Read(2, 301, request, t + 10);
    p.Write(2, 301, kOk, t + 20);
    p.Read(1, 201, kOk, t + 30);
  }
  // Pipelined: two requests in one write, matched in order.
  const std::string two = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
  p.Write(1, 201, two, 5000);
  p.Read(2, 301, two, 5010);
  p.Write(2, 301, std::string(kOk) + std::string(kOk), 5020);
  p.Read(1, 201, std::string(kOk) + std::string(kOk), 5030);

  ASSERT_EQ(p.spans.size(), 8u);
  // Per round: the server span finishes first, then the client span.
  std::vector<const Span*> servers, clients;
  for (const Span& span : p.spans) (span.kind == SpanKind::kServer ? servers : clients).push_back(&span);
  ASSERT_EQ(servers.size(), 4u);
  ASSERT_EQ(clients.size(), 4u);
  const char* names[] = {"GET /charge/{id}", "GET /charge/{id}", "GET /a", "GET /b"};
  for (size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(servers[i]->name, names[i]);
    EXPECT_EQ(clients[i]->name, names[i]);
    EXPECT_EQ(servers[i]->trace_id, clients[i]->trace_id);
    EXPECT_EQ(servers[i]->parent_span_id, clients[i]->span_id);
    EXPECT_EQ(Str(*servers[i], "flowtracer.parent.source"), "same_host");
    EXPECT_TRUE(IsZero(clients[i]->parent_span_id));
    EXPECT_FALSE(Has(*clients[i], "flowtracer.parent.source"));
  }
  EXPECT_EQ(Str(*servers[2], "url.path"), "/a");
  EXPECT_EQ(Str(*servers[3], "url.path"), "/b");
  EXPECT_NE(clients[0]->trace_id, clients[1]->trace_id);
  EXPECT_NE(clients[2]->trace_id, clients[3]->trace_id);
  EXPECT_EQ(p.assembler.stats().parent_from_same_host, 4u);
}

TEST(SpanAssemblerTest, SameHostNeedsTheReversedTuple) {
  Pipeline p;
  p.Open(1, FT_ROLE_CLIENT, 200, "gateway", Tuple(kGatewayEphemeral, kBilling));
  // Another client's connection to the same server.
  p.Open(2, FT_ROLE_SERVER, 300, "billing", Tuple(kBilling, V4(127, 0, 0, 1, 40001)));
  const std::string request = "GET / HTTP/1.1\r\n\r\n";
  p.Write(1, 201, request, 100);
  p.Read(2, 301, request, 110);
  p.Write(2, 301, kOk, 120);
  p.Read(1, 201, kOk, 130);
  ASSERT_EQ(p.spans.size(), 2u);
  EXPECT_TRUE(IsZero(p.spans[0].parent_span_id));
  EXPECT_NE(p.spans[0].trace_id, p.spans[1].trace_id);
  EXPECT_EQ(p.assembler.stats().parent_from_same_host, 0u);
}

TEST(SpanAssemblerTest, SameHostPairingStaysInOrderWhenClientSendsTraceparent) {
  // The client propagates on its first request only: the second server span must pair
  // with the second client span, not with the first one.
  const std::string traceparent = "00-" + std::string(kTrace) + "-" + std::string(kParent) + "-01";
  Pipeline p;
  p.Open(1, FT_ROLE_CLIENT, 200, "gateway", Tuple(kGatewayEphemeral, kBilling));
  p.Open(2, FT_ROLE_SERVER, 300, "billing", Tuple(kBilling, kGatewayEphemeral));
  const std::string first = RequestWithTraceparent("/first", traceparent);
  const std::string second = "GET /second HTTP/1.1\r\n\r\n";
  p.Write(1, 201, first, 100);
  p.Read(2, 301, first, 110);
  p.Write(2, 301, kOk, 120);
  p.Read(1, 201, kOk, 130);
  p.Write(1, 201, second, 200);
  p.Read(2, 301, second, 210);
  p.Write(2, 301, kOk, 220);
  p.Read(1, 201, kOk, 230);
  ASSERT_EQ(p.spans.size(), 4u);
  const Span& server1 = p.spans[0];
  const Span& client1 = p.spans[1];
  const Span& server2 = p.spans[2];
  const Span& client2 = p.spans[3];
  EXPECT_EQ(server1.parent_span_id, client1.span_id);
  EXPECT_EQ(Str(server1, "flowtracer.parent.source"), "traceparent");
  EXPECT_EQ(server2.parent_span_id, client2.span_id);
  EXPECT_EQ(server2.trace_id, client2.trace_id);
  EXPECT_NE(ToHex(server2.trace_id), kTrace);
  EXPECT_EQ(Str(server2, "flowtracer.parent.source"), "same_host");
}

TEST(SpanAssemblerTest, SameHostPairingWhenTheServersReadArrivesFirst) {
  // The kernel queues the bytes for the reader before the writer's event is recorded,
  // so the server's read can reach the agent first. Pairing is by the TCP sequence
  // number of the request's first byte, not by arrival order, and stays in step.
  Pipeline p;
  p.Open(1, FT_ROLE_CLIENT, 200, "gateway", Tuple(kGatewayEphemeral, kBilling));
  p.Open(2, FT_ROLE_SERVER, 300, "billing", Tuple(kBilling, kGatewayEphemeral));
  p.Open(3, FT_ROLE_SERVER, 200, "gateway", Tuple(V4(127, 0, 0, 1, 8000), kRemoteClient));
  p.Open(4, FT_ROLE_CLIENT, 300, "billing", Tuple(V4(127, 0, 0, 1, 42000), kRemoteServer));
  const std::string first = "GET /first HTTP/1.1\r\n\r\n";
  const std::string second = "GET /second HTTP/1.1\r\n\r\n";
  p.Read(3, 201, "GET /in HTTP/1.1\r\n\r\n", 10);  // gateway serves /in
  p.Read(2, 301, first, 110);                      // billing reads before...
  p.Write(4, 301, "GET /rates HTTP/1.1\r\n\r\n", 112);  // (billing's own child call)
  p.Read(4, 301, kOk, 114);
  p.Write(1, 201, first, 100);                     // ...gateway's write event arrives
  p.Write(2, 301, kOk, 120);
  p.Read(1, 201, kOk, 130);
  p.Write(1, 201, second, 200);                    // in order this time
  p.Read(2, 301, second, 210);
  p.Write(2, 301, kOk, 220);
  p.Read(1, 201, kOk, 230);
  p.Write(3, 201, kOk, 300);
  ASSERT_EQ(p.spans.size(), 6u);
  const Span& in = ByPath(p.spans, "/in");
  const Span& rates = ByPath(p.spans, "/rates");
  std::vector<const Span*> firsts, seconds;
  for (const Span& span : p.spans) {
    if (Str(span, "url.path") == "/first") firsts.push_back(&span);
    if (Str(span, "url.path") == "/second") seconds.push_back(&span);
  }
  ASSERT_EQ(firsts.size(), 2u);
  ASSERT_EQ(seconds.size(), 2u);
  for (auto* pair : {&firsts, &seconds}) {
    const Span* server = (*pair)[0]->kind == SpanKind::kServer ? (*pair)[0] : (*pair)[1];
    const Span* client = (*pair)[0]->kind == SpanKind::kServer ? (*pair)[1] : (*pair)[0];
    EXPECT_EQ(server->parent_span_id, client->span_id) << server->name;
    EXPECT_EQ(Str(*server, "flowtracer.parent.source"), "same_host");
    EXPECT_EQ(client->parent_span_id, in.span_id);
  }
  // One trace for all, including the call billing made before its parent was known.
  for (const Span& span : p.spans) EXPECT_EQ(span.trace_id, in.trace_id) << span.name;
  EXPECT_EQ(rates.parent_span_id, (firsts[0]->kind == SpanKind::kServer ? firsts[0] : firsts[1])->span_id);
  EXPECT_EQ(p.assembler.stats().parent_from_same_host_late, 1u);
  EXPECT_EQ(p.assembler.stats().parent_from_same_host, 2u);
}

TEST(SpanAssemblerTest, ClientWriteArrivingAfterTheServerSpanEndedLinksNothingLater) {
  // Extreme reordering: the server answered before the client's write reached the agent.
  // The server span went out as a root; the late client request must not be paired with
  // a later server request of the connection.
  Pipeline p;
  p.Open(1, FT_ROLE_CLIENT, 200, "gateway", Tuple(kGatewayEphemeral, kBilling));
  p.Open(2, FT_ROLE_SERVER, 300, "billing", Tuple(kBilling, kGatewayEphemeral));
  const std::string first = "GET /first HTTP/1.1\r\n\r\n";
  const std::string second = "GET /second HTTP/1.1\r\n\r\n";
  p.Read(2, 301, first, 110);
  p.Write(2, 301, kOk, 120);
  p.Write(1, 201, first, 100);
  p.Read(1, 201, kOk, 130);
  p.Write(1, 201, second, 200);
  p.Read(2, 301, second, 210);
  p.Write(2, 301, kOk, 220);
  p.Read(1, 201, kOk, 230);
  ASSERT_EQ(p.spans.size(), 4u);
  const Span& server_first = p.spans[0];
  EXPECT_EQ(Str(server_first, "url.path"), "/first");
  EXPECT_TRUE(IsZero(server_first.parent_span_id));
  const Span& client_first = p.spans[1];
  EXPECT_EQ(Str(client_first, "url.path"), "/first");
  EXPECT_EQ(client_first.kind, SpanKind::kClient);
  const Span* server_second = nullptr;
  const Span* client_second = nullptr;
  for (const Span& span : p.spans) {
    if (Str(span, "url.path") != "/second") continue;
    (span.kind == SpanKind::kServer ? server_second : client_second) = &span;
  }
  ASSERT_TRUE(server_second && client_second);
  EXPECT_EQ(server_second->parent_span_id, client_second->span_id);
  EXPECT_NE(server_second->parent_span_id, client_first.span_id);
  EXPECT_EQ(p.assembler.stats().parent_from_same_host, 1u);
}

TEST(SpanAssemblerTest, SameHostLateLinkNeverMixesTwoSettledTraces) {
  // Billing's SDK settled its group on trace A before gateway's write (carrying no
  // header, in another settled trace) reached the agent: no link rather than a mix.
  const std::string sdk = "00-" + std::string(kTrace) + "-" + std::string(kParent) + "-01";
  const std::string other = "00-11111111111111111111111111111111-2222222222222222-01";
  Pipeline p;
  p.Open(1, FT_ROLE_CLIENT, 200, "gateway", Tuple(kGatewayEphemeral, kBilling));
  p.Open(2, FT_ROLE_SERVER, 300, "billing", Tuple(kBilling, kGatewayEphemeral));
  p.Open(3, FT_ROLE_SERVER, 200, "gateway", Tuple(V4(127, 0, 0, 1, 8000), kRemoteClient));
  p.Open(4, FT_ROLE_CLIENT, 300, "billing", Tuple(V4(127, 0, 0, 1, 42000), kRemoteServer));
  const std::string first = "GET /first HTTP/1.1\r\n\r\n";
  p.Read(3, 201, RequestWithTraceparent("/in", other), 10);
  p.Read(2, 301, first, 110);
  p.Write(4, 301, RequestWithTraceparent("/sdk", sdk), 112);  // billing adopts trace A
  p.Write(1, 201, first, 100);
  p.Read(4, 301, kOk, 114);
  p.Write(2, 301, kOk, 120);
  p.Read(1, 201, kOk, 130);
  p.Write(3, 201, kOk, 300);
  const Span& billing = [&]() -> const Span& {
    for (const Span& s : p.spans) if (s.kind == SpanKind::kServer && s.service == "billing") return s;
    return p.spans.front();
  }();
  EXPECT_EQ(ToHex(billing.trace_id), kTrace);
  EXPECT_TRUE(IsZero(billing.parent_span_id));
  EXPECT_EQ(p.assembler.stats().same_host_not_linked, 1u);
  for (const Span& span : p.spans) {
    if (span.service == "gateway") {
      EXPECT_EQ(ToHex(span.trace_id), "11111111111111111111111111111111");
    }
  }
}

// ---- Thread rule.

TEST(SpanAssemblerTest, ClientRequestOnServingThreadIsChild) {
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 300, "billing", Tuple(kBilling, kRemoteClient));
  p.Open(2, FT_ROLE_CLIENT, 300, "billing", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer));
  p.Open(3, FT_ROLE_CLIENT, 300, "billing", Tuple(V4(127, 0, 0, 1, 41001), kRemoteServer));
  p.Open(4, FT_ROLE_CLIENT, 300, "billing", Tuple(V4(127, 0, 0, 1, 41002), kRemoteServer));
  p.Read(1, 301, "GET /orders/7 HTTP/1.1\r\n\r\n", 100);
  p.Write(2, 301, "GET /rates HTTP/1.1\r\n\r\n", 110);  // the serving thread
  p.Write(3, 302, "GET /other HTTP/1.1\r\n\r\n", 112);  // another thread
  p.Read(2, 301, kOk, 120);
  p.Read(3, 302, kOk, 122);
  p.Write(1, 301, kOk, 130);
  p.Write(4, 301, "GET /later HTTP/1.1\r\n\r\n", 140);  // after the answer
  p.Read(4, 301, kOk, 150);
  ASSERT_EQ(p.spans.size(), 4u);
  const Span& child = ByPath(p.spans, "/rates");
  const Span& other = ByPath(p.spans, "/other");
  const Span& server = ByPath(p.spans, "/orders/7");
  const Span& later = ByPath(p.spans, "/later");
  EXPECT_EQ(child.name, "GET /rates");
  EXPECT_EQ(server.name, "GET /orders/{id}");
  EXPECT_EQ(child.trace_id, server.trace_id);
  EXPECT_EQ(child.parent_span_id, server.span_id);
  EXPECT_EQ(Str(child, "flowtracer.parent.source"), "thread");
  EXPECT_TRUE(IsZero(server.parent_span_id));
  EXPECT_EQ(other.name, "GET /other");
  EXPECT_TRUE(IsZero(other.parent_span_id));
  EXPECT_NE(other.trace_id, server.trace_id);
  EXPECT_FALSE(Has(other, "flowtracer.parent.source"));
  EXPECT_FALSE(Has(other, "flowtracer.parent.unresolved"));
  EXPECT_EQ(later.name, "GET /later");
  EXPECT_TRUE(IsZero(later.parent_span_id));
  EXPECT_NE(later.trace_id, server.trace_id);
  EXPECT_EQ(p.assembler.stats().parent_from_thread, 1u);
  EXPECT_EQ(p.assembler.stats().parent_ambiguous, 0u);
}

TEST(SpanAssemblerTest, TwoServerRequestsOnThreadAreAmbiguous) {
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 300, "loop", Tuple(kBilling, kRemoteClient));
  p.Open(2, FT_ROLE_SERVER, 300, "loop", Tuple(kBilling, V4(10, 9, 9, 9, 5001)));
  p.Open(3, FT_ROLE_CLIENT, 300, "loop", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer));
  p.Read(1, 301, "GET /a HTTP/1.1\r\n\r\n", 100);
  p.Read(2, 301, "GET /b HTTP/1.1\r\n\r\n", 105);
  p.Write(3, 301, "GET /backend HTTP/1.1\r\n\r\n", 110);
  p.Read(3, 301, kOk, 120);
  ASSERT_EQ(p.spans.size(), 1u);
  const Span client = p.spans[0];  // a copy: more spans follow
  EXPECT_TRUE(IsZero(client.parent_span_id));
  EXPECT_FALSE(IsZero(client.trace_id));
  EXPECT_EQ(Str(client, "flowtracer.parent.unresolved"), "ambiguous");
  EXPECT_FALSE(Has(client, "flowtracer.parent.source"));
  EXPECT_EQ(p.assembler.stats().parent_ambiguous, 1u);
  EXPECT_EQ(p.assembler.stats().parent_from_thread, 0u);
  p.Write(1, 301, kOk, 130);
  p.Write(2, 301, kOk, 140);
  ASSERT_EQ(p.spans.size(), 3u);
  EXPECT_NE(p.spans[1].trace_id, client.trace_id);
  EXPECT_NE(p.spans[2].trace_id, client.trace_id);
}

TEST(SpanAssemblerTest, OnlyRequestsOfTheSendingThreadCount) {
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 300, "pool", Tuple(kBilling, kRemoteClient));
  p.Open(2, FT_ROLE_SERVER, 300, "pool", Tuple(kBilling, V4(10, 9, 9, 9, 5001)));
  p.Open(3, FT_ROLE_CLIENT, 300, "pool", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer));
  p.Open(4, FT_ROLE_CLIENT, 999, "other", Tuple(V4(127, 0, 0, 1, 41001), kRemoteServer));
  p.Read(1, 301, "GET /a HTTP/1.1\r\n\r\n", 100);
  p.Read(2, 302, "GET /b HTTP/1.1\r\n\r\n", 105);
  p.Write(3, 302, "GET /backend HTTP/1.1\r\n\r\n", 110);
  p.Write(4, 301, "GET /elsewhere HTTP/1.1\r\n\r\n", 111);  // same tid, another process
  p.Read(3, 302, kOk, 120);
  p.Read(4, 301, kOk, 121);
  p.Write(2, 302, kOk, 130);
  ASSERT_EQ(p.spans.size(), 3u);
  // The child is held until its parent ends: its trace could still change until then.
  const Span& elsewhere = p.spans[0];
  const Span& client = p.spans[1];
  const Span& server_b = p.spans[2];
  EXPECT_EQ(elsewhere.name, "GET /elsewhere");
  EXPECT_EQ(client.name, "GET /backend");
  EXPECT_EQ(server_b.name, "GET /b");
  EXPECT_EQ(client.parent_span_id, server_b.span_id);
  EXPECT_EQ(client.trace_id, server_b.trace_id);
  EXPECT_TRUE(IsZero(elsewhere.parent_span_id));
  EXPECT_FALSE(Has(elsewhere, "flowtracer.parent.unresolved"));
}

TEST(SpanAssemblerTest, ServerWithoutTraceparentAdoptsItsChildsTrace) {
  // Mixed services: the SDK inside the service started a trace for a request that came
  // without a traceparent. The agent's server span takes that trace id.
  const std::string traceparent = "00-" + std::string(kTrace) + "-" + std::string(kParent) + "-01";
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 300, "svc", Tuple(kBilling, kRemoteClient));
  p.Open(2, FT_ROLE_CLIENT, 300, "svc", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer));
  p.Read(1, 301, "GET /in HTTP/1.1\r\n\r\n", 100);
  p.Write(2, 301, RequestWithTraceparent("/out", traceparent), 110);
  p.Read(2, 301, kOk, 120);
  p.Write(1, 301, kOk, 130);
  ASSERT_EQ(p.spans.size(), 2u);
  const Span& client = p.spans[0];
  const Span& server = p.spans[1];
  EXPECT_EQ(ToHex(client.trace_id), kTrace);
  EXPECT_EQ(ToHex(client.span_id), kParent);
  EXPECT_EQ(client.parent_span_id, server.span_id);
  EXPECT_EQ(Str(client, "flowtracer.parent.source"), "thread");
  EXPECT_FALSE(Has(client, "flowtracer.trace.adopted"));  // its own header gave the id
  EXPECT_EQ(ToHex(server.trace_id), kTrace);
  EXPECT_TRUE(IsZero(server.parent_span_id));
  EXPECT_EQ(server.Find("flowtracer.trace.adopted") != nullptr, true);
  EXPECT_EQ(p.assembler.stats().traces_adopted, 1u);
}

TEST(SpanAssemblerTest, ThreadParentWithTraceparentOfAnotherTrace) {
  // The server request joined trace A through its own header; a child call carrying
  // trace B cannot be its child (two traces would mix) and stays a root of B.
  const std::string incoming = "00-11111111111111111111111111111111-2222222222222222-01";
  const std::string outgoing = "00-" + std::string(kTrace) + "-" + std::string(kParent) + "-01";
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 300, "svc", Tuple(kBilling, kRemoteClient));
  p.Open(2, FT_ROLE_CLIENT, 300, "svc", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer));
  p.Read(1, 301, RequestWithTraceparent("/in", incoming), 100);
  p.Write(2, 301, RequestWithTraceparent("/out", outgoing), 110);
  p.Read(2, 301, kOk, 120);
  ASSERT_EQ(p.spans.size(), 1u);
  EXPECT_EQ(ToHex(p.spans[0].trace_id), kTrace);
  EXPECT_EQ(ToHex(p.spans[0].span_id), kParent);
  EXPECT_TRUE(IsZero(p.spans[0].parent_span_id));
  EXPECT_EQ(p.assembler.stats().parent_from_thread, 0u);
  EXPECT_EQ(p.assembler.stats().traces_adopted, 0u);
  p.Write(1, 301, kOk, 130);
  ASSERT_EQ(p.spans.size(), 2u);
  EXPECT_EQ(ToHex(p.spans[1].trace_id), "11111111111111111111111111111111");
}

// ---- Mixed services: held spans and adopted trace ids.

constexpr uint64_t kMs = 1000 * 1000;

// curl (pid 100) -> gateway (pid 200, an SDK inside) -> billing (pid 300), one host.
struct MixedChain {
  const Endpoint curl = V4(127, 0, 0, 1, 50000);
  const Endpoint gateway = V4(127, 0, 0, 1, 8000);
  const Endpoint gateway_out = V4(127, 0, 0, 1, 50001);
  const Endpoint gateway_out2 = V4(127, 0, 0, 1, 50002);
  const Endpoint billing = V4(127, 0, 0, 1, 8080);
  const Endpoint plain = V4(127, 0, 0, 1, 8090);
  const std::string traceparent = "00-" + std::string(kTrace) + "-" + std::string(kParent) + "-01";

  void Open(Pipeline& p) const {
    p.Open(1, FT_ROLE_CLIENT, 100, "curl", Tuple(curl, gateway));
    p.Open(2, FT_ROLE_SERVER, 200, "gateway", Tuple(gateway, curl));
    p.Open(3, FT_ROLE_CLIENT, 200, "gateway", Tuple(gateway_out, plain));   // plain call, no header
    p.Open(4, FT_ROLE_CLIENT, 200, "gateway", Tuple(gateway_out2, billing));  // SDK call, header
    p.Open(5, FT_ROLE_SERVER, 300, "billing", Tuple(billing, gateway_out2));
  }
};

TEST(SpanAssemblerTest, MixedServicesWholeChainTakesTheSdkTrace) {
  MixedChain chain;
  Pipeline p;
  chain.Open(p);
  const std::string in = "GET /checkout HTTP/1.1\r\n\r\n";
  const std::string plain = "GET /plain HTTP/1.1\r\n\r\n";
  const std::string sdk = RequestWithTraceparent("/charge", chain.traceparent);
  p.Write(1, 101, in, 1 * kMs);
  p.Read(2, 201, in, 2 * kMs);
  // A call without a header finishes first: its trace id is not known yet, so it is held.
  p.Write(3, 201, plain, 3 * kMs);
  p.Read(3, 201, kOk, 4 * kMs);
  EXPECT_EQ(p.spans.size(), 0u);
  EXPECT_EQ(p.assembler.held_spans(), 1u);
  // The SDK's call decides the trace of the whole group and releases what was held.
  p.Write(4, 201, sdk, 5 * kMs);
  ASSERT_EQ(p.spans.size(), 1u);
  EXPECT_EQ(p.assembler.held_spans(), 0u);
  p.Read(5, 301, sdk, 6 * kMs);
  p.Write(5, 301, kOk, 7 * kMs);
  p.Read(4, 201, kOk, 8 * kMs);
  p.Write(2, 201, kOk, 9 * kMs);
  p.Read(1, 101, kOk, 10 * kMs);
  ASSERT_EQ(p.spans.size(), 5u);
  const Span& curl = p.spans[4];
  const Span& gateway = p.spans[3];
  const Span& plain_call = ByPath(p.spans, "/plain");
  const Span& sdk_call = p.spans[2];
  const Span& billing = p.spans[1];
  ASSERT_EQ(curl.kind, SpanKind::kClient);
  ASSERT_EQ(gateway.kind, SpanKind::kServer);
  ASSERT_EQ(sdk_call.service, "gateway");
  ASSERT_EQ(billing.service, "billing");
  for (const Span* span : {&curl, &gateway, &plain_call, &sdk_call, &billing}) {
    SCOPED_TRACE(span->name);
    EXPECT_EQ(ToHex(span->trace_id), kTrace);
  }
  EXPECT_TRUE(IsZero(curl.parent_span_id));
  EXPECT_EQ(gateway.parent_span_id, curl.span_id);
  EXPECT_EQ(plain_call.parent_span_id, gateway.span_id);
  EXPECT_EQ(sdk_call.parent_span_id, gateway.span_id);
  EXPECT_EQ(ToHex(sdk_call.span_id), kParent);
  EXPECT_EQ(ToHex(billing.parent_span_id), kParent);
  EXPECT_TRUE(Has(curl, "flowtracer.trace.adopted"));
  EXPECT_TRUE(Has(gateway, "flowtracer.trace.adopted"));
  EXPECT_TRUE(Has(plain_call, "flowtracer.trace.adopted"));
  EXPECT_FALSE(Has(sdk_call, "flowtracer.trace.adopted"));
  EXPECT_FALSE(Has(billing, "flowtracer.trace.adopted"));
  EXPECT_EQ(p.assembler.stats().traces_adopted, 1u);
  EXPECT_EQ(p.assembler.held_spans(), 0u);
  EXPECT_EQ(p.assembler.open_requests(), 0u);
}

TEST(SpanAssemblerTest, PlainChainIsHeldUntilItsRootEndsThenConsistent) {
  MixedChain chain;
  Pipeline p;
  chain.Open(p);
  const std::string in = "GET /checkout HTTP/1.1\r\n\r\n";
  const std::string plain = "GET /plain HTTP/1.1\r\n\r\n";
  p.Write(1, 101, in, 1 * kMs);
  p.Read(2, 201, in, 2 * kMs);
  p.Write(3, 201, plain, 3 * kMs);
  p.Read(3, 201, kOk, 4 * kMs);
  p.Write(2, 201, kOk, 5 * kMs);
  EXPECT_EQ(p.spans.size(), 0u);  // curl's request is still open: a child could still change the trace
  EXPECT_EQ(p.assembler.held_spans(), 2u);
  p.Read(1, 101, kOk, 6 * kMs);
  ASSERT_EQ(p.spans.size(), 3u);
  EXPECT_EQ(p.spans[0].trace_id, p.spans[1].trace_id);
  EXPECT_EQ(p.spans[1].trace_id, p.spans[2].trace_id);
  EXPECT_FALSE(Has(p.spans[0], "flowtracer.trace.adopted"));
  EXPECT_EQ(p.assembler.held_spans(), 0u);
  EXPECT_EQ(p.assembler.stats().held_spans_forced_out_age, 0u);
}

TEST(SpanAssemblerTest, HeldSpansAreForcedOutByAgeAndStayConsistent) {
  MixedChain chain;
  AssemblerOptions options;
  options.max_hold_ns = 100 * kMs;
  Pipeline p(options);
  chain.Open(p);
  const std::string in = "GET /checkout HTTP/1.1\r\n\r\n";
  const std::string plain = "GET /plain HTTP/1.1\r\n\r\n";
  p.Write(1, 101, in, 1 * kMs);
  p.Read(2, 201, in, 2 * kMs);
  p.Write(3, 201, plain, 3 * kMs);
  p.Read(3, 201, kOk, 4 * kMs);
  p.assembler.Tick(103 * kMs);  // held since 4 ms: not yet 100 ms
  EXPECT_EQ(p.spans.size(), 0u);
  p.assembler.Tick(104 * kMs);
  ASSERT_EQ(p.spans.size(), 1u);
  EXPECT_EQ(p.assembler.stats().held_spans_forced_out_age, 1u);
  const TraceId forced = p.spans[0].trace_id;
  // The trace id went out: a later SDK call cannot change it any more, and is not
  // linked into it either.
  const std::string sdk = RequestWithTraceparent("/charge", chain.traceparent);
  p.Write(4, 201, sdk, 200 * kMs);
  p.Read(4, 201, kOk, 210 * kMs);
  p.Write(2, 201, kOk, 220 * kMs);
  p.Read(1, 101, kOk, 230 * kMs);
  ASSERT_EQ(p.spans.size(), 4u);
  const Span& sdk_call = ByPath(p.spans, "/charge");
  EXPECT_EQ(ToHex(sdk_call.trace_id), kTrace);
  EXPECT_TRUE(IsZero(sdk_call.parent_span_id));
  EXPECT_EQ(ByPath(p.spans, "/checkout").kind, SpanKind::kServer);  // the server span comes first
  for (const Span& span : p.spans) {
    if (&span == &sdk_call) continue;
    EXPECT_EQ(span.trace_id, forced) << span.name;
  }
  EXPECT_EQ(p.assembler.stats().traces_adopted, 0u);
}

TEST(SpanAssemblerTest, HeldSpansAreBoundedInCount) {
  AssemblerOptions options;
  options.max_held_spans = 2;
  Pipeline p(options);
  // Three servers of one process, each with a finished child call while it is open.
  for (uint64_t i = 0; i < 3; ++i) {
    uint32_t tid = 301 + i;
    p.Open(10 + i, FT_ROLE_SERVER, 300, "svc", Tuple(kBilling, V4(10, 9, 9, 9, 5000 + i)));
    p.Open(20 + i, FT_ROLE_CLIENT, 300, "svc", Tuple(V4(127, 0, 0, 1, 41000 + i), kRemoteServer));
    p.Read(10 + i, tid, "GET /in HTTP/1.1\r\n\r\n", (10 + i) * kMs);
    p.Write(20 + i, tid, "GET /out HTTP/1.1\r\n\r\n", (11 + i) * kMs);
    p.Read(20 + i, tid, kOk, (12 + i) * kMs);
  }
  EXPECT_EQ(p.assembler.held_spans(), 2u);
  ASSERT_EQ(p.spans.size(), 1u);  // the oldest was forced out to make room
  EXPECT_EQ(Int(p.spans[0], "thread.id"), 301);
  EXPECT_EQ(p.assembler.stats().held_spans_forced_out_count, 1u);
}

TEST(SpanAssemblerTest, FlushReleasesHeldSpans) {
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 300, "svc", Tuple(kBilling, kRemoteClient));
  p.Open(2, FT_ROLE_CLIENT, 300, "svc", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer));
  p.Read(1, 301, "GET /in HTTP/1.1\r\n\r\n", 100);
  p.Write(2, 301, "GET /out HTTP/1.1\r\n\r\n", 110);
  p.Read(2, 301, kOk, 120);
  EXPECT_EQ(p.spans.size(), 0u);
  p.assembler.Flush();
  ASSERT_EQ(p.spans.size(), 1u);
  EXPECT_EQ(p.assembler.stats().held_spans_released_at_exit, 1u);
}

// ---- Connections the tracker forgets.

TEST(SpanAssemblerTest, EvictedConnectionLeavesNoStaleInFlightRequest) {
  for (bool idle : {false, true}) {
    SCOPED_TRACE(idle ? "idle eviction" : "table full");
    conntrack::TrackerOptions tracker_options;
    tracker_options.max_connections = idle ? 100 : 2;
    tracker_options.idle_timeout_ns = 1000 * kMs;
    Pipeline p({}, tracker_options);
    p.Open(1, FT_ROLE_SERVER, 300, "svc", Tuple(kBilling, kRemoteClient), 1 * kMs);
    p.Read(1, 301, "GET /never-answered HTTP/1.1\r\n\r\n", 2 * kMs);
    EXPECT_EQ(p.assembler.server_requests_in_flight(), 1u);
    if (idle) {
      p.tracker.Tick(2000 * kMs);
      EXPECT_EQ(p.tracker.stats().connections_evicted_idle, 1u);
    } else {
      p.Open(2, FT_ROLE_CLIENT, 400, "other", Tuple(V4(127, 0, 0, 1, 41005), kRemoteServer), 3 * kMs);
      p.Open(3, FT_ROLE_CLIENT, 400, "other", Tuple(V4(127, 0, 0, 1, 41006), kRemoteServer), 4 * kMs);
      EXPECT_EQ(p.tracker.stats().connections_evicted_full, 1u);
    }
    EXPECT_EQ(p.assembler.server_requests_in_flight(), 0u);
    // A later call on the same thread must not become a child of the forgotten request.
    p.Open(4, FT_ROLE_CLIENT, 300, "svc", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer), 2100 * kMs);
    p.Write(4, 301, "GET /later HTTP/1.1\r\n\r\n", 2101 * kMs);
    p.Read(4, 301, kOk, 2102 * kMs);
    ASSERT_EQ(p.spans.size(), 1u);
    EXPECT_TRUE(IsZero(p.spans[0].parent_span_id));
    EXPECT_FALSE(Has(p.spans[0], "flowtracer.parent.source"));
    EXPECT_EQ(p.assembler.held_spans(), 0u);
    // The open table lets it go at the next sweep (batched: one pass for many closes).
    p.assembler.Tick(3000 * kMs);
    EXPECT_EQ(p.assembler.open_requests(), 0u);
    EXPECT_EQ(p.assembler.stats().open_requests_expired, 0u);
  }
}

TEST(SpanAssemblerTest, RequestsOpenTooLongAreForgotten) {
  // An exchange that never comes (its response lost) must not stay "in flight" and
  // parent later calls of the thread.
  AssemblerOptions options;
  options.max_open_age_ns = 60000 * kMs;
  Pipeline p(options);
  p.Open(1, FT_ROLE_SERVER, 300, "svc", Tuple(kBilling, kRemoteClient));
  p.Open(2, FT_ROLE_CLIENT, 300, "svc", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer));
  p.Read(1, 301, "GET /lost HTTP/1.1\r\n\r\n", 1000 * kMs);
  p.assembler.Tick(60999 * kMs);
  EXPECT_EQ(p.assembler.server_requests_in_flight(), 1u);
  p.assembler.Tick(61000 * kMs);  // sweeps run once a second
  EXPECT_EQ(p.assembler.server_requests_in_flight(), 1u);
  p.assembler.Tick(62000 * kMs);
  EXPECT_EQ(p.assembler.server_requests_in_flight(), 0u);
  EXPECT_EQ(p.assembler.open_requests(), 0u);
  EXPECT_EQ(p.assembler.stats().open_requests_expired, 1u);
  p.Write(2, 301, "GET /later HTTP/1.1\r\n\r\n", 62001 * kMs);
  p.Read(2, 301, kOk, 62002 * kMs);
  ASSERT_EQ(p.spans.size(), 1u);
  EXPECT_TRUE(IsZero(p.spans[0].parent_span_id));
}

// ---- Event loops.

TEST(SpanAssemblerTest, EventLoopLinksOnlyWithOneRequestInTheProcess) {
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 400, "node", Tuple(kBilling, kRemoteClient));
  p.Open(2, FT_ROLE_SERVER, 400, "node", Tuple(kBilling, V4(10, 9, 9, 9, 5001)));
  p.Open(3, FT_ROLE_CLIENT, 400, "node", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer));
  p.Open(4, FT_ROLE_CLIENT, 400, "node", Tuple(V4(127, 0, 0, 1, 41001), kRemoteServer));
  // One thread reads two connections' requests before answering: an event loop.
  p.Read(1, 401, "GET /a HTTP/1.1\r\n\r\n", 100);
  p.Read(2, 401, "GET /b HTTP/1.1\r\n\r\n", 105);
  p.Write(3, 401, "GET /backend-1 HTTP/1.1\r\n\r\n", 110);  // for /a or /b: unknown
  p.Write(2, 401, kOk, 120);                                // /b answered
  p.Write(4, 401, "GET /backend-2 HTTP/1.1\r\n\r\n", 130);  // only /a in flight
  p.Read(3, 401, kOk, 140);
  p.Read(4, 401, kOk, 150);
  p.Write(1, 401, kOk, 160);
  ASSERT_EQ(p.spans.size(), 4u);
  const Span& a = ByPath(p.spans, "/a");
  const Span& backend1 = ByPath(p.spans, "/backend-1");
  const Span& backend2 = ByPath(p.spans, "/backend-2");
  EXPECT_TRUE(IsZero(backend1.parent_span_id));
  EXPECT_EQ(Str(backend1, "flowtracer.parent.unresolved"), "ambiguous");
  EXPECT_EQ(backend2.parent_span_id, a.span_id);
  EXPECT_EQ(backend2.trace_id, a.trace_id);
  EXPECT_EQ(Str(backend2, "flowtracer.parent.source"), "event_loop");
  EXPECT_EQ(p.assembler.stats().parent_from_event_loop, 1u);
}

TEST(SpanAssemblerTest, MultiThreadedEventLoopNeedsOneRequestInTheWholeProcess) {
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 500, "go", Tuple(kBilling, kRemoteClient));
  p.Open(2, FT_ROLE_SERVER, 500, "go", Tuple(kBilling, V4(10, 9, 9, 9, 5001)));
  p.Open(3, FT_ROLE_SERVER, 500, "go", Tuple(kBilling, V4(10, 9, 9, 9, 5002)));
  p.Open(4, FT_ROLE_CLIENT, 500, "go", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer));
  // Thread 501 multiplexes (/x and /y at once): the process is an event loop.
  p.Read(1, 501, "GET /x HTTP/1.1\r\n\r\n", 100);
  p.Read(2, 501, "GET /y HTTP/1.1\r\n\r\n", 101);
  p.Write(1, 501, kOk, 102);
  // Now /y on thread 501 and /z on thread 502: a call from 501 may be for /z (work
  // moves between threads), so it gets no parent.
  p.Read(3, 502, "GET /z HTTP/1.1\r\n\r\n", 103);
  p.Write(4, 501, "GET /call HTTP/1.1\r\n\r\n", 110);
  p.Read(4, 501, kOk, 120);
  const Span& call = ByPath(p.spans, "/call");
  EXPECT_TRUE(IsZero(call.parent_span_id));
  EXPECT_EQ(Str(call, "flowtracer.parent.unresolved"), "event_loop_concurrent");
  EXPECT_EQ(p.assembler.stats().parent_event_loop_concurrent, 1u);
}

TEST(SpanAssemblerTest, ThreadPerRequestServerIsNotAnEventLoop) {
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 600, "py", Tuple(kBilling, kRemoteClient));
  p.Open(2, FT_ROLE_SERVER, 600, "py", Tuple(kBilling, V4(10, 9, 9, 9, 5001)));
  p.Open(3, FT_ROLE_CLIENT, 600, "py", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer));
  // Pipelined requests on one connection do not make a thread an event loop.
  p.Read(1, 601, "GET /p1 HTTP/1.1\r\n\r\nGET /p2 HTTP/1.1\r\n\r\n", 100);
  p.Write(1, 601, std::string(kOk) + std::string(kOk), 101);
  p.Read(1, 601, "GET /p3 HTTP/1.1\r\n\r\n", 102);
  p.Read(2, 602, "GET /q HTTP/1.1\r\n\r\n", 103);  // another thread, concurrently
  p.Write(3, 601, "GET /call HTTP/1.1\r\n\r\n", 110);
  p.Read(3, 601, kOk, 120);
  p.Write(1, 601, kOk, 130);
  const Span& call = ByPath(p.spans, "/call");
  EXPECT_EQ(call.parent_span_id, ByPath(p.spans, "/p3").span_id);
  EXPECT_EQ(Str(call, "flowtracer.parent.source"), "thread");
}

// ---- Status.

TEST(SpanAssemblerTest, StatusRules) {
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 300, "svc", Tuple(kBilling, kRemoteClient));
  p.Open(2, FT_ROLE_CLIENT, 300, "svc", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer));
  const int statuses[] = {200, 404, 500, 503};
  for (int status : statuses) {
    std::string response = "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Length: 0\r\n\r\n";
    p.Read(1, 301, "GET / HTTP/1.1\r\n\r\n", 100);
    p.Write(1, 301, response, 110);
    p.Write(2, 302, "GET / HTTP/1.1\r\n\r\n", 120);
    p.Read(2, 302, response, 130);
  }
  ASSERT_EQ(p.spans.size(), 8u);
  const StatusCode server_expected[] = {StatusCode::kUnset, StatusCode::kUnset, StatusCode::kError,
                                        StatusCode::kError};
  const StatusCode client_expected[] = {StatusCode::kUnset, StatusCode::kError, StatusCode::kError,
                                        StatusCode::kError};
  for (size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE(statuses[i]);
    const Span& server = p.spans[2 * i];
    const Span& client = p.spans[2 * i + 1];
    ASSERT_EQ(server.kind, SpanKind::kServer);
    ASSERT_EQ(client.kind, SpanKind::kClient);
    EXPECT_EQ(Int(server, "http.response.status_code"), statuses[i]);
    EXPECT_EQ(Int(client, "http.response.status_code"), statuses[i]);
    EXPECT_EQ(server.status, server_expected[i]);
    EXPECT_EQ(client.status, client_expected[i]);
    std::optional<std::string> code = std::to_string(statuses[i]);
    EXPECT_EQ(Str(server, "error.type"), server.status == StatusCode::kError ? code : std::nullopt);
    EXPECT_EQ(Str(client, "error.type"), client.status == StatusCode::kError ? code : std::nullopt);
  }
}

TEST(SpanAssemblerTest, MissingResponseIsAnError) {
  conntrack::TrackerOptions tracker_options;
  tracker_options.response_timeout_ns = 1000;
  AssemblerOptions options;
  options.monotonic_to_unix_ns = 1'000'000;
  Pipeline p(options, tracker_options);
  p.Open(1, FT_ROLE_SERVER, 300, "svc", Tuple(kBilling, kRemoteClient));
  p.Read(1, 301, "POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\n", 100);
  p.Read(1, 301, "{}", 150);
  p.Close(1, 900);
  p.Open(2, FT_ROLE_SERVER, 300, "svc", Tuple(kBilling, V4(10, 9, 9, 9, 5001)));
  p.Read(2, 302, "GET /b HTTP/1.1\r\n\r\n", 2000);
  p.tracker.Tick(3001);
  ASSERT_EQ(p.spans.size(), 2u);
  const Span& closed = p.spans[0];
  EXPECT_EQ(closed.status, StatusCode::kError);
  EXPECT_EQ(Str(closed, "error.type"), "connection_closed");
  EXPECT_FALSE(Has(closed, "http.response.status_code"));
  EXPECT_FALSE(Has(closed, "http.response.body.size"));
  EXPECT_EQ(Int(closed, "http.request.body.size"), 2);
  // Without a response the span ends with the request.
  EXPECT_EQ(closed.start_unix_ns, 1'000'100u);
  EXPECT_EQ(closed.end_unix_ns, 1'000'150u);
  const Span& timed_out = p.spans[1];
  EXPECT_EQ(timed_out.status, StatusCode::kError);
  EXPECT_EQ(Str(timed_out, "error.type"), "timeout");
  EXPECT_EQ(timed_out.start_unix_ns, 1'002'000u);
  EXPECT_EQ(timed_out.end_unix_ns, 1'002'000u);
}

// ---- Attributes, name, timing.

TEST(SpanAssemblerTest, ServerSpanAttributes) {
  AssemblerOptions options;
  options.monotonic_to_unix_ns = 1'700'000'000'000'000'000;
  Pipeline p(options);
  p.Open(1, FT_ROLE_SERVER, 4321, "billing", Tuple(V4(10, 0, 0, 1, 8080), V4(10, 0, 0, 2, 51000)));
  p.Read(1, 777,
         "GET /users/42?expand=1 HTTP/1.1\r\nHost: api.example.com:8443\r\nUser-Agent: curl/8.5.0\r\n"
         "Content-Length: 3\r\n\r\n",
         1000);
  p.Read(1, 778, "abc", 1100);
  p.Write(1, 779, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 2000);
  p.Write(1, 779, "hello", 2500);
  ASSERT_EQ(p.spans.size(), 1u);
  const Span& span = p.spans[0];
  EXPECT_EQ(span.name, "GET /users/{id}");
  EXPECT_EQ(span.service, "billing");
  EXPECT_EQ(span.kind, SpanKind::kServer);
  EXPECT_EQ(span.pid, 4321u);
  EXPECT_EQ(span.status, StatusCode::kUnset);
  EXPECT_EQ(span.start_unix_ns, 1'700'000'000'000'001'000u);
  EXPECT_EQ(span.end_unix_ns, 1'700'000'000'000'002'500u);
  EXPECT_EQ(span.tuple.local_port, 8080);
  EXPECT_EQ(span.tuple.remote_port, 51000);
  EXPECT_EQ(Keys(span), (std::vector<std::string>{
                            "http.request.method", "url.path", "http.route", "server.address",
                            "server.port", "client.address", "client.port", "network.peer.address",
                            "network.peer.port", "network.protocol.version", "http.request.body.size",
                            "user_agent.original", "process.pid", "thread.id",
                            "http.response.status_code", "http.response.body.size"}));
  EXPECT_EQ(Str(span, "http.request.method"), "GET");
  EXPECT_EQ(Str(span, "url.path"), "/users/42");
  EXPECT_EQ(Str(span, "http.route"), "/users/{id}");
  EXPECT_EQ(Str(span, "server.address"), "api.example.com");
  EXPECT_EQ(Int(span, "server.port"), 8080);
  EXPECT_EQ(Str(span, "client.address"), "10.0.0.2");
  EXPECT_EQ(Int(span, "client.port"), 51000);
  EXPECT_EQ(Str(span, "network.peer.address"), "10.0.0.2");
  EXPECT_EQ(Int(span, "network.peer.port"), 51000);
  EXPECT_EQ(Str(span, "network.protocol.version"), "1.1");
  EXPECT_EQ(Int(span, "http.request.body.size"), 3);
  EXPECT_EQ(Str(span, "user_agent.original"), "curl/8.5.0");
  EXPECT_EQ(Int(span, "process.pid"), 4321);
  EXPECT_EQ(Int(span, "thread.id"), 777);
  EXPECT_EQ(Int(span, "http.response.status_code"), 200);
  EXPECT_EQ(Int(span, "http.response.body.size"), 5);
}

TEST(SpanAssemblerTest, ClientSpanAttributesIpv6AndInferredRole) {
  Pipeline p;
  Endpoint local{{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 45678};                      // ::1
  Endpoint remote{{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}, 443};        // 2001:db8::5
  p.Open(1, FT_ROLE_UNKNOWN, 55, "gateway", Tuple(local, remote));
  p.Write(1, 56,
          "POST /api/v1/orders/550e8400-e29b-41d4-a716-446655440000 HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}",
          10);
  p.Read(1, 56, "HTTP/1.0 201 Created\r\nContent-Length: 4\r\n\r\nabcd", 20);
  ASSERT_EQ(p.spans.size(), 1u);
  const Span& span = p.spans[0];
  EXPECT_EQ(span.kind, SpanKind::kClient);
  EXPECT_EQ(span.name, "POST /api/v1/orders/{id}");
  EXPECT_EQ(span.service, "gateway");
  EXPECT_EQ(Keys(span), (std::vector<std::string>{
                            "http.request.method", "url.path", "http.route", "server.address",
                            "server.port", "network.peer.address", "network.peer.port",
                            "network.protocol.version", "http.request.body.size", "process.pid",
                            "thread.id", "http.response.status_code", "http.response.body.size",
                            "flowtracer.role_inferred"}));
  EXPECT_EQ(Str(span, "url.path"), "/api/v1/orders/550e8400-e29b-41d4-a716-446655440000");
  EXPECT_EQ(Str(span, "server.address"), "2001:db8::5");
  EXPECT_EQ(Int(span, "server.port"), 443);
  EXPECT_EQ(Str(span, "network.peer.address"), "2001:db8::5");
  EXPECT_EQ(Int(span, "network.peer.port"), 443);
  EXPECT_EQ(Str(span, "network.protocol.version"), "1.0");
  EXPECT_EQ(Int(span, "http.request.body.size"), 2);
  EXPECT_EQ(Int(span, "http.response.body.size"), 4);
  EXPECT_EQ(Int(span, "process.pid"), 55);
  EXPECT_EQ(Int(span, "thread.id"), 56);
  const AttributeValue* inferred = span.Find("flowtracer.role_inferred");
  ASSERT_NE(inferred, nullptr);
  ASSERT_TRUE(std::holds_alternative<bool>(*inferred));
  EXPECT_TRUE(std::get<bool>(*inferred));
}

TEST(SpanAssemblerTest, ServerAddressFromHostHeader) {
  Pipeline p;
  p.Open(1, FT_ROLE_SERVER, 1, "svc", Tuple(V4(192, 168, 1, 10, 80), kRemoteClient));
  p.Read(1, 2, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 10);
  p.Write(1, 2, kOk, 11);
  p.Read(1, 2, "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 12);
  p.Write(1, 2, kOk, 13);
  p.Read(1, 2, "GET / HTTP/1.1\r\n\r\n", 14);
  p.Write(1, 2, kOk, 15);
  ASSERT_EQ(p.spans.size(), 3u);
  EXPECT_EQ(Str(p.spans[0], "server.address"), "example.com");
  EXPECT_EQ(Str(p.spans[1], "server.address"), "::1");
  EXPECT_EQ(Str(p.spans[2], "server.address"), "192.168.1.10");
  EXPECT_EQ(Int(p.spans[2], "server.port"), 80);
  EXPECT_FALSE(Has(p.spans[2], "user_agent.original"));
}

// ---- Fed directly, without a tracker.

TEST(SpanAssemblerTest, ExchangeWithoutStartGetsFreshIds) {
  TempProcRoot root;
  process::ProcessRegistry processes(root.path());
  std::vector<Span> spans;
  AssemblerOptions options;
  options.max_routes_per_service = 1;
  SpanAssembler assembler(options, &processes, [&](const Span& s) { spans.push_back(s); });
  ConnectionInfo connection;
  connection.conn_id = 9;
  connection.pid = 77;
  connection.comm = "direct";
  connection.role = FT_ROLE_SERVER;
  connection.tuple = Tuple(kBilling, kRemoteClient);
  HttpExchange exchange;
  exchange.request.head.SetText("GET", "/one");
  exchange.request.start_ns = 50;
  exchange.request.end_ns = 60;
  exchange.request.tid = 78;
  HttpMessageRecord response;
  response.head.type = protocols::MessageType::kResponse;
  response.head.status_code = 200;
  response.start_ns = 70;
  response.end_ns = 40;  // before the request started (clock skew): clamped
  exchange.response = response;
  assembler.OnHttpExchange(connection, exchange);
  exchange.request.request_index = 1;
  exchange.request.head.SetText("GET", "/two");
  assembler.OnHttpExchange(connection, exchange);
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_FALSE(IsZero(spans[0].trace_id));
  EXPECT_FALSE(IsZero(spans[0].span_id));
  EXPECT_TRUE(IsZero(spans[0].parent_span_id));
  EXPECT_NE(spans[0].trace_id, spans[1].trace_id);
  EXPECT_EQ(spans[0].service, "direct");
  EXPECT_EQ(spans[0].name, "GET /one");
  EXPECT_EQ(spans[0].start_unix_ns, 50u);
  EXPECT_EQ(spans[0].end_unix_ns, 50u);
  // One route per service allowed: the second is the overflow route.
  EXPECT_EQ(spans[1].name, "GET {overflow}");
  EXPECT_EQ(Str(spans[1], "http.route"), "{overflow}");
  EXPECT_EQ(Str(spans[1], "url.path"), "/two");
  EXPECT_EQ(assembler.routes().overflow_count(), 1u);
  EXPECT_EQ(assembler.stats().spans, 2u);
}

TEST(SpanAssemblerTest, OpenRequestsAreBounded) {
  AssemblerOptions options;
  options.max_open_requests = 1;
  Pipeline p(options);
  p.Open(1, FT_ROLE_SERVER, 300, "svc", Tuple(kBilling, kRemoteClient));
  p.Open(2, FT_ROLE_CLIENT, 300, "svc", Tuple(V4(127, 0, 0, 1, 41000), kRemoteServer));
  p.Read(1, 301, "GET /in HTTP/1.1\r\n\r\n", 100);
  p.Write(2, 301, "GET /out HTTP/1.1\r\n\r\n", 110);  // no room: no ids decided
  EXPECT_EQ(p.assembler.stats().open_requests_dropped, 1u);
  p.Read(2, 301, kOk, 120);
  p.Write(1, 301, kOk, 130);
  ASSERT_EQ(p.spans.size(), 2u);
  EXPECT_TRUE(IsZero(p.spans[0].parent_span_id));
  EXPECT_FALSE(IsZero(p.spans[0].trace_id));
  EXPECT_EQ(p.assembler.stats().parent_from_thread, 0u);
}

TEST(FormatAddressTest, MappedV4AndV6) {
  EXPECT_EQ(FormatAddress(V4(127, 0, 0, 1, 0).address.data()), "127.0.0.1");
  EXPECT_EQ(FormatAddress(V4(255, 255, 255, 255, 0).address.data()), "255.255.255.255");
  const uint8_t v6[16] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0xab, 0xcd};
  EXPECT_EQ(FormatAddress(v6), "fe80::1234:0:0:abcd");
  const uint8_t any[16] = {};
  EXPECT_EQ(FormatAddress(any), "::");
}

// Spans are built over the previous one's storage: nothing of an earlier span (error
// status, error.type, user agent, a longer value) may reach the next.
TEST(SpanAssemblerTest, ConsecutiveSpansShareNothing) {
  Pipeline p;
  ft_tuple tuple = Tuple(kBilling, kRemoteClient);
  p.Open(1, FT_ROLE_SERVER, 500, "billing", tuple);
  p.Read(1, 500, "GET /a/very/long/path/for/the/first/request HTTP/1.1\r\nHost: billing.example\r\n"
                 "User-Agent: curl/8\r\n\r\n", 10);
  p.Write(1, 500, "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", 20);
  p.Read(1, 500, "PUT /b HTTP/1.0\r\n\r\n", 30);
  p.Write(1, 500, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 40);
  ASSERT_EQ(p.spans.size(), 2u);
  const Span& first = p.spans[0];
  const Span& second = p.spans[1];
  EXPECT_EQ(first.status, StatusCode::kError);
  EXPECT_EQ(Str(first, "error.type"), "503");
  EXPECT_EQ(Str(first, "user_agent.original"), "curl/8");
  EXPECT_EQ(Str(first, "server.address"), "billing.example");
  EXPECT_EQ(first.name, "GET /a/very/long/path/for/the/first/request");
  EXPECT_EQ(second.status, StatusCode::kUnset);
  EXPECT_FALSE(Has(second, "error.type"));
  EXPECT_FALSE(Has(second, "user_agent.original"));
  EXPECT_EQ(second.name, "PUT /b");
  EXPECT_EQ(Str(second, "url.path"), "/b");
  EXPECT_EQ(Str(second, "server.address"), "127.0.0.1");
  EXPECT_EQ(Str(second, "network.protocol.version"), "1.0");
  EXPECT_EQ(Int(second, "http.response.status_code"), 200);
  EXPECT_EQ(Int(second, "http.response.body.size"), 2);
  EXPECT_EQ(second.start_unix_ns, 30u);
  std::vector<std::string> keys = Keys(second);
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), keys.size()) << "a key twice";
}

// FormatAddress formats IPv4 by hand: it must print exactly what inet_ntop prints.
TEST(FormatAddressTest, MatchesInetNtop) {
  auto expected = [](const uint8_t address[16]) {
    char text[INET6_ADDRSTRLEN] = {};
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(address, kMapped, 12) == 0) {
      inet_ntop(AF_INET, address + 12, text, sizeof(text));
    } else {
      inet_ntop(AF_INET6, address, text, sizeof(text));
    }
    return std::string(text);
  };
  std::array<uint8_t, 16> address{};
  address[10] = address[11] = 0xff;
  // Every octet value in every position: one, two and three digits.
  for (int position = 12; position < 16; ++position) {
    for (int value = 0; value < 256; ++value) {
      for (int other = 12; other < 16; ++other) address[other] = other == position ? 0 : 7;
      address[position] = static_cast<uint8_t>(value);
      ASSERT_EQ(FormatAddress(address.data()), expected(address.data()));
    }
  }
  std::memset(address.data() + 12, 255, 4);
  EXPECT_EQ(FormatAddress(address.data()), "255.255.255.255");
  std::memset(address.data() + 12, 0, 4);
  EXPECT_EQ(FormatAddress(address.data()), "0.0.0.0");
  // IPv6, including the forms inet_ntop prints with an embedded IPv4 address.
  std::array<uint8_t, 16> loopback6{};
  loopback6[15] = 1;
  EXPECT_EQ(FormatAddress(loopback6.data()), "::1");
  std::array<uint8_t, 16> v6{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0, 0xa8, 0, 1};
  EXPECT_EQ(FormatAddress(v6.data()), expected(v6.data()));
  std::array<uint8_t, 16> compat{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 1, 2, 3};
  EXPECT_EQ(FormatAddress(compat.data()), expected(compat.data()));
}

}  // namespace
}  // namespace flowtracer::spans
