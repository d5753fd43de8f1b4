#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/spans/call_summary.h"
#include "agent/spans/ids.h"
#include "agent/spans/span.h"
#include "exporters/capture_output.h"

namespace flowtracer {
namespace {

using spans::CallSummary;
using spans::CallSummaryRow;
using spans::Span;
using spans::SpanId;
using spans::SpanKind;
using spans::StatusCode;
using spans::TraceId;

const std::string kTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
const std::string kParent = "00f067aa0ba902b7";

bool IsLowerHex(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// ---- Ids.

TEST(IdsTest, NewIdsAreNonZeroAndDistinct) {
  std::set<TraceId> traces;
  std::set<SpanId> span_ids;
  for (int i = 0; i < 2000; ++i) {
    TraceId trace = spans::NewTraceId();
    SpanId span = spans::NewSpanId();
    EXPECT_FALSE(spans::IsZero(trace));
    EXPECT_FALSE(spans::IsZero(span));
    traces.insert(trace);
    span_ids.insert(span);
  }
  EXPECT_EQ(traces.size(), 2000u);
  EXPECT_EQ(span_ids.size(), 2000u);
}

TEST(IdsTest, NewIdsUseEveryByte) {
  // Each byte position must vary (a generator filling only part of the id would not).
  std::array<std::set<uint8_t>, 16> trace_values;
  std::array<std::set<uint8_t>, 8> span_values;
  for (int i = 0; i < 200; ++i) {
    TraceId trace = spans::NewTraceId();
    SpanId span = spans::NewSpanId();
    for (size_t b = 0; b < 16; ++b) trace_values[b].insert(trace[b]);
    for (size_t b = 0; b < 8; ++b) span_values[b].insert(span[b]);
  }
  for (size_t b = 0; b < 16; ++b) EXPECT_GT(trace_values[b].size(), 50u) << b;
  for (size_t b = 0; b < 8; ++b) EXPECT_GT(span_values[b].size(), 50u) << b;
}

TEST(IdsTest, IsZero) {
  EXPECT_TRUE(spans::IsZero(TraceId{}));
  EXPECT_TRUE(spans::IsZero(SpanId{}));
  TraceId trace{};
  trace[15] = 1;
  EXPECT_FALSE(spans::IsZero(trace));
  SpanId span{};
  span[0] = 0x80;
  EXPECT_FALSE(spans::IsZero(span));
}

TEST(IdsTest, ToHexIsLowercaseWithFixedLength) {
  TraceId trace;
  for (size_t i = 0; i < 16; ++i) trace[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(spans::ToHex(trace), "000102030405060708090a0b0c0d0e0f");
  SpanId span = {0xde, 0xad, 0xbe, 0xef, 0x00, 0x11, 0xab, 0xcd};
  EXPECT_EQ(spans::ToHex(span), "deadbeef0011abcd");
  EXPECT_EQ(spans::ToHex(SpanId{}), "0000000000000000");
  for (int i = 0; i < 100; ++i) {
    std::string t = spans::ToHex(spans::NewTraceId());
    std::string s = spans::ToHex(spans::NewSpanId());
    EXPECT_EQ(t.size(), 32u);
    EXPECT_EQ(s.size(), 16u);
    EXPECT_TRUE(IsLowerHex(t)) << t;
    EXPECT_TRUE(IsLowerHex(s)) << s;
  }
}

TEST(IdsTest, ParseValidTraceparent) {
  auto context = spans::ParseTraceparent("00-" + kTrace + "-" + kParent + "-01");
  ASSERT_TRUE(context.has_value());
  EXPECT_EQ(spans::ToHex(context->trace_id), kTrace);
  EXPECT_EQ(spans::ToHex(context->parent_id), kParent);
  EXPECT_EQ(context->flags, 0x01);

  auto unsampled = spans::ParseTraceparent("00-" + kTrace + "-" + kParent + "-00");
  ASSERT_TRUE(unsampled.has_value());
  EXPECT_EQ(unsampled->flags, 0x00);
  auto all_flags = spans::ParseTraceparent("00-" + kTrace + "-" + kParent + "-ff");
  ASSERT_TRUE(all_flags.has_value());
  EXPECT_EQ(all_flags->flags, 0xff);

  // Optional whitespace around the value belongs to the header syntax.
  auto padded = spans::ParseTraceparent(" \t00-" + kTrace + "-" + kParent + "-01 \t");
  ASSERT_TRUE(padded.has_value());
  EXPECT_EQ(spans::ToHex(padded->trace_id), kTrace);
}

TEST(IdsTest, FormatParseRoundTrip) {
  const std::string value = "00-" + kTrace + "-" + kParent + "-01";
  auto context = spans::ParseTraceparent(value);
  ASSERT_TRUE(context.has_value());
  EXPECT_EQ(spans::FormatTraceparent(*context), value);

  spans::TraceContext fresh;
  fresh.trace_id = spans::NewTraceId();
  fresh.parent_id = spans::NewSpanId();
  fresh.flags = 0xab;
  std::string formatted = spans::FormatTraceparent(fresh);
  EXPECT_EQ(formatted.size(), 55u);
  EXPECT_EQ(formatted.substr(52), "-ab");
  auto parsed = spans::ParseTraceparent(formatted);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->trace_id, fresh.trace_id);
  EXPECT_EQ(parsed->parent_id, fresh.parent_id);
  EXPECT_EQ(parsed->flags, 0xab);
}

TEST(IdsTest, FutureVersionsMayCarryMoreFields) {
  auto extended = spans::ParseTraceparent("01-" + kTrace + "-" + kParent + "-01-suffix");
  ASSERT_TRUE(extended.has_value());
  EXPECT_EQ(spans::ToHex(extended->trace_id), kTrace);
  EXPECT_EQ(spans::ToHex(extended->parent_id), kParent);
  EXPECT_EQ(extended->flags, 0x01);
  EXPECT_TRUE(spans::ParseTraceparent("01-" + kTrace + "-" + kParent + "-01").has_value());
  EXPECT_TRUE(spans::ParseTraceparent("fe-" + kTrace + "-" + kParent + "-01-a-b-c").has_value());
  // Formatting writes the version this agent speaks.
  EXPECT_EQ(spans::FormatTraceparent(*extended), "00-" + kTrace + "-" + kParent + "-01");
  // A later version still needs '-' after the flags.
  EXPECT_FALSE(spans::ParseTraceparent("01-" + kTrace + "-" + kParent + "-01suffix").has_value());
  EXPECT_FALSE(spans::ParseTraceparent("01-" + kTrace + "-" + kParent + "-01.").has_value());
}

TEST(IdsTest, InvalidTraceparents) {
  const std::vector<std::string> invalid = {
      "",
      "00",
      "00-" + kTrace + "-" + kParent + "-01-suffix",  // version 00 is exactly 55 characters
      "00-" + kTrace + "-" + kParent + "-01-",
      "00-" + kTrace + "-" + kParent + "-01x",
      "00-" + kTrace + "-" + kParent + "-1",
      "ff-" + kTrace + "-" + kParent + "-01",         // version ff is invalid
      "ff-" + kTrace + "-" + kParent + "-01-suffix",
      "FE-" + kTrace + "-" + kParent + "-01",         // uppercase version
      "0g-" + kTrace + "-" + kParent + "-01",
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-" + kParent + "-01",
      "00-" + kTrace + "-00F067AA0BA902B7-01",
      "00-" + kTrace + "-" + kParent + "-0A",
      "00-" + kTrace + "-" + kParent + "-0g",
      "00-00000000000000000000000000000000-" + kParent + "-01",
      "00-" + kTrace + "-0000000000000000-01",
      "00_" + kTrace + "-" + kParent + "-01",
      "00-" + kTrace + "_" + kParent + "-01",
      "00-" + kTrace + "-" + kParent + "_01",
      "00-" + kTrace.substr(1) + "-0" + kParent + "-01",  // dash one place early
      "00-" + kTrace + "-" + kParent.substr(0, 15) + "-001",
      "00-" + kTrace + "-" + kParent + "-01\r",
  };
  for (const std::string& value : invalid) {
    EXPECT_FALSE(spans::ParseTraceparent(value).has_value()) << '"' << value << '"';
  }
}

TEST(IdsTest, TracestateValidAndNormalised) {
  using Fields = std::vector<std::string_view>;
  EXPECT_EQ(spans::ParseTracestate(Fields{}), "");
  EXPECT_EQ(spans::ParseTracestate(Fields{"congo=t61rcWkgMzE"}), "congo=t61rcWkgMzE");
  // Several fields combine in order; whitespace and empty members are dropped.
  EXPECT_EQ(spans::ParseTracestate(Fields{" rojo=00f067aa0ba902b7 ,, \t", "congo=t61rcWkgMzE"}),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
  // Multi-tenant keys and values with inner spaces and punctuation.
  EXPECT_EQ(spans::ParseTracestate(Fields{"fw529a3039@dt=a b!c", "1tenant@sys=x"}),
            "fw529a3039@dt=a b!c,1tenant@sys=x");
  std::string thirty_two;
  for (int i = 0; i < 32; ++i) thirty_two += (i ? "," : "") + std::string("k") + std::to_string(i) + "=v";
  EXPECT_EQ(spans::ParseTracestate(Fields{thirty_two}), thirty_two);
  EXPECT_FALSE(spans::ParseTracestate(Fields{thirty_two + ",k32=v"}).has_value());  // 33 members
}

TEST(IdsTest, InvalidTracestates) {
  const std::vector<std::string> invalid = {
      "novalue",
      "Upper=1",            // keys are lowercase
      "1digitfirst=1",      // simple keys start with a letter
      "k=",                 // empty value
      "k=a=b",              // '=' inside the value
      "k=1,k=2",            // duplicate key
      "tenant@=1",          // empty system id
      "@sys=1",             // empty tenant id
      "t@toolongsystemid=1",
      std::string("k=") + std::string(257, 'v'),
      std::string(257, 'k') + "=v",
      "k=caf\xc3\xa9",    // not ASCII
  };
  for (const std::string& value : invalid) {
    EXPECT_FALSE(spans::ParseTracestate({value}).has_value()) << '"' << value << '"';
  }
}

TEST(IdsTest, ExtractTraceContextFromHeaders) {
  using Headers = std::vector<std::pair<std::string, std::string>>;
  const std::string traceparent = "00-" + kTrace + "-" + kParent + "-01";
  auto context = spans::ExtractTraceContext(
      Headers{{"Host", "x"}, {"TraceState", "a=1"}, {"TRACEPARENT", traceparent}, {"tracestate", "b=2"}});
  ASSERT_TRUE(context.has_value());
  EXPECT_EQ(spans::ToHex(context->trace_id), kTrace);
  EXPECT_EQ(context->trace_state, "a=1,b=2");
  // An invalid tracestate is dropped; the traceparent still counts.
  auto bad_state = spans::ExtractTraceContext(Headers{{"traceparent", traceparent}, {"tracestate", "A=1"}});
  ASSERT_TRUE(bad_state.has_value());
  EXPECT_EQ(bad_state->trace_state, "");
  // Two traceparent fields are not one valid value, even when both are.
  EXPECT_FALSE(spans::ExtractTraceContext(Headers{{"traceparent", traceparent}, {"traceparent", traceparent}}));
  // A tracestate alone is no context.
  EXPECT_FALSE(spans::ExtractTraceContext(Headers{{"tracestate", "a=1"}}));
  EXPECT_FALSE(spans::ExtractTraceContext(Headers{{"traceparent", "00-" + kTrace + "-" + kParent + "-0"},
                                                  {"tracestate", "a=1"}}));
}

TEST(IdsTest, KindAndStatusNames) {
  EXPECT_EQ(spans::SpanKindName(SpanKind::kServer), "SERVER");
  EXPECT_EQ(spans::SpanKindName(SpanKind::kClient), "CLIENT");
  EXPECT_EQ(spans::SpanKindName(SpanKind::kProducer), "PRODUCER");
  EXPECT_EQ(spans::SpanKindName(SpanKind::kConsumer), "CONSUMER");
  EXPECT_EQ(spans::StatusCodeName(StatusCode::kUnset), "UNSET");
  EXPECT_EQ(spans::StatusCodeName(StatusCode::kOk), "OK");
  EXPECT_EQ(spans::StatusCodeName(StatusCode::kError), "ERROR");
}

// ---- Span output.

void SetV4(uint8_t out[16], uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  std::memset(out, 0, 16);
  out[10] = out[11] = 0xff;
  out[12] = a;
  out[13] = b;
  out[14] = c;
  out[15] = d;
}

Span SampleSpan() {
  Span span;
  for (size_t i = 0; i < 16; ++i) span.trace_id[i] = static_cast<uint8_t>(0xa0 + i);
  span.span_id = {1, 2, 3, 4, 5, 6, 7, 8};
  span.kind = SpanKind::kServer;
  span.name = "GET /users/{id}";
  span.service = "billing";
  span.pid = 42;
  span.start_unix_ns = 1795463588883776818ull;  // not representable as a double
  span.end_unix_ns = 1795463588885276818ull;    // + 1.5 ms
  span.status = StatusCode::kUnset;
  span.attributes.push_back({"http.request.method", std::string("GET")});
  span.attributes.push_back({"http.response.status_code", int64_t{200}});
  span.attributes.push_back({"flowtracer.role_inferred", true});
  span.attributes.push_back({"x.ratio", 0.25});
  SetV4(span.tuple.local_addr, 127, 0, 0, 1);
  SetV4(span.tuple.remote_addr, 127, 0, 0, 1);
  span.tuple.local_port = 8080;
  span.tuple.remote_port = 33360;
  return span;
}

TEST(CaptureOutputTest, SpanToJsonSchema) {
  Span span = SampleSpan();
  nlohmann::json json = exporters::SpanToJson(span);
  nlohmann::json expected = nlohmann::json::parse(R"({
    "trace_id": "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
    "span_id": "0102030405060708",
    "parent_span_id": "",
    "trace_state": "",
    "kind": "SERVER",
    "name": "GET /users/{id}",
    "service": "billing",
    "start_time_unix_nano": 1795463588883776818,
    "end_time_unix_nano": 1795463588885276818,
    "status": "UNSET",
    "attributes": {
      "http.request.method": "GET",
      "http.response.status_code": 200,
      "flowtracer.role_inferred": true,
      "x.ratio": 0.25
    }
  })");
  EXPECT_EQ(json, expected) << json.dump();
  EXPECT_TRUE(json["start_time_unix_nano"].is_number_unsigned());
  EXPECT_EQ(json["start_time_unix_nano"].get<uint64_t>(), 1795463588883776818ull);
  EXPECT_TRUE(json["attributes"]["http.response.status_code"].is_number_integer());
  EXPECT_TRUE(json["attributes"]["flowtracer.role_inferred"].is_boolean());
  EXPECT_TRUE(json["attributes"]["x.ratio"].is_number_float());
  EXPECT_TRUE(json["attributes"]["http.request.method"].is_string());
  EXPECT_NE(json.dump().find("\"start_time_unix_nano\":1795463588883776818"), std::string::npos);
}

TEST(CaptureOutputTest, SpanToJsonChildClientError) {
  Span span = SampleSpan();
  span.parent_span_id = {0xff, 0, 0, 0, 0, 0, 0, 0x10};
  span.kind = SpanKind::kClient;
  span.status = StatusCode::kError;
  span.attributes.clear();
  nlohmann::json json = exporters::SpanToJson(span);
  EXPECT_EQ(json["parent_span_id"], "ff00000000000010");
  EXPECT_EQ(json["kind"], "CLIENT");
  EXPECT_EQ(json["status"], "ERROR");
  EXPECT_TRUE(json["attributes"].is_object());
  EXPECT_TRUE(json["attributes"].empty());
  EXPECT_EQ(json.size(), 11u);
  span.status = StatusCode::kOk;
  EXPECT_EQ(exporters::SpanToJson(span)["status"], "OK");
}

TEST(CaptureOutputTest, SpanToTextLayout) {
  Span span = SampleSpan();
  span.start_unix_ns = 1795463588486000000ull;  // .486
  span.end_unix_ns = span.start_unix_ns + 1'930'000;
  std::string line = exporters::SpanToText(span);
  ASSERT_GE(line.size(), 13u);
  // HH:MM:SS.mmm in local time.
  EXPECT_EQ(line[2], ':');
  EXPECT_EQ(line[5], ':');
  EXPECT_EQ(line.substr(8, 4), ".486");
  EXPECT_EQ(line.substr(12), " billing    server GET /users/{id}      200   1.93ms 127.0.0.1:33360");
  EXPECT_LE(line.size(), 80u);

  // Columns line up with the header.
  std::string header = exporters::SpanTextHeader();
  EXPECT_LE(header.size(), 80u);
  EXPECT_EQ(header.find("PEER"), line.find("127.0.0.1:33360"));
  EXPECT_EQ(header.find("DURATION") + 8, line.find("1.93ms") + 6);
  EXPECT_EQ(header.find(" ST ") + 3, line.find("200") + 3);
  EXPECT_EQ(header.find("REQUEST"), line.find("GET /users"));
  EXPECT_EQ(header.find("SERVICE"), line.find("billing"));
}

TEST(CaptureOutputTest, SpanToTextFitsEightyColumns) {
  Span span = SampleSpan();
  span.service = "a-really-long-service-name-from-otel";
  span.name = "DELETE /api/v2/organisations/{id}/members/{id}/permissions";
  SetV4(span.tuple.remote_addr, 192, 168, 100, 200);
  span.tuple.remote_port = 65535;
  span.end_unix_ns = span.start_unix_ns + 9'999'000'000ull;  // "9999ms", the widest in ms
  std::string line = exporters::SpanToText(span);
  EXPECT_LE(line.size(), 80u) << line;
  EXPECT_NE(line.find(" a-really-~ "), std::string::npos) << line;
  EXPECT_NE(line.find(" DELETE /api/v2/orga"), std::string::npos) << line;
  EXPECT_NE(line.find("9999ms"), std::string::npos) << line;
  EXPECT_NE(line.find(" 192.168.100.20~"), std::string::npos) << line;

  // IPv6 peer, error without a status code.
  span.attributes.clear();
  span.status = StatusCode::kError;
  const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78};
  std::memcpy(span.tuple.remote_addr, v6, 16);
  span.end_unix_ns = span.start_unix_ns + 12'345'000'000ull;
  line = exporters::SpanToText(span);
  EXPECT_LE(line.size(), 80u) << line;
  EXPECT_NE(line.find(" ERR "), std::string::npos) << line;
  EXPECT_NE(line.find(" 12.3s "), std::string::npos) << line;

  span.status = StatusCode::kUnset;
  line = exporters::SpanToText(span);
  EXPECT_NE(line.find("   - "), std::string::npos) << line;
}

TEST(CaptureOutputTest, SummaryTableRows) {
  std::vector<CallSummaryRow> rows = {{"gateway", "billing", 12, 1, 2.0, 31.5}};
  std::string table = exporters::SummaryTable(rows);
  EXPECT_EQ(table,
            "CALLER               CALLEE                   CALLS ERRORS       P50       P99\n"
            "gateway              billing                     12      1    2.00ms   31.50ms\n");
}

// ---- Call summary.

struct Side {
  std::array<uint8_t, 4> ip;
  uint16_t port;
};

Span CallSpan(std::string service, SpanKind kind, Side local, Side remote, uint64_t duration_ns,
              StatusCode status = StatusCode::kUnset) {
  Span span;
  span.service = std::move(service);
  span.kind = kind;
  SetV4(span.tuple.local_addr, local.ip[0], local.ip[1], local.ip[2], local.ip[3]);
  SetV4(span.tuple.remote_addr, remote.ip[0], remote.ip[1], remote.ip[2], remote.ip[3]);
  span.tuple.local_port = local.port;
  span.tuple.remote_port = remote.port;
  span.start_unix_ns = 1'000'000'000'000;
  span.end_unix_ns = span.start_unix_ns + duration_ns;
  span.status = status;
  return span;
}

constexpr std::array<uint8_t, 4> kLocalhost = {127, 0, 0, 1};

void ExpectRow(const CallSummaryRow& row, const std::string& caller, const std::string& callee,
               uint64_t count, uint64_t errors, double p50_ms, double p99_ms) {
  EXPECT_EQ(row.caller, caller);
  EXPECT_EQ(row.callee, callee);
  EXPECT_EQ(row.count, count);
  EXPECT_EQ(row.errors, errors);
  EXPECT_DOUBLE_EQ(row.p50_ms, p50_ms);
  EXPECT_DOUBLE_EQ(row.p99_ms, p99_ms);
}

TEST(CallSummaryTest, LocalCallCountedOnceFromServerSide) {
  // The server span's parent is the client span (same-host linking), whichever comes first.
  Span client = CallSpan("gateway", SpanKind::kClient, {kLocalhost, 40000}, {kLocalhost, 8080}, 3'000'000);
  client.span_id = {0, 0, 0, 0, 0, 0, 0, 7};
  Span server = CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {kLocalhost, 40000}, 2'000'000);
  server.parent_span_id = client.span_id;
  for (bool client_first : {true, false}) {
    SCOPED_TRACE(client_first);
    CallSummary summary;
    if (client_first) summary.Add(client);
    summary.Add(server);
    if (!client_first) summary.Add(client);
    std::vector<CallSummaryRow> rows = summary.Rows();
    ASSERT_EQ(rows.size(), 1u);
    ExpectRow(rows[0], "gateway", "billing", 1, 0, 2.0, 2.0);
    EXPECT_EQ(summary.waiting_server_spans(), 0u);
  }
}

TEST(CallSummaryTest, UnlinkedServerSpanNamedByTheTracedClientOnItsConnection) {
  // No parent (the request was not linked), but the client's socket was seen in a client
  // span: the caller is that service, not its address.
  CallSummary summary;
  summary.Add(CallSpan("gateway", SpanKind::kClient, {kLocalhost, 40000}, {kLocalhost, 8080}, 3'000'000));
  summary.Add(CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {kLocalhost, 40000}, 2'000'000));
  summary.Add(CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {kLocalhost, 40001}, 2'000'000));
  std::vector<CallSummaryRow> rows = summary.Rows();
  ASSERT_EQ(rows.size(), 2u);
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.caller < b.caller; });
  ExpectRow(rows[0], "127.0.0.1", "billing", 1, 0, 2.0, 2.0);  // port 40001: no client span seen
  ExpectRow(rows[1], "gateway", "billing", 1, 0, 2.0, 2.0);
}

TEST(CallSummaryTest, UntracedHostOverManyConnectionsIsOneEdge) {
  // One untraced host calls over more connections than the table has edges: still one
  // row named by its address (not "(other)"), and one edge in memory, not one per port.
  CallSummary summary;
  const int connections = static_cast<int>(CallSummary::kMaxEdges) + 5000;
  for (int i = 0; i < connections; ++i)
    summary.Add(CallSpan("nginx", SpanKind::kServer, {kLocalhost, 8080}, {{10, 1, 2, 3}, uint16_t(20000 + i)},
                         1'000'000));
  EXPECT_EQ(summary.edges(), 1u);
  std::vector<CallSummaryRow> rows = summary.Rows();
  ASSERT_EQ(rows.size(), 1u);
  ExpectRow(rows[0], "10.1.2.3", "nginx", connections, 0, 1.0, 1.0);
}

TEST(CallSummaryTest, ServerSpansWaitForTheirParentAtMostMaxWaitTicks) {
  CallSummary summary;
  Span client = CallSpan("gateway", SpanKind::kClient, {kLocalhost, 40000}, {kLocalhost, 8080}, 3'000'000);
  client.span_id = {0, 0, 0, 0, 0, 0, 0, 5};
  Span server = CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {kLocalhost, 40000}, 2'000'000);
  server.parent_span_id = client.span_id;
  Span remote_child = CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {{10, 1, 2, 3}, 5555}, 4'000'000);
  remote_child.parent_span_id = {9, 9, 9, 9, 9, 9, 9, 9};  // a client span on another host
  summary.Add(server);
  summary.Add(remote_child);
  EXPECT_EQ(summary.waiting_server_spans(), 2u);
  for (uint32_t tick = 1; tick < CallSummary::kMaxWaitTicks; ++tick) summary.Tick();
  summary.Add(client);  // within the wait: names its child
  EXPECT_EQ(summary.waiting_server_spans(), 1u);
  summary.Tick();
  EXPECT_EQ(summary.waiting_server_spans(), 0u);  // counted by address, its memory freed
  std::vector<CallSummaryRow> rows = summary.Rows();
  ASSERT_EQ(rows.size(), 2u);
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.caller < b.caller; });
  ExpectRow(rows[0], "10.1.2.3", "billing", 1, 0, 4.0, 4.0);
  ExpectRow(rows[1], "gateway", "billing", 1, 0, 2.0, 2.0);
}

TEST(CallSummaryTest, ParentFoundAfterManyOtherClientSpans) {
  // Client spans are remembered in fixed slots: a parent among the latest thousands is found.
  CallSummary summary;
  for (uint64_t i = 1; i <= 200000; ++i) {
    Span client = CallSpan("gateway", SpanKind::kClient, {kLocalhost, 40000}, {{10, 0, 0, 9}, 443}, 1'000'000);
    for (int b = 0; b < 8; ++b) client.span_id[b] = uint8_t(i >> (8 * (7 - b)));
    summary.Add(client);
  }
  Span recent = CallSpan("gateway", SpanKind::kClient, {kLocalhost, 41000}, {kLocalhost, 8080}, 3'000'000);
  recent.span_id = {0xab, 0xcd, 0, 0, 0, 0, 0, 1};
  summary.Add(recent);
  for (uint64_t i = 0; i < 1000; ++i) {
    Span other = CallSpan("ledger", SpanKind::kClient, {kLocalhost, 42000}, {{10, 0, 0, 9}, 443}, 1'000'000);
    other.span_id = {0x77, 0, 0, 0, 0, 0, uint8_t(i >> 8), uint8_t(i)};
    summary.Add(other);
  }
  Span server = CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {kLocalhost, 41000}, 2'000'000);
  server.parent_span_id = recent.span_id;
  summary.Add(server);
  EXPECT_EQ(summary.waiting_server_spans(), 0u);
  std::vector<CallSummaryRow> rows = summary.Rows();
  auto billing = std::find_if(rows.begin(), rows.end(), [](const auto& r) { return r.callee == "billing"; });
  ASSERT_NE(billing, rows.end());
  ExpectRow(*billing, "gateway", "billing", 1, 0, 2.0, 2.0);
}

TEST(CallSummaryTest, ReusedEphemeralPortNamesEachCallerByItsParentSpan) {
  // gateway and then ledger call billing from the same local port (reused after close):
  // each server span is credited to the client span that is its parent.
  Span gateway = CallSpan("gateway", SpanKind::kClient, {kLocalhost, 40000}, {kLocalhost, 8080}, 3'000'000);
  gateway.span_id = {0, 0, 0, 0, 0, 0, 0, 1};
  Span billing_for_gateway = CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {kLocalhost, 40000}, 2'000'000);
  billing_for_gateway.parent_span_id = gateway.span_id;
  Span ledger = CallSpan("ledger", SpanKind::kClient, {kLocalhost, 40000}, {kLocalhost, 8080}, 5'000'000);
  ledger.span_id = {0, 0, 0, 0, 0, 0, 0, 2};
  Span billing_for_ledger = CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {kLocalhost, 40000}, 4'000'000);
  billing_for_ledger.parent_span_id = ledger.span_id;
  for (bool server_first : {false, true}) {
    SCOPED_TRACE(server_first);
    CallSummary summary;
    if (server_first) {
      summary.Add(billing_for_gateway);
      summary.Add(gateway);
      summary.Add(billing_for_ledger);
      summary.Add(ledger);
    } else {
      summary.Add(gateway);
      summary.Add(billing_for_gateway);
      summary.Add(ledger);
      summary.Add(billing_for_ledger);
    }
    std::vector<CallSummaryRow> rows = summary.Rows();
    ASSERT_EQ(rows.size(), 2u);
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.caller < b.caller; });
    ExpectRow(rows[0], "gateway", "billing", 1, 0, 2.0, 2.0);
    ExpectRow(rows[1], "ledger", "billing", 1, 0, 4.0, 4.0);
  }
}

TEST(CallSummaryTest, ServerSpanWithRemoteParentIsNamedByAddressAtTheEnd) {
  CallSummary summary;
  Span server = CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {{10, 1, 2, 3}, 55555}, 4'000'000);
  server.parent_span_id = {9, 9, 9, 9, 9, 9, 9, 9};  // a client span on another host
  summary.Add(server);
  std::vector<CallSummaryRow> rows = summary.Rows();
  ASSERT_EQ(rows.size(), 1u);
  ExpectRow(rows[0], "10.1.2.3", "billing", 1, 0, 4.0, 4.0);
}

TEST(CallSummaryTest, RemoteCalleeCountedFromClientSpans) {
  CallSummary summary;
  const Side remote = {{93, 184, 216, 34}, 443};
  summary.Add(CallSpan("gateway", SpanKind::kClient, {kLocalhost, 40001}, remote, 3'000'000));
  summary.Add(CallSpan("gateway", SpanKind::kClient, {kLocalhost, 40002}, remote, 1'000'000,
                       StatusCode::kError));
  summary.Add(CallSpan("gateway", SpanKind::kClient, {kLocalhost, 40001}, remote, 2'000'000));
  std::vector<CallSummaryRow> rows = summary.Rows();
  ASSERT_EQ(rows.size(), 1u);
  ExpectRow(rows[0], "gateway", "93.184.216.34:443", 3, 1, 2.0, 3.0);
}

TEST(CallSummaryTest, SamplesStayWithinTheBudgetWhenThousandsOfHostsCall) {
  // A server called from 5 000 hosts, 100 calls each: one edge per host. The samples kept
  // stay near the budget, not one per call.
  CallSummary summary;
  for (int round = 0; round < 100; ++round)
    for (int host = 0; host < 5000; ++host)
      summary.Add(CallSpan("nginx", SpanKind::kServer, {kLocalhost, 8080},
                           {{10, 1, uint8_t(host >> 8), uint8_t(host)}, uint16_t(20000 + round)},
                           1'000'000 + round * 10'000));
  EXPECT_EQ(summary.edges(), 5000u);
  // All 5 000 edges exist after the first round, so each keeps the minimum.
  EXPECT_EQ(summary.samples(), 5000 * CallSummary::kMinSamplesPerEdge);
  std::vector<CallSummaryRow> rows = summary.Rows();
  ASSERT_EQ(rows.size(), 5000u);
  uint64_t calls = 0;
  for (const CallSummaryRow& row : rows) calls += row.count;
  EXPECT_EQ(calls, 500'000u);
  // Each host's durations were 1.00 to 1.99 ms over the rounds: its sampled median is near 1.5.
  EXPECT_NEAR(rows[0].p50_ms, 1.5, 0.15);
}

TEST(CallSummaryTest, ServiceNamesPastTheBoundCountAsOther) {
  // Every span names a service, kept once per name: a host with more names than the
  // bound still gets every call counted, the extra names as "(other)".
  CallSummary summary;
  const size_t services = CallSummary::kMaxServices + 100;
  for (size_t i = 0; i < services; ++i)
    summary.Add(CallSpan("svc" + std::to_string(i), SpanKind::kClient, {kLocalhost, 40000}, {{10, 0, 0, 9}, 443},
                         1'000'000));
  std::vector<CallSummaryRow> rows = summary.Rows();
  uint64_t calls = 0, other_calls = 0;
  for (const CallSummaryRow& row : rows) {
    calls += row.count;
    if (row.caller == "(other)") other_calls += row.count;
  }
  EXPECT_EQ(calls, services);
  // "(other)" itself takes the first id, so the bound counts it.
  EXPECT_EQ(other_calls, services - (CallSummary::kMaxServices - 1));
  EXPECT_EQ(rows.size(), CallSummary::kMaxServices);
}

TEST(CallSummaryTest, RemoteCallerNamedByAddress) {
  CallSummary summary;
  summary.Add(CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {{10, 1, 2, 3}, 55555}, 4'000'000));
  summary.Add(CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {{10, 1, 2, 3}, 55556}, 6'000'000));
  summary.Add(CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {{10, 1, 2, 3}, 55557}, 5'000'000));
  std::vector<CallSummaryRow> rows = summary.Rows();
  ASSERT_EQ(rows.size(), 1u);  // ephemeral ports of one caller are one row
  ExpectRow(rows[0], "10.1.2.3", "billing", 3, 0, 5.0, 6.0);
}

TEST(CallSummaryTest, ErrorsAndPercentiles) {
  CallSummary summary;
  std::vector<uint64_t> durations_ms(101);
  std::iota(durations_ms.begin(), durations_ms.end(), 1);  // 1..101 ms
  std::shuffle(durations_ms.begin(), durations_ms.end(), std::mt19937(7));
  int errors = 0;
  for (size_t i = 0; i < durations_ms.size(); ++i) {
    bool error = i % 15 == 0;  // 7 errors
    errors += error;
    summary.Add(CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080},
                         {{10, 0, 0, 9}, static_cast<uint16_t>(30000 + i)}, durations_ms[i] * 1'000'000,
                         error ? StatusCode::kError : StatusCode::kUnset));
  }
  ASSERT_EQ(errors, 7);
  // A smaller edge, listed after the busier one.
  summary.Add(CallSpan("billing", SpanKind::kClient, {kLocalhost, 41000}, {{10, 0, 0, 50}, 5432}, 500'000));
  std::vector<CallSummaryRow> rows = summary.Rows();
  ASSERT_EQ(rows.size(), 2u);
  // 101 samples: the median is the 51st, p99 the 100th (nearest rank).
  ExpectRow(rows[0], "10.0.0.9", "billing", 101, 7, 51.0, 100.0);
  ExpectRow(rows[1], "billing", "10.0.0.50:5432", 1, 0, 0.5, 0.5);
}

TEST(CallSummaryTest, EvenSampleCountTakesLowerMedian) {
  // Nearest rank: of two samples the median is the first, not the larger one.
  CallSummary summary;
  summary.Add(CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {{10, 0, 0, 9}, 30000}, 9'000'000));
  summary.Add(CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {{10, 0, 0, 9}, 30001}, 1'000'000));
  std::vector<CallSummaryRow> rows = summary.Rows();
  ASSERT_EQ(rows.size(), 1u);
  ExpectRow(rows[0], "10.0.0.9", "billing", 2, 0, 1.0, 9.0);
}

TEST(CallSummaryTest, ChainOfLocalServices) {
  // client -> gateway -> billing, all traced on this host; curl is not traced.
  CallSummary summary;
  summary.Add(CallSpan("gateway", SpanKind::kServer, {kLocalhost, 8000}, {kLocalhost, 50000}, 9'000'000));
  summary.Add(CallSpan("gateway", SpanKind::kClient, {kLocalhost, 40000}, {kLocalhost, 8080}, 5'000'000));
  summary.Add(CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {kLocalhost, 40000}, 4'000'000,
                       StatusCode::kError));
  std::vector<CallSummaryRow> rows = summary.Rows();
  ASSERT_EQ(rows.size(), 2u);
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.caller < b.caller; });
  ExpectRow(rows[0], "127.0.0.1", "gateway", 1, 0, 9.0, 9.0);
  ExpectRow(rows[1], "gateway", "billing", 1, 1, 4.0, 4.0);
}

TEST(CallSummaryTest, Ipv6RemoteCaller) {
  CallSummary summary;
  Span span = CallSpan("billing", SpanKind::kServer, {kLocalhost, 8080}, {kLocalhost, 1}, 1'000'000);
  const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  std::memcpy(span.tuple.remote_addr, v6, 16);
  summary.Add(span);
  std::vector<CallSummaryRow> rows = summary.Rows();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].caller, "[2001:db8::1]");
}

TEST(CaptureOutputTest, TextCutsWholeCharactersAndHidesControlBytes) {
  Span span = SampleSpan();
  span.service = "caf\xc3\xa9-\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9";  // 11 characters, 17 bytes
  span.name = "GET /a\x1b[2Jb\xff";
  std::string line = exporters::SpanToText(span);
  // The cut lands after the ninth character, never inside a two-byte sequence.
  EXPECT_NE(line.find(" caf\xc3\xa9-\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9~ "), std::string::npos) << line;
  EXPECT_EQ(line.find('\x1b'), std::string::npos) << line;
  EXPECT_NE(line.find("GET /a?[2Jb?"), std::string::npos) << line;
}

}  // namespace
}  // namespace flowtracer
