#include "agent/conntrack/connection_tracker.h"

#include <gtest/gtest.h>

#include <malloc.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/conntrack/raw_event.h"
#include "tests/unit/kernel_records.h"

namespace flowtracer::conntrack {
namespace {

using records::ConnRecord;
using records::DataRecord;

// ---- Fakes.

struct FakeSink : TrackerSink {
  struct Closed {
    ConnectionInfo info;
    uint64_t bytes_sent;
    uint64_t bytes_received;
  };
  std::vector<std::pair<ConnectionInfo, HttpMessageRecord>> started;
  std::vector<std::pair<ConnectionInfo, HttpExchange>> exchanges;
  std::vector<Closed> closed;
  std::vector<ConnectionInfo> forgotten;
  std::vector<std::string> order;  // "started", "exchange", "closed"

  void OnHttpRequestStarted(const ConnectionInfo& c, const HttpMessageRecord& r) override {
    started.emplace_back(c, r);
    order.push_back("started");
  }
  void OnHttpExchange(const ConnectionInfo& c, const HttpExchange& e) override {
    exchanges.emplace_back(c, e);
    order.push_back("exchange");
  }
  void OnConnectionClosed(const ConnectionInfo& c, uint64_t sent, uint64_t received) override {
    closed.push_back({c, sent, received});
    order.push_back("closed");
  }
  void OnConnectionForgotten(const ConnectionInfo& c) override {
    forgotten.push_back(c);
    order.push_back("forgotten");
  }
};

// Sockets are gone for the pids listed; records which pids were asked about.
struct FakeLiveness : SocketLiveness {
  std::vector<uint32_t> gone_pids;
  std::vector<uint32_t> asked;
  int sweeps = 0;
  void BeginSweep() override { ++sweeps; }
  bool MayBeOpen(uint32_t pid, const ft_tuple&) override {
    asked.push_back(pid);
    return std::find(gone_pids.begin(), gone_pids.end(), pid) == gone_pids.end();
  }
};

struct FakeControl : KernelControl {
  std::vector<std::pair<uint64_t, ft_conn_control>> sets;
  std::vector<uint64_t> forgets;
  void SetConnControl(uint64_t conn_id, const ft_conn_control& control) override {
    sets.emplace_back(conn_id, control);
  }
  void ForgetConnControl(uint64_t conn_id) override { forgets.push_back(conn_id); }
};

// Drives a tracker the way the ring buffer would, keeping stream positions per connection.
class Harness {
 public:
  explicit Harness(TrackerOptions options = {}, SocketLiveness* liveness = nullptr)
      : tracker(options, &sink, &control, liveness) {}

  // Copies into an allocation of exactly `record.size()` bytes, at an odd address, so
  // that sanitizers see any read past the record and any misaligned access.
  void Feed(const std::string& record) {
    std::unique_ptr<char[]> buffer(new char[record.size() + 1]);
    std::memcpy(buffer.get() + 1, record.data(), record.size());
    tracker.OnRecord(buffer.get() + 1, record.size());
  }
  void FeedExact(const std::string& record) {
    std::unique_ptr<char[]> buffer(new char[record.size()]);
    if (!record.empty()) std::memcpy(buffer.get(), record.data(), record.size());
    tracker.OnRecord(buffer.get(), record.size());
  }

  void Open(uint64_t conn_id, ft_role role, uint64_t ts = 1, uint32_t pid = 4242) {
    Feed(ConnRecord(FT_EVENT_CONN_OPEN, conn_id, ts, role, pid, "svc"));
  }
  void Close(uint64_t conn_id, uint64_t ts, uint64_t sent = 0, uint64_t received = 0) {
    Feed(ConnRecord(FT_EVENT_CONN_CLOSE, conn_id, ts, FT_ROLE_UNKNOWN, 4242, "svc", sent, received));
  }
  // One call that moved `payload` (all captured).
  void Send(uint64_t conn_id, ft_direction dir, std::string_view payload, uint64_t ts,
            uint32_t tid = 11) {
    uint64_t& position = positions_[{conn_id, dir}];
    Feed(DataRecord(conn_id, dir, position, payload, ts, tid, static_cast<uint32_t>(payload.size())));
    position += payload.size();
  }
  // One call that moved `length` bytes of which only `captured` (a prefix) was copied.
  void SendPartial(uint64_t conn_id, ft_direction dir, uint32_t length, std::string_view captured,
                   uint64_t ts, uint32_t tid = 11) {
    uint64_t& position = positions_[{conn_id, dir}];
    Feed(DataRecord(conn_id, dir, position, captured, ts, tid, length));
    position += length;
  }
  void SendUncaptured(uint64_t conn_id, ft_direction dir, uint32_t length, uint64_t ts) {
    SendPartial(conn_id, dir, length, "", ts);
  }
  // Server connections: requests are read (ingress), responses written (egress).
  void Request(uint64_t conn_id, std::string_view bytes, uint64_t ts, uint32_t tid = 11) {
    Send(conn_id, FT_DIR_INGRESS, bytes, ts, tid);
  }
  void Response(uint64_t conn_id, std::string_view bytes, uint64_t ts, uint32_t tid = 11) {
    Send(conn_id, FT_DIR_EGRESS, bytes, ts, tid);
  }

  const HttpExchange& exchange(size_t i) const { return sink.exchanges.at(i).second; }

  FakeSink sink;
  FakeControl control;
  ConnectionTracker tracker;

 private:
  std::map<std::pair<uint64_t, int>, uint64_t> positions_;
};

constexpr std::string_view kOk2 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

// ---- Exchanges.

TEST(ConnectionTrackerTest, GetExchangeOnServerConnection) {
  Harness h;
  h.Feed(ConnRecord(FT_EVENT_CONN_OPEN, 7, 1000, FT_ROLE_SERVER, 31337, "billing"));
  EXPECT_EQ(h.tracker.connection_count(), 1u);
  h.Request(7, "GET /users/42?x=1 HTTP/1.1\r\n", 2000, 21);
  EXPECT_TRUE(h.sink.started.empty());
  h.Request(7, "Host: api\r\nUser-Agent: t\r\n\r\n", 2100, 22);
  ASSERT_EQ(h.sink.started.size(), 1u);
  EXPECT_EQ(h.sink.started[0].second.head.target(), "/users/42?x=1");
  EXPECT_EQ(h.sink.started[0].second.start_ns, 2000u);
  EXPECT_TRUE(h.sink.exchanges.empty());

  h.Response(7, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 3000, 23);
  EXPECT_TRUE(h.sink.exchanges.empty());  // the body is still to come
  h.Response(7, "hel", 3400, 23);
  EXPECT_TRUE(h.sink.exchanges.empty());
  h.Response(7, "lo", 3500, 23);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);

  const auto& [info, exchange] = h.sink.exchanges[0];
  EXPECT_EQ(info.conn_id, 7u);
  EXPECT_EQ(info.pid, 31337u);
  EXPECT_EQ(info.comm, "billing");
  EXPECT_EQ(info.role, FT_ROLE_SERVER);
  EXPECT_FALSE(info.role_inferred);
  EXPECT_EQ(info.open_ns, 1000u);
  EXPECT_EQ(info.protocol, Protocol::kHttp1);
  EXPECT_EQ(info.tuple.local_port, 8080);
  EXPECT_EQ(info.tuple.remote_port, 40000);

  EXPECT_EQ(exchange.error_type, "");
  EXPECT_EQ(exchange.request.head.method(), "GET");
  EXPECT_EQ(exchange.request.head.target(), "/users/42?x=1");
  EXPECT_EQ(exchange.request.head.Header("host"), "api");
  EXPECT_EQ(exchange.request.start_ns, 2000u);
  EXPECT_EQ(exchange.request.end_ns, 2100u);
  EXPECT_EQ(exchange.request.body_bytes, 0u);
  EXPECT_TRUE(exchange.request.body_complete);
  EXPECT_EQ(exchange.request.tid, 21u);
  EXPECT_EQ(exchange.request.request_index, 0u);
  ASSERT_TRUE(exchange.response.has_value());
  EXPECT_EQ(exchange.response->head.status_code, 200);
  EXPECT_EQ(exchange.response->head.reason(), "OK");
  EXPECT_EQ(exchange.response->body_bytes, 5u);
  EXPECT_TRUE(exchange.response->body_complete);
  EXPECT_EQ(exchange.response->start_ns, 3000u);
  EXPECT_EQ(exchange.response->end_ns, 3500u);
  EXPECT_EQ(exchange.response->tid, 23u);

  h.Close(7, 4000, 38 + 5, 47);
  ASSERT_EQ(h.sink.closed.size(), 1u);
  EXPECT_EQ(h.sink.closed[0].info.conn_id, 7u);
  EXPECT_EQ(h.sink.closed[0].bytes_sent, 43u);
  EXPECT_EQ(h.sink.closed[0].bytes_received, 47u);
  EXPECT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.tracker.connection_count(), 0u);
  EXPECT_EQ(h.sink.order, (std::vector<std::string>{"started", "exchange", "closed"}));
  EXPECT_TRUE(h.control.sets.empty());
  EXPECT_TRUE(h.control.forgets.empty());
  EXPECT_EQ(h.tracker.stats().malformed_records, 0u);
  EXPECT_EQ(h.tracker.stats().http_resyncs, 0u);
}

TEST(ConnectionTrackerTest, ClientConnectionUsesEgressForRequests) {
  Harness h;
  h.Open(1, FT_ROLE_CLIENT);
  h.Send(1, FT_DIR_EGRESS, "POST /pay HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 10, 5);
  h.Send(1, FT_DIR_INGRESS, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 20, 6);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.sink.exchanges[0].first.role, FT_ROLE_CLIENT);
  EXPECT_FALSE(h.sink.exchanges[0].first.role_inferred);
  EXPECT_EQ(h.exchange(0).request.head.method(), "POST");
  EXPECT_EQ(h.exchange(0).request.body_bytes, 3u);
  EXPECT_EQ(h.exchange(0).request.tid, 5u);
  EXPECT_EQ(h.exchange(0).response->head.status_code, 201);
  EXPECT_EQ(h.exchange(0).response->end_ns, 20u);
}

TEST(ConnectionTrackerTest, RequestHeadSplitIntoOneByteEvents) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  const std::string head = "GET /a/b HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n";
  for (size_t i = 0; i < head.size(); ++i) {
    EXPECT_TRUE(h.sink.started.empty()) << i;
    h.Request(1, head.substr(i, 1), 1000 + i, static_cast<uint32_t>(100 + i));
  }
  ASSERT_EQ(h.sink.started.size(), 1u);
  h.Response(1, kOk2, 5000);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  const HttpExchange& e = h.exchange(0);
  EXPECT_EQ(e.request.head.method(), "GET");
  EXPECT_EQ(e.request.head.target(), "/a/b");
  EXPECT_EQ(e.request.head.Header("host"), "example");
  EXPECT_EQ(e.request.head.head_bytes, head.size());
  EXPECT_EQ(e.request.start_ns, 1000u);
  EXPECT_EQ(e.request.end_ns, 1000u + head.size() - 1);
  EXPECT_EQ(e.request.tid, 100u);
  EXPECT_EQ(e.response->start_ns, 5000u);
  EXPECT_EQ(e.response->end_ns, 5000u);
  EXPECT_EQ(e.response->body_bytes, 2u);
  EXPECT_EQ(h.tracker.stats().http_resyncs, 0u);
}

TEST(ConnectionTrackerTest, KeepAliveHundredRequests) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  for (int i = 0; i < 100; ++i) {
    uint64_t base = 10000 + 100 * i;
    h.Request(1, "GET /item/" + std::to_string(i) + " HTTP/1.1\r\nHost: h\r\n\r\n", base);
    h.Response(1, kOk2, base + 50);
    ASSERT_EQ(h.sink.exchanges.size(), static_cast<size_t>(i + 1));
  }
  for (int i = 0; i < 100; ++i) {
    SCOPED_TRACE(i);
    const HttpExchange& e = h.exchange(i);
    EXPECT_EQ(e.request.request_index, static_cast<uint64_t>(i));
    EXPECT_EQ(e.request.head.target(), "/item/" + std::to_string(i));
    EXPECT_EQ(e.request.start_ns, 10000u + 100 * i);
    EXPECT_EQ(e.response->end_ns, 10000u + 100 * i + 50);
    EXPECT_EQ(e.response->body_bytes, 2u);
    EXPECT_EQ(h.sink.started[i].second.request_index, static_cast<uint64_t>(i));
  }
  EXPECT_EQ(h.tracker.connection_count(), 1u);
  EXPECT_EQ(h.tracker.stats().http_resyncs, 0u);
}

TEST(ConnectionTrackerTest, PipelinedRequestsInOneEvent) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1,
            "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
            "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz"
            "GET /c HTTP/1.1\r\nHost: h\r\n\r\n",
            100, 9);
  ASSERT_EQ(h.sink.started.size(), 3u);
  EXPECT_TRUE(h.sink.exchanges.empty());
  h.Response(1,
             "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
             "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
             "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nbc",
             200);
  ASSERT_EQ(h.sink.exchanges.size(), 3u);
  const char* targets[] = {"/a", "/b", "/c"};
  const int statuses[] = {200, 404, 200};
  const uint64_t request_bodies[] = {0, 3, 0};
  const uint64_t response_bodies[] = {1, 0, 2};
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    const HttpExchange& e = h.exchange(i);
    EXPECT_EQ(e.request.head.target(), targets[i]);
    EXPECT_EQ(e.request.request_index, i);
    EXPECT_EQ(e.request.body_bytes, request_bodies[i]);
    EXPECT_EQ(e.request.start_ns, 100u);
    EXPECT_EQ(e.request.end_ns, 100u);
    EXPECT_EQ(e.response->head.status_code, statuses[i]);
    EXPECT_EQ(e.response->body_bytes, response_bodies[i]);
    EXPECT_EQ(e.response->start_ns, 200u);
    EXPECT_EQ(e.response->end_ns, 200u);
  }
}

TEST(ConnectionTrackerTest, ChunkedResponseSplitAtEveryOffset) {
  const std::string response =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
  for (size_t split = 1; split < response.size(); ++split) {
    SCOPED_TRACE(split);
    Harness h;
    h.Open(1, FT_ROLE_SERVER);
    h.Request(1, "GET /chunks HTTP/1.1\r\n\r\n", 10);
    h.Response(1, response.substr(0, split), 20);
    EXPECT_TRUE(h.sink.exchanges.empty());
    h.Response(1, response.substr(split), 30);
    ASSERT_EQ(h.sink.exchanges.size(), 1u);
    EXPECT_EQ(h.exchange(0).response->head.status_code, 200);
    EXPECT_EQ(h.exchange(0).response->body_bytes, 11u);
    EXPECT_TRUE(h.exchange(0).response->body_complete);
    EXPECT_EQ(h.exchange(0).response->start_ns, 20u);
    EXPECT_EQ(h.exchange(0).response->end_ns, 30u);
    // The chunked body ended exactly where it should: the next exchange parses.
    h.Request(1, "GET /next HTTP/1.1\r\n\r\n", 40);
    h.Response(1, kOk2, 50);
    ASSERT_EQ(h.sink.exchanges.size(), 2u);
    EXPECT_EQ(h.exchange(1).request.head.target(), "/next");
    EXPECT_EQ(h.exchange(1).response->body_bytes, 2u);
    EXPECT_EQ(h.exchange(1).response->start_ns, 50u);
    EXPECT_EQ(h.tracker.stats().http_resyncs, 0u);
  }
}

TEST(ConnectionTrackerTest, ChunkedResponseOneByteEvents) {
  const std::string response =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "GET / HTTP/1.1\r\n\r\n", 10);
  for (size_t i = 0; i < response.size(); ++i) {
    EXPECT_TRUE(h.sink.exchanges.empty()) << i;
    h.Response(1, response.substr(i, 1), 100 + i);
  }
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).response->body_bytes, 3u);
  EXPECT_EQ(h.exchange(0).response->start_ns, 100u);
  EXPECT_EQ(h.exchange(0).response->end_ns, 100u + response.size() - 1);
}

TEST(ConnectionTrackerTest, HeadResponseHasNoBodyDespiteContentLength) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "HEAD /file HTTP/1.1\r\nHost: h\r\n\r\n", 10);
  h.Response(1, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", 20);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).request.head.method(), "HEAD");
  EXPECT_EQ(h.exchange(0).response->body_bytes, 0u);
  EXPECT_EQ(h.exchange(0).response->end_ns, 20u);
  EXPECT_TRUE(h.control.sets.empty());  // no body to skip
  h.Request(1, "GET /file HTTP/1.1\r\nHost: h\r\n\r\n", 30);
  h.Response(1, kOk2, 40);
  ASSERT_EQ(h.sink.exchanges.size(), 2u);
  EXPECT_EQ(h.exchange(1).request.head.method(), "GET");
  EXPECT_EQ(h.exchange(1).response->body_bytes, 2u);
  EXPECT_EQ(h.exchange(1).response->start_ns, 40u);
}

TEST(ConnectionTrackerTest, ContinueThenFinalResponse) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "POST /upload HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n", 10);
  h.Response(1, "HTTP/1.1 100 Continue\r\n\r\n", 20);
  EXPECT_TRUE(h.sink.exchanges.empty());
  h.Request(1, "data", 30);
  EXPECT_TRUE(h.sink.exchanges.empty());
  h.Response(1, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 40);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  const HttpExchange& e = h.exchange(0);
  EXPECT_EQ(e.request.body_bytes, 4u);
  EXPECT_EQ(e.request.start_ns, 10u);
  EXPECT_EQ(e.request.end_ns, 30u);
  EXPECT_EQ(e.response->head.status_code, 201);
  EXPECT_EQ(e.response->start_ns, 40u);
  EXPECT_EQ(e.response->end_ns, 40u);
  EXPECT_EQ(h.tracker.stats().http_orphan_responses, 0u);

  // Interim and final response in one write.
  h.Request(1, "PUT /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 50);
  h.Response(1, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 60);
  ASSERT_EQ(h.sink.exchanges.size(), 2u);
  EXPECT_EQ(h.exchange(1).request.head.method(), "PUT");
  EXPECT_EQ(h.exchange(1).response->head.status_code, 200);
  EXPECT_EQ(h.exchange(1).response->body_bytes, 2u);
}

TEST(ConnectionTrackerTest, NoBodyStatuses204And304) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "DELETE /a HTTP/1.1\r\n\r\n", 10);
  h.Response(1, "HTTP/1.1 204 No Content\r\n\r\n", 20);
  h.Request(1, "GET /b HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\n", 30);
  // Content-Length on a 304 describes the representation, not a body.
  h.Response(1, "HTTP/1.1 304 Not Modified\r\nContent-Length: 5000\r\n\r\n", 40);
  h.Request(1, "GET /c HTTP/1.1\r\n\r\n", 50);
  h.Response(1, kOk2, 60);
  ASSERT_EQ(h.sink.exchanges.size(), 3u);
  EXPECT_EQ(h.exchange(0).response->head.status_code, 204);
  EXPECT_EQ(h.exchange(0).response->body_bytes, 0u);
  EXPECT_EQ(h.exchange(0).response->end_ns, 20u);
  EXPECT_EQ(h.exchange(1).response->head.status_code, 304);
  EXPECT_EQ(h.exchange(1).response->body_bytes, 0u);
  EXPECT_EQ(h.exchange(1).response->end_ns, 40u);
  EXPECT_EQ(h.exchange(2).request.head.target(), "/c");
  EXPECT_EQ(h.exchange(2).response->head.status_code, 200);
  EXPECT_EQ(h.exchange(2).response->body_bytes, 2u);
  EXPECT_TRUE(h.control.sets.empty());
}

TEST(ConnectionTrackerTest, CloseBeforeResponse) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "GET /slow HTTP/1.1\r\n\r\n", 10, 3);
  h.Request(1, "GET /slower HTTP/1.1\r\n\r\n", 15, 3);
  h.Close(1, 50, 0, 46);
  ASSERT_EQ(h.sink.exchanges.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(h.exchange(i).error_type, "connection_closed");
    EXPECT_FALSE(h.exchange(i).response.has_value());
    EXPECT_EQ(h.exchange(i).request.request_index, i);
  }
  EXPECT_EQ(h.exchange(0).request.head.target(), "/slow");
  EXPECT_EQ(h.exchange(0).request.start_ns, 10u);
  EXPECT_EQ(h.exchange(1).request.head.target(), "/slower");
  EXPECT_EQ(h.exchange(1).request.start_ns, 15u);
  ASSERT_EQ(h.sink.closed.size(), 1u);
  EXPECT_EQ(h.sink.closed[0].bytes_received, 46u);
  EXPECT_EQ(h.sink.order,
            (std::vector<std::string>{"started", "started", "exchange", "exchange", "closed"}));
  EXPECT_EQ(h.tracker.connection_count(), 0u);
}

TEST(ConnectionTrackerTest, CloseEndsBodyDelimitedByClose) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "GET /stream HTTP/1.1\r\n\r\n", 10);
  h.Response(1, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 20);
  h.Response(1, "0123456789", 30);
  h.Response(1, "abc", 40);
  EXPECT_TRUE(h.sink.exchanges.empty());
  h.Close(1, 50);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).error_type, "");
  EXPECT_EQ(h.exchange(0).response->body_bytes, 13u);
  EXPECT_TRUE(h.exchange(0).response->body_complete);
  EXPECT_EQ(h.exchange(0).response->end_ns, 40u);
}

TEST(ConnectionTrackerTest, CloseCutsContentLengthBodyShort) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "GET /big HTTP/1.1\r\n\r\n", 10);
  h.Response(1, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", 20);
  h.Response(1, "0123456789", 30);
  h.Close(1, 50);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).error_type, "");
  EXPECT_FALSE(h.exchange(0).response->body_complete);
  EXPECT_EQ(h.exchange(0).response->end_ns, 30u);
}

TEST(ConnectionTrackerTest, UncapturedBodyEndsExchangeOnLastByte) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "GET /download HTTP/1.1\r\n\r\n", 10);
  const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
  // The head's call moved 1000 body bytes too, but only the head was copied.
  h.SendPartial(1, FT_DIR_EGRESS, static_cast<uint32_t>(head.size() + 1000), head, 20);
  EXPECT_TRUE(h.sink.exchanges.empty());
  h.SendUncaptured(1, FT_DIR_EGRESS, 40000, 30);
  h.SendUncaptured(1, FT_DIR_EGRESS, 40000, 40);
  EXPECT_TRUE(h.sink.exchanges.empty());
  h.SendUncaptured(1, FT_DIR_EGRESS, 18999, 50);
  EXPECT_TRUE(h.sink.exchanges.empty());  // one byte to go
  h.SendUncaptured(1, FT_DIR_EGRESS, 1, 60);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).response->body_bytes, 100000u);
  EXPECT_TRUE(h.exchange(0).response->body_complete);
  EXPECT_EQ(h.exchange(0).response->start_ns, 20u);
  EXPECT_EQ(h.exchange(0).response->end_ns, 60u);
  // The stream is in step afterwards.
  h.Request(1, "GET /again HTTP/1.1\r\n\r\n", 70);
  h.Response(1, kOk2, 80);
  ASSERT_EQ(h.sink.exchanges.size(), 2u);
  EXPECT_EQ(h.exchange(1).response->end_ns, 80u);
  EXPECT_EQ(h.tracker.stats().http_resyncs, 0u);
}

TEST(ConnectionTrackerTest, UncapturedBodyEndingMidCall) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "GET /x HTTP/1.1\r\n\r\n", 10);
  const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n";
  h.Response(1, head, 20);
  h.SendUncaptured(1, FT_DIR_EGRESS, 3000, 30);
  // The last body byte and the next response's head are moved by one call, whose
  // bytes from the body's end on were copied (payload_offset).
  const std::string next = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
  h.Request(1, "GET /y HTTP/1.1\r\n\r\n", 35);
  std::string record = DataRecord(1, FT_DIR_EGRESS, head.size() + 3000, next, 40, 11,
                                  static_cast<uint32_t>(2000 + next.size()), 2000);
  h.Feed(record);
  ASSERT_EQ(h.sink.exchanges.size(), 2u);
  EXPECT_EQ(h.exchange(0).response->body_bytes, 5000u);
  EXPECT_EQ(h.exchange(0).response->end_ns, 40u);
  EXPECT_EQ(h.exchange(1).request.head.target(), "/y");
  EXPECT_EQ(h.exchange(1).response->head.status_code, 404);
  EXPECT_EQ(h.exchange(1).response->start_ns, 40u);
}

// ---- Roles and protocol detection.

TEST(ConnectionTrackerTest, UnknownRoleInferredAsServer) {
  Harness h;
  h.Open(1, FT_ROLE_UNKNOWN);
  h.Send(1, FT_DIR_INGRESS, "GET / HTTP/1.1\r\n\r\n", 10);
  h.Send(1, FT_DIR_EGRESS, kOk2, 20);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.sink.exchanges[0].first.role, FT_ROLE_SERVER);
  EXPECT_TRUE(h.sink.exchanges[0].first.role_inferred);
  EXPECT_EQ(h.sink.started[0].first.role, FT_ROLE_SERVER);
  EXPECT_TRUE(h.sink.started[0].first.role_inferred);
}

TEST(ConnectionTrackerTest, UnknownRoleInferredAsClient) {
  Harness h;
  h.Open(1, FT_ROLE_UNKNOWN);
  h.Send(1, FT_DIR_EGRESS, "GET /remote HTTP/1.1\r\n\r\n", 10, 4);
  h.Send(1, FT_DIR_INGRESS, kOk2, 20, 4);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.sink.exchanges[0].first.role, FT_ROLE_CLIENT);
  EXPECT_TRUE(h.sink.exchanges[0].first.role_inferred);
  EXPECT_EQ(h.exchange(0).request.head.target(), "/remote");
  EXPECT_EQ(h.exchange(0).response->end_ns, 20u);
}

TEST(ConnectionTrackerTest, UnknownRoleDetectedFromFirstByte) {
  Harness h;
  h.Open(1, FT_ROLE_UNKNOWN);
  const std::string head = "POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
  for (size_t i = 0; i < head.size(); ++i) h.Send(1, FT_DIR_INGRESS, head.substr(i, 1), 10 + i);
  h.Send(1, FT_DIR_EGRESS, kOk2, 500);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.sink.exchanges[0].first.role, FT_ROLE_SERVER);
  EXPECT_EQ(h.exchange(0).request.start_ns, 10u);
}

TEST(ConnectionTrackerTest, NonHttpConnectionIsIgnored) {
  Harness h;
  h.Open(9, FT_ROLE_SERVER);
  std::string tls(2000, '\0');
  tls[0] = '\x16';
  tls[1] = '\x03';
  tls[2] = '\x01';
  h.Send(9, FT_DIR_INGRESS, tls, 10);
  EXPECT_TRUE(h.control.sets.empty());  // not enough bytes to decide yet
  EXPECT_EQ(h.tracker.stats().connections_ignored, 0u);
  h.Send(9, FT_DIR_EGRESS, std::string(2095, '\x17'), 20);
  EXPECT_TRUE(h.control.sets.empty());  // 4095 bytes: still one short
  h.Send(9, FT_DIR_EGRESS, "\x17", 25);
  ASSERT_EQ(h.control.sets.size(), 1u);
  EXPECT_EQ(h.control.sets[0].first, 9u);
  EXPECT_EQ(h.control.sets[0].second.flags, FT_CONTROL_IGNORE);
  EXPECT_EQ(h.control.sets[0].second.skip_until[0], 0u);
  EXPECT_EQ(h.control.sets[0].second.skip_until[1], 0u);
  EXPECT_EQ(h.tracker.stats().connections_ignored, 1u);

  // Whatever comes later is not parsed, and the kernel is not told again.
  h.Send(9, FT_DIR_INGRESS, "GET / HTTP/1.1\r\n\r\n", 30);
  h.Send(9, FT_DIR_EGRESS, kOk2, 40);
  EXPECT_TRUE(h.sink.started.empty());
  EXPECT_TRUE(h.sink.exchanges.empty());
  EXPECT_EQ(h.control.sets.size(), 1u);

  h.Close(9, 50);
  EXPECT_EQ(h.control.forgets, std::vector<uint64_t>{9});
  ASSERT_EQ(h.sink.closed.size(), 1u);
  EXPECT_EQ(h.sink.closed[0].info.protocol, Protocol::kOpaque);
  EXPECT_EQ(h.tracker.stats().connections_ignored, 1u);
}

TEST(ConnectionTrackerTest, ShortNonHttpConnectionIgnoredAtClose) {
  Harness h;
  h.Open(3, FT_ROLE_CLIENT);
  h.Send(3, FT_DIR_EGRESS, "PING\r\n", 10);
  EXPECT_EQ(h.tracker.stats().connections_ignored, 0u);
  h.Close(3, 20);
  EXPECT_EQ(h.tracker.stats().connections_ignored, 1u);
  EXPECT_TRUE(h.sink.exchanges.empty());
  ASSERT_EQ(h.sink.closed.size(), 1u);
}

TEST(ConnectionTrackerTest, UpgradeStopsParsing) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 10);
  h.Response(1, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", 20);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).response->head.status_code, 101);
  ASSERT_EQ(h.control.sets.size(), 1u);
  EXPECT_EQ(h.control.sets[0].second.flags, FT_CONTROL_IGNORE);
  h.Request(1, "GET /not-http-anymore HTTP/1.1\r\n\r\n", 30);
  EXPECT_EQ(h.sink.started.size(), 1u);
  EXPECT_EQ(h.sink.exchanges.size(), 1u);
}

// ---- Copy control.

TEST(ConnectionTrackerTest, LargeBodiesSendSkipHints) {
  Harness h;
  h.Open(5, FT_ROLE_SERVER);
  const std::string request = "POST /upload HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n";
  h.Request(5, request, 10);
  ASSERT_EQ(h.control.sets.size(), 1u);
  EXPECT_EQ(h.control.sets[0].first, 5u);
  EXPECT_EQ(h.control.sets[0].second.flags, 0u);
  EXPECT_EQ(h.control.sets[0].second.skip_until[FT_DIR_INGRESS], request.size() + 1000000);
  EXPECT_EQ(h.control.sets[0].second.skip_until[FT_DIR_EGRESS], 0u);

  // More body bytes arrive: the hint stands, nothing new to say.
  h.SendUncaptured(5, FT_DIR_INGRESS, 500000, 20);
  EXPECT_EQ(h.control.sets.size(), 1u);
  h.SendUncaptured(5, FT_DIR_INGRESS, 500000, 30);
  EXPECT_EQ(h.control.sets.size(), 1u);

  const std::string response = "HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n";
  h.Response(5, response, 40);
  ASSERT_EQ(h.control.sets.size(), 2u);
  EXPECT_EQ(h.control.sets[1].second.flags, 0u);
  EXPECT_EQ(h.control.sets[1].second.skip_until[FT_DIR_EGRESS], response.size() + 50000);
  // Hints never move back.
  EXPECT_EQ(h.control.sets[1].second.skip_until[FT_DIR_INGRESS], request.size() + 1000000);
  h.SendUncaptured(5, FT_DIR_EGRESS, 50000, 50);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).request.body_bytes, 1000000u);
  EXPECT_EQ(h.exchange(0).request.end_ns, 30u);
  EXPECT_EQ(h.exchange(0).response->end_ns, 50u);

  // A small body is not worth a hint (min_skip_bytes is 4096).
  const uint64_t egress_before = response.size() + 50000;
  h.Request(5, "GET / HTTP/1.1\r\n\r\n", 60);
  const std::string small = "HTTP/1.1 200 OK\r\nContent-Length: 4095\r\n\r\n";
  h.Response(5, small, 70);
  EXPECT_EQ(h.control.sets.size(), 2u);
  h.SendUncaptured(5, FT_DIR_EGRESS, 4095, 75);
  h.Request(5, "GET / HTTP/1.1\r\n\r\n", 76);
  const std::string exact = "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n";
  h.Response(5, exact, 77);
  ASSERT_EQ(h.control.sets.size(), 3u);
  EXPECT_EQ(h.control.sets[2].second.skip_until[FT_DIR_EGRESS],
            egress_before + small.size() + 4095 + exact.size() + 4096);
  EXPECT_EQ(h.sink.exchanges.size(), 2u);

  h.Close(5, 80);
  EXPECT_EQ(h.control.forgets, std::vector<uint64_t>{5});
}

TEST(ConnectionTrackerTest, ClientRequestBodyHintIsOnEgress) {
  Harness h;
  h.Open(6, FT_ROLE_CLIENT);
  const std::string request = "PUT /blob HTTP/1.1\r\nContent-Length: 8192\r\n\r\n";
  h.Send(6, FT_DIR_EGRESS, request, 10);
  ASSERT_EQ(h.control.sets.size(), 1u);
  EXPECT_EQ(h.control.sets[0].second.skip_until[FT_DIR_EGRESS], request.size() + 8192);
  EXPECT_EQ(h.control.sets[0].second.skip_until[FT_DIR_INGRESS], 0u);
}

// ---- Bad input.

TEST(ConnectionTrackerTest, MalformedRecordsAreCounted) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  const std::string valid = DataRecord(1, FT_DIR_INGRESS, 0, "GET / HTTP/1.1\r\n\r\n", 10, 1, 18);
  ASSERT_EQ(valid.size(), sizeof(ft_data_event) + 18);

  std::vector<std::string> bad;
  bad.push_back("");
  bad.push_back(std::string(sizeof(ft_event_header) - 1, '\0'));
  bad.push_back(ConnRecord(FT_EVENT_CONN_OPEN, 2, 1, FT_ROLE_SERVER).substr(0, sizeof(ft_conn_event) - 1));
  bad.push_back(ConnRecord(FT_EVENT_CONN_CLOSE, 1, 1, FT_ROLE_SERVER).substr(0, sizeof(ft_event_header)));
  bad.push_back(valid.substr(0, sizeof(ft_data_event) - 1));
  bad.push_back(valid.substr(0, valid.size() - 1));  // payload_bytes says more than the record has
  // payload_offset past the call's length.
  bad.push_back(DataRecord(1, FT_DIR_INGRESS, 0, "GET", 10, 1, 18, 19));
  // payload_offset + payload_bytes past the call's length.
  bad.push_back(DataRecord(1, FT_DIR_INGRESS, 0, "GET / HTTP/1.1\r\n\r\n", 10, 1, 18, 1));
  bad.push_back(DataRecord(1, FT_DIR_INGRESS, 0, "GET / HTTP/1.1\r\n\r\n", 10, 1, 17));
  // Offsets that would overflow 32 bits when added.
  bad.push_back(DataRecord(1, FT_DIR_INGRESS, 0, "GET", 10, 1, 0xffffffffu, 0xfffffffeu));
  // More payload than any event may carry.
  bad.push_back(DataRecord(1, FT_DIR_INGRESS, 0, std::string(FT_MAX_PAYLOAD + 1, 'a'), 10, 1,
                           FT_MAX_PAYLOAD + 1));
  {
    std::string record = valid;
    record[offsetof(ft_data_event, direction)] = 2;
    bad.push_back(record);
  }
  for (uint32_t type : {0u, 4u, 99u, 0xffffffffu}) {
    std::string record = valid;
    std::memcpy(record.data(), &type, sizeof(type));
    bad.push_back(record);
  }
  for (const std::string& record : bad) h.FeedExact(record);

  EXPECT_EQ(h.tracker.stats().malformed_records, bad.size());
  EXPECT_EQ(h.tracker.connection_count(), 1u);
  EXPECT_TRUE(h.sink.started.empty());
  EXPECT_TRUE(h.sink.closed.empty());
  EXPECT_EQ(h.tracker.stats().data_for_unknown_connection, 0u);

  // None of it reached the stream: the valid request parses from offset 0.
  h.FeedExact(valid);
  h.Response(1, kOk2, 20);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).request.head.target(), "/");
  EXPECT_EQ(h.exchange(0).request.start_ns, 10u);
  EXPECT_EQ(h.tracker.stats().malformed_records, bad.size());
  EXPECT_EQ(h.tracker.stats().http_resyncs, 0u);
}

TEST(ConnectionTrackerTest, PayloadAtMaximumIsAccepted) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  std::string request = "POST / HTTP/1.1\r\nContent-Length: ";
  std::string body(FT_MAX_PAYLOAD, 'b');
  std::string head = request + std::to_string(FT_MAX_PAYLOAD) + "\r\n\r\n";
  h.Request(1, head, 10);
  h.Request(1, body, 20);  // exactly FT_MAX_PAYLOAD bytes
  h.Response(1, kOk2, 30);
  EXPECT_EQ(h.tracker.stats().malformed_records, 0u);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).request.body_bytes, static_cast<uint64_t>(FT_MAX_PAYLOAD));
  EXPECT_EQ(h.exchange(0).request.end_ns, 20u);
}

TEST(ConnectionTrackerTest, DataForUnknownConnectionIsCounted) {
  Harness h;
  h.Send(77, FT_DIR_INGRESS, "GET / HTTP/1.1\r\n\r\n", 10);
  h.Send(77, FT_DIR_EGRESS, kOk2, 20);
  EXPECT_EQ(h.tracker.stats().data_for_unknown_connection, 2u);
  EXPECT_EQ(h.tracker.connection_count(), 0u);
  h.Close(77, 30);  // a close for a connection never opened: nothing to report
  EXPECT_TRUE(h.sink.started.empty());
  EXPECT_TRUE(h.sink.exchanges.empty());
  EXPECT_TRUE(h.sink.closed.empty());
  EXPECT_EQ(h.tracker.stats().malformed_records, 0u);
}

TEST(ConnectionTrackerTest, DuplicateOpenKeepsState) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER, 5);
  h.Request(1, "GET /kept HTTP/1.1\r\n\r\n", 10);
  h.Feed(ConnRecord(FT_EVENT_CONN_OPEN, 1, 15, FT_ROLE_CLIENT, 1, "other"));
  h.Response(1, kOk2, 20);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.sink.exchanges[0].first.open_ns, 5u);
  EXPECT_EQ(h.sink.exchanges[0].first.role, FT_ROLE_SERVER);
  EXPECT_EQ(h.exchange(0).request.head.target(), "/kept");
}

// ---- Time and bounds.

TEST(ConnectionTrackerTest, TickExpiresUnansweredRequest) {
  TrackerOptions options;
  options.response_timeout_ns = 1000;
  options.idle_timeout_ns = 100000;
  Harness h(options);
  h.Open(1, FT_ROLE_SERVER, 1);
  h.Request(1, "GET /never HTTP/1.1\r\n\r\n", 5000);
  h.tracker.Tick(5500);
  h.tracker.Tick(6000);  // exactly the timeout: not yet older than it
  EXPECT_TRUE(h.sink.exchanges.empty());
  h.tracker.Tick(6001);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).error_type, "timeout");
  EXPECT_FALSE(h.exchange(0).response.has_value());
  EXPECT_EQ(h.exchange(0).request.head.target(), "/never");
  EXPECT_EQ(h.exchange(0).request.start_ns, 5000u);
  h.tracker.Tick(7000);
  EXPECT_EQ(h.sink.exchanges.size(), 1u);  // expired once
  EXPECT_EQ(h.tracker.connection_count(), 1u);
  EXPECT_TRUE(h.sink.closed.empty());

  // The late answer to /never is dropped (HTTP/1 answers in order), not given to /fast.
  h.Response(1, "HTTP/1.1 504 Late\r\nContent-Length: 0\r\n\r\n", 7500);
  EXPECT_EQ(h.sink.exchanges.size(), 1u);
  // A request answered in time is not touched by later ticks.
  h.Request(1, "GET /fast HTTP/1.1\r\n\r\n", 8000);
  h.Response(1, kOk2, 8100);
  h.tracker.Tick(20000);
  ASSERT_EQ(h.sink.exchanges.size(), 2u);
  EXPECT_EQ(h.exchange(1).error_type, "");
  EXPECT_EQ(h.exchange(1).request.head.target(), "/fast");
  ASSERT_TRUE(h.exchange(1).response.has_value());
  EXPECT_EQ(h.exchange(1).response->head.status_code, 200);
  h.Close(1, 21000);
  EXPECT_EQ(h.tracker.stats().http_late_responses, 1u);
}

TEST(ConnectionTrackerTest, CloseCutsRequestBodyShort) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "POST /upload HTTP/1.1\r\nContent-Length: 100\r\n\r\npartial", 10);
  h.Close(1, 20);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).request.head.target(), "/upload");
  EXPECT_EQ(h.exchange(0).error_type, "connection_closed");
  EXPECT_FALSE(h.exchange(0).request.body_complete);
  EXPECT_EQ(h.sink.order, (std::vector<std::string>{"started", "exchange", "closed"}));
}

TEST(ConnectionTrackerTest, EmptyLinesBeforeRequestStillDetectHttp) {
  Harness h;
  h.Open(1, FT_ROLE_UNKNOWN);
  h.Request(1, "\r\n\r\nGET /after-blank HTTP/1.1\r\n\r\n", 10);
  h.Response(1, kOk2, 20);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).request.head.target(), "/after-blank");
  EXPECT_EQ(h.exchange(0).response->head.status_code, 200);
}

TEST(ConnectionTrackerTest, TickEvictsIdleConnections) {
  TrackerOptions options;
  options.idle_timeout_ns = 10000;
  Harness h(options);
  h.Open(1, FT_ROLE_SERVER, 100);
  h.Open(2, FT_ROLE_SERVER, 100);
  h.Request(2, "GET / HTTP/1.1\r\n\r\n", 5000);
  h.tracker.Tick(10100);
  EXPECT_EQ(h.tracker.connection_count(), 2u);
  h.tracker.Tick(10101);
  EXPECT_EQ(h.tracker.connection_count(), 1u);
  EXPECT_EQ(h.tracker.stats().connections_evicted_idle, 1u);
  h.Request(1, "GET / HTTP/1.1\r\n\r\n", 10200);
  EXPECT_EQ(h.tracker.stats().data_for_unknown_connection, 1u);
  h.tracker.Tick(15001);
  EXPECT_EQ(h.tracker.connection_count(), 0u);
  EXPECT_EQ(h.tracker.stats().connections_evicted_idle, 2u);
}

TEST(ConnectionTrackerTest, HeapIsTrimmedWhenEnoughOfItIsFreeLookedAtEvery10s) {
  TrackerOptions options;
  options.trim_when_free_heap_bytes = 4 << 20;
  size_t free_bytes = 1 << 20;
  int trims = 0;
  options.free_heap_bytes = [&] { return free_bytes; };
  options.trim_heap = [&] { ++trims; };
  Harness h(options);
  const uint64_t kSecond = 1'000'000'000;
  h.tracker.Tick(1 * kSecond);  // 1 MiB free: kept
  EXPECT_EQ(trims, 0);
  free_bytes = 20 << 20;  // a burst's connections and requests were freed
  h.tracker.Tick(5 * kSecond);  // not looked at again before 10 s
  EXPECT_EQ(trims, 0);
  h.tracker.Tick(11 * kSecond);
  EXPECT_EQ(trims, 1);
  h.tracker.Tick(15 * kSecond);
  EXPECT_EQ(trims, 1);  // at most once per 10 s
  free_bytes = 2 << 20;
  h.tracker.Tick(30 * kSecond);
  EXPECT_EQ(trims, 1);
}

TEST(ConnectionTrackerTest, HeapIsNeverTrimmedWhenTurnedOff) {
  TrackerOptions options;
  options.trim_when_free_heap_bytes = 0;
  int trims = 0;
  options.free_heap_bytes = [] { return size_t{1} << 30; };
  options.trim_heap = [&] { ++trims; };
  Harness h(options);
  for (uint64_t t = 1; t <= 100; ++t) h.tracker.Tick(t * 1'000'000'000);
  EXPECT_EQ(trims, 0);
}

TEST(ConnectionTrackerTest, ConnectionsTheKernelIgnoresAreNotEvictedByIdleAge) {
  // Shed (or not a protocol we parse): the kernel sends nothing for it, so it looks idle
  // however busy it is. Evicting it would forget its control, and the kernel would then
  // send its bytes for a connection the tracker no longer knows.
  TrackerOptions options;
  options.idle_timeout_ns = 10000;
  Harness h(options);
  h.tracker.SetTracedShare(ConnectionShareKey(records::LoopbackTuple()), 0);
  h.Open(1, FT_ROLE_SERVER, 100);
  ASSERT_EQ(h.control.sets.size(), 1u);
  h.tracker.Tick(50000);
  EXPECT_EQ(h.tracker.connection_count(), 1u);
  EXPECT_TRUE(h.control.forgets.empty());
  h.Close(1, 60000);
  EXPECT_EQ(h.tracker.connection_count(), 0u);
  EXPECT_EQ(h.control.forgets, std::vector<uint64_t>{1});
}

TEST(ConnectionTrackerTest, AConnectionTracedAgainStartsItsIdleAgeThen) {
  // Shed for longer than the idle age: traced again, it must not be evicted as idle at
  // once (its activity while shed was never seen).
  TrackerOptions options;
  options.idle_timeout_ns = 10000;
  Harness h(options);
  const uint32_t key = ConnectionShareKey(records::LoopbackTuple());
  h.Open(1, FT_ROLE_SERVER, 100);
  h.tracker.SetTracedShare(key, 200);
  h.tracker.Tick(50000);
  h.tracker.SetTracedShare(kAllConnectionsTraced, 60000);
  h.tracker.Tick(60001);
  EXPECT_EQ(h.tracker.connection_count(), 1u);
  EXPECT_EQ(h.tracker.stats().connections_evicted_idle, 0u);
  h.Request(1, "GET /back HTTP/1.1\r\n\r\n", 60100);
  EXPECT_EQ(h.sink.started.size(), 1u);
  EXPECT_EQ(h.tracker.stats().data_for_unknown_connection, 0u);
}

TEST(ConnectionTrackerTest, EvictingAnIgnoredConnectionKeepsItIgnoredInTheKernel) {
  // A full table evicts the least active connection, and one the kernel ignores always
  // looks the least active: forgetting its kernel entry would make the kernel copy its
  // bytes again, for a connection the tracker no longer knows.
  TrackerOptions options;
  options.max_connections = 1;
  Harness h(options);
  h.tracker.SetTracedShare(ConnectionShareKey(records::LoopbackTuple()), 0);
  h.Open(1, FT_ROLE_SERVER, 100);
  h.Open(2, FT_ROLE_SERVER, 200);
  EXPECT_EQ(h.tracker.stats().connections_evicted_full, 1u);
  EXPECT_TRUE(h.control.forgets.empty());
}

TEST(ConnectionTrackerTest, ForgetsIdleConnectionsWhoseSocketIsGone) {
  // Their close events were lost (ring buffer full): kept until the idle timeout, churned
  // connections would pile up with the span state of their unanswered requests.
  TrackerOptions options;
  options.close_check_idle_ns = 1000;
  FakeLiveness liveness;
  liveness.gone_pids = {200, 300};
  Harness h(options, &liveness);
  h.Open(1, FT_ROLE_SERVER, 1, /*pid=*/100);
  h.Open(2, FT_ROLE_SERVER, 1, /*pid=*/200);
  h.Open(3, FT_ROLE_SERVER, 1, /*pid=*/300);
  h.Request(2, "GET /unanswered HTTP/1.1\r\n\r\n", 10);
  h.Request(3, "GET /recent HTTP/1.1\r\n\r\n", 900);
  h.tracker.Tick(1100);
  // Only connections idle for close_check_idle_ns are looked up.
  std::sort(liveness.asked.begin(), liveness.asked.end());
  EXPECT_EQ(liveness.asked, (std::vector<uint32_t>{100, 200}));
  EXPECT_EQ(h.tracker.connection_count(), 2u);
  EXPECT_EQ(h.tracker.stats().connections_close_missed, 1u);
  ASSERT_EQ(h.sink.forgotten.size(), 1u);
  EXPECT_EQ(h.sink.forgotten[0].conn_id, 2u);
  EXPECT_TRUE(h.sink.closed.empty());
  // At most one lookup round per half of close_check_idle_ns.
  h.tracker.Tick(1500);
  EXPECT_EQ(liveness.sweeps, 1);
  h.tracker.Tick(2000);
  EXPECT_EQ(liveness.sweeps, 2);
  EXPECT_EQ(h.tracker.connection_count(), 1u);
  EXPECT_EQ(h.tracker.stats().connections_close_missed, 2u);
  EXPECT_EQ(h.tracker.stats().connections_evicted_idle, 0u);
  // A connection whose socket is open stays and keeps working.
  h.Request(1, "GET /still-open HTTP/1.1\r\n\r\n", 2100);
  h.Response(1, kOk2, 2200);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).request.head.target(), "/still-open");
}

TEST(ConnectionTrackerTest, QuietConnectionsReleaseStateAndContinueWhereTheyWere) {
  TrackerOptions options;
  options.release_idle_after_ns = 1000;
  Harness h(options);
  h.Open(1, FT_ROLE_SERVER, 1);
  h.Request(1, "GET /a HTTP/1.1\r\n\r\n", 10);
  h.Response(1, kOk2, 20);
  h.Response(1, kOk2, 30);  // answers nothing: counted before the release
  h.Request(1, "GET /b HTTP/1.1\r\n\r\n", 40);
  h.tracker.Tick(2000);  // /b awaits its response: nothing is released
  h.Response(1, kOk2, 2100);
  h.tracker.Tick(4000);  // quiet and idle: released
  h.Request(1, "GET /c HTTP/1.1\r\n\r\n", 4100);
  h.Response(1, kOk2, 4200);
  ASSERT_EQ(h.sink.exchanges.size(), 3u);
  EXPECT_EQ(h.exchange(1).request.head.target(), "/b");
  EXPECT_EQ(h.exchange(2).request.head.target(), "/c");
  EXPECT_EQ(h.exchange(2).request.request_index, 2u);  // span ids are keyed by it
  h.tracker.Tick(6000);
  h.tracker.Flush();
  EXPECT_EQ(h.tracker.stats().http_orphan_responses, 1u);  // once, not lost nor doubled
}

TEST(ConnectionTrackerTest, IdleKeepAliveConnectionCostsAFewHundredBytes) {
  // 10 000 keep-alive connections between requests: the table must not cost ~1 KB each
  // (the struct alone was 1 KB, plus segment slots kept per stream).
  struct mallinfo2 before = mallinfo2();
  TrackerOptions options;
  options.release_idle_after_ns = 1000;
  ConnectionTracker tracker(options, nullptr);
  constexpr int kConnections = 2000;
  for (int i = 1; i <= kConnections; ++i) {
    tracker.OnRecord(records::ConnRecord(FT_EVENT_CONN_OPEN, i, 1, FT_ROLE_SERVER).data(),
                     sizeof(ft_conn_event));
    std::string request = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    std::string response(kOk2);
    std::string in = records::DataRecord(i, FT_DIR_INGRESS, 0, request, 10, 11, request.size());
    std::string out = records::DataRecord(i, FT_DIR_EGRESS, 0, response, 20, 11, response.size());
    tracker.OnRecord(in.data(), in.size());
    tracker.OnRecord(out.data(), out.size());
  }
  tracker.Tick(5000);
  struct mallinfo2 after = mallinfo2();
  if (after.uordblks == 0) GTEST_SKIP() << "the allocator does not report (sanitizer build)";
  // Connections and their table nodes are in the tracker's own blocks, not the heap.
  EXPECT_GE(tracker.connection_memory_bytes(), kConnections * ConnectionTracker::connection_struct_bytes());
  double bytes_per_connection =
      (static_cast<double>(after.uordblks) - before.uordblks + tracker.connection_memory_bytes()) / kConnections;
  EXPECT_LT(bytes_per_connection, 500.0);
  RecordProperty("bytes_per_idle_connection", static_cast<int>(bytes_per_connection));
  EXPECT_EQ(tracker.connection_count(), static_cast<size_t>(kConnections));
}

TEST(ConnectionMemoryTest, BlocksGoBackToTheSystemWhenEmpty) {
  ConnectionMemory memory;
  std::vector<void*> slots;
  for (int i = 0; i < 5000; ++i) slots.push_back(memory.allocate(352, 8));
  EXPECT_EQ(memory.in_use_bytes(), 5000u * 352);
  EXPECT_GE(memory.mapped_bytes(), 5000u * 352);
  EXPECT_LT(memory.mapped_bytes(), 5000u * 352 + 2 * ConnectionMemory::kBlockBytes);
  for (void* slot : slots) memory.deallocate(slot, 352, 8);
  EXPECT_EQ(memory.in_use_bytes(), 0u);
  EXPECT_EQ(memory.mapped_bytes(), ConnectionMemory::kBlockBytes);  // one empty block kept
}

TEST(ConnectionMemoryTest, LongLivedSlotsGatherInTheOldestBlocks) {
  // A burst of 20 000 short-lived objects and 1 000 long-lived ones made as they end:
  // freed slots are reused oldest block first, so the long-lived ones fill a few blocks
  // and the rest go back.
  ConnectionMemory memory;
  std::vector<void*> burst;
  for (int i = 0; i < 20000; ++i) burst.push_back(memory.allocate(352, 8));
  std::vector<void*> long_lived;
  for (size_t i = 0; i < burst.size(); ++i) {
    memory.deallocate(burst[i], 352, 8);
    if (i % 20 == 0) long_lived.push_back(memory.allocate(352, 8));
  }
  const size_t per_block = ConnectionMemory::kBlockBytes / 352;
  EXPECT_LE(memory.mapped_bytes(), (long_lived.size() / per_block + 2) * ConnectionMemory::kBlockBytes);
  for (void* slot : long_lived) {
    std::memset(slot, 0xab, 352);  // whole slots are usable
    memory.deallocate(slot, 352, 8);
  }
  EXPECT_EQ(memory.in_use_bytes(), 0u);
}

TEST(ConnectionMemoryTest, LargeAllocationsGoToTheHeap) {
  ConnectionMemory memory;
  void* buckets = memory.allocate(64 * 1024, 8);
  EXPECT_EQ(memory.mapped_bytes(), 0u);
  memory.deallocate(buckets, 64 * 1024, 8);
}

TEST(ConnectionTrackerTest, CloseChecksAreOffByDefault) {
  FakeLiveness liveness;
  liveness.gone_pids = {4242};
  Harness h({}, &liveness);
  h.Open(1, FT_ROLE_SERVER, 1);
  h.tracker.Tick(200ull * 1000 * 1000 * 1000);
  EXPECT_TRUE(liveness.asked.empty());
  EXPECT_EQ(h.tracker.connection_count(), 1u);
}

TEST(ConnectionTrackerTest, MaxConnectionsEvictsLeastRecentlyActive) {
  TrackerOptions options;
  options.max_connections = 2;
  Harness h(options);
  h.Open(1, FT_ROLE_SERVER, 100);
  h.Open(2, FT_ROLE_SERVER, 200);
  h.Request(1, "GET /one HTTP/1.1\r\n\r\n", 300);  // 2 is now the least recently active
  h.Open(3, FT_ROLE_SERVER, 400);
  EXPECT_EQ(h.tracker.connection_count(), 2u);
  EXPECT_EQ(h.tracker.stats().connections_evicted_full, 1u);

  h.Request(2, "GET /two HTTP/1.1\r\n\r\n", 500);
  EXPECT_EQ(h.tracker.stats().data_for_unknown_connection, 1u);
  h.Response(1, kOk2, 600);
  h.Request(3, "GET /three HTTP/1.1\r\n\r\n", 700);
  h.Response(3, kOk2, 800);
  ASSERT_EQ(h.sink.exchanges.size(), 2u);
  EXPECT_EQ(h.sink.exchanges[0].first.conn_id, 1u);
  EXPECT_EQ(h.exchange(0).request.head.target(), "/one");
  EXPECT_EQ(h.sink.exchanges[1].first.conn_id, 3u);
  EXPECT_EQ(h.exchange(1).request.head.target(), "/three");

  h.Open(4, FT_ROLE_SERVER, 900);  // 1 (last active at 600) goes
  EXPECT_EQ(h.tracker.connection_count(), 2u);
  EXPECT_EQ(h.tracker.stats().connections_evicted_full, 2u);
  h.Request(1, "GET / HTTP/1.1\r\n\r\n", 1000);
  EXPECT_EQ(h.tracker.stats().data_for_unknown_connection, 2u);
}

TEST(ConnectionTrackerTest, FlushCountsInFlightWithoutEmitting) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Open(2, FT_ROLE_SERVER);
  h.Request(1, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 10);
  h.Request(2, "GET /c HTTP/1.1\r\n\r\n", 10);
  h.Response(2, kOk2, 20);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  uint64_t in_flight = 0;
  h.tracker.Flush(&in_flight);
  EXPECT_EQ(in_flight, 2u);
  EXPECT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.tracker.connection_count(), 0u);
}

TEST(ConnectionTrackerTest, GapsAreAccountedWhenConnectionEnds) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Feed(DataRecord(1, FT_DIR_INGRESS, 0, "GET /a HTTP/1.1\r\n\r\n", 10, 1, 19));
  // 100 bytes were moved by calls the agent never saw.
  h.Feed(DataRecord(1, FT_DIR_INGRESS, 119, "GET /b HTTP/1.1\r\n\r\n", 20, 1, 19));
  EXPECT_EQ(h.tracker.stats().gap_bytes, 0u);  // accounted when the connection goes
  ASSERT_EQ(h.sink.started.size(), 2u);
  EXPECT_EQ(h.sink.started[1].second.head.target(), "/b");
  EXPECT_EQ(h.sink.started[1].second.start_ns, 20u);
  h.Close(1, 30);
  EXPECT_EQ(h.tracker.stats().gap_bytes, 100u);
}

// ---- Holes (bytes moved but not copied) while looking for the next message.

TEST(ConnectionTrackerTest, LargeHoleBetweenRequestsIsCrossedAtOnce) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "GET /a HTTP/1.1\r\n\r\n", 10);
  h.SendUncaptured(1, FT_DIR_INGRESS, 1000000, 20);  // e.g. spliced bytes
  h.Request(1, "GET /b HTTP/1.1\r\n\r\n", 30);
  ASSERT_EQ(h.sink.started.size(), 2u);
  EXPECT_EQ(h.sink.started[1].second.head.target(), "/b");
  EXPECT_EQ(h.sink.started[1].second.start_ns, 30u);
  h.Response(1, kOk2, 40);
  h.Response(1, kOk2, 50);
  ASSERT_EQ(h.sink.exchanges.size(), 2u);
  EXPECT_EQ(h.exchange(0).request.head.target(), "/a");
  EXPECT_EQ(h.exchange(0).response->end_ns, 40u);
  EXPECT_EQ(h.exchange(1).request.head.target(), "/b");
  EXPECT_EQ(h.exchange(1).response->end_ns, 50u);
  h.Close(1, 60);
  EXPECT_EQ(h.tracker.stats().http_orphan_responses, 0u);
  EXPECT_EQ(h.tracker.stats().http_resyncs, 0u);
}

TEST(ConnectionTrackerTest, TruncatedHeadDoesNotStallTheConnection) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  // A head longer than the copied payload (--max-payload-bytes 64): it cannot be parsed,
  // but what follows must be.
  const std::string head =
      "GET /first HTTP/1.1\r\nHost: example.com\r\nCookie: " + std::string(60, 'c') + "\r\n\r\n";
  h.SendPartial(1, FT_DIR_INGRESS, static_cast<uint32_t>(head.size()), head.substr(0, 64), 10);
  h.Response(1, kOk2, 15);
  h.Request(1, "GET /second HTTP/1.1\r\n\r\n", 20);
  h.Response(1, kOk2, 30);
  h.Request(1, "GET /third HTTP/1.1\r\n\r\n", 40);
  h.Response(1, kOk2, 50);
  ASSERT_EQ(h.sink.started.size(), 2u);
  EXPECT_EQ(h.sink.started[0].second.head.target(), "/second");
  EXPECT_EQ(h.sink.started[0].second.request_index, 0u);
  EXPECT_EQ(h.sink.started[1].second.head.target(), "/third");
  ASSERT_EQ(h.sink.exchanges.size(), 2u);
  EXPECT_EQ(h.exchange(0).request.head.target(), "/second");
  EXPECT_EQ(h.exchange(0).request.start_ns, 20u);
  EXPECT_EQ(h.exchange(0).response->end_ns, 30u);
  EXPECT_EQ(h.exchange(1).request.head.target(), "/third");
  EXPECT_EQ(h.exchange(1).response->end_ns, 50u);
  h.Close(1, 60);
  EXPECT_EQ(h.tracker.stats().http_resyncs, 1u);
  EXPECT_EQ(h.tracker.stats().http_orphan_responses, 1u);  // the answer to /first
}

TEST(ConnectionTrackerTest, HoleInChunkedBodyEndsMessageIncomplete) {
  Harness h;
  h.Open(1, FT_ROLE_SERVER);
  h.Request(1, "GET /big HTTP/1.1\r\n\r\n", 10);
  // Chunk of 0x186a0 = 100000 bytes; only its first 3 were copied.
  h.Response(1, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n186a0\r\nabc", 20);
  h.SendUncaptured(1, FT_DIR_EGRESS, 99997 + 7, 30);  // rest of the chunk, "\r\n0\r\n\r\n"
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  EXPECT_EQ(h.exchange(0).response->body_bytes, 3u);
  EXPECT_FALSE(h.exchange(0).response->body_complete);
  EXPECT_EQ(h.exchange(0).response->end_ns, 30u);
  h.Request(1, "GET /next HTTP/1.1\r\n\r\n", 40);
  h.Response(1, kOk2, 50);
  ASSERT_EQ(h.sink.exchanges.size(), 2u);
  EXPECT_EQ(h.exchange(1).request.head.target(), "/next");
  EXPECT_EQ(h.exchange(1).response->start_ns, 50u);
  EXPECT_EQ(h.exchange(1).response->body_bytes, 2u);
  h.Close(1, 60);
  EXPECT_EQ(h.tracker.stats().http_resyncs, 1u);
  EXPECT_EQ(h.tracker.stats().http_orphan_responses, 0u);
}

// ---- The conversation on its own, with several calls buffered before it parses.

TEST(Http1ConversationTest, MessagesAreTimedByTheirOwnCalls) {
  ByteStream requests, responses;
  const std::string a = "GET /a HTTP/1.1\r\n\r\n";
  const std::string b = "GET /b HTTP/1.1\r\n\r\n";
  requests.Add(0, a.size(), 0, a, 10, 1);
  requests.Add(a.size(), b.size(), 0, b, 20, 2);
  responses.Add(0, kOk2.size(), 0, kOk2, 30, 3);
  responses.Add(kOk2.size(), kOk2.size(), 0, kOk2, 40, 4);
  Http1Conversation conversation;
  std::vector<HttpExchange> done;
  std::vector<HttpMessageRecord> started;
  const RequestStarted record_started = [&started](const HttpMessageRecord& request) { started.push_back(request); };
  conversation.Process(requests, responses, &done, &record_started);
  ASSERT_EQ(started.size(), 2u);
  EXPECT_EQ(started[0].tid, 1u);
  EXPECT_EQ(started[1].tid, 2u);
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].request.head.target(), "/a");
  EXPECT_EQ(done[0].request.start_ns, 10u);
  EXPECT_EQ(done[0].request.end_ns, 10u);
  EXPECT_EQ(done[0].response->start_ns, 30u);
  EXPECT_EQ(done[0].response->end_ns, 30u);
  EXPECT_EQ(done[0].response->tid, 3u);
  EXPECT_EQ(done[1].request.head.target(), "/b");
  EXPECT_EQ(done[1].request.end_ns, 20u);
  EXPECT_EQ(done[1].response->end_ns, 40u);
  EXPECT_EQ(conversation.pending_requests(), 0u);
  EXPECT_TRUE(requests.empty());
  EXPECT_TRUE(responses.empty());
}

TEST(Http1ConversationTest, PendingRequestsAreBounded) {
  ByteStream requests, responses;
  std::string many;
  for (size_t i = 0; i < Http1Conversation::kMaxPendingRequests + 2; ++i)
    many += "GET /" + std::to_string(i) + " HTTP/1.1\r\n\r\n";
  requests.Add(0, many.size(), 0, many, 10, 1);
  Http1Conversation conversation;
  std::vector<HttpExchange> done;
  conversation.Process(requests, responses, &done);
  EXPECT_EQ(conversation.pending_requests(), Http1Conversation::kMaxPendingRequests);
  EXPECT_EQ(conversation.stats().pending_overflow, 2u);
  responses.Add(0, kOk2.size(), 0, kOk2, 20, 1);
  conversation.Process(requests, responses, &done);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].request.head.target(), "/2");  // the two oldest were dropped
  EXPECT_EQ(done[0].request.request_index, 2u);
}

// ---- Load shedding (the CPU budget).

TEST(ConnectionShareKeyTest, BothEndsOfAConnectionShareTheKey) {
  ft_tuple server = records::LoopbackTuple();
  ft_tuple client = server;
  std::swap(client.local_port, client.remote_port);
  std::swap(client.local_addr, client.remote_addr);
  EXPECT_EQ(ConnectionShareKey(server), ConnectionShareKey(client));
  EXPECT_LT(ConnectionShareKey(server), kAllConnectionsTraced);
  // Client ports a few apart fall all over the range: a share traces about that share.
  size_t below_quarter = 0;
  for (uint16_t port = 40000; port < 44000; ++port) {
    client.local_port = port;
    if (ConnectionShareKey(client) < kAllConnectionsTraced / 4) ++below_quarter;
  }
  EXPECT_GT(below_quarter, 850u);
  EXPECT_LT(below_quarter, 1150u);
}

TEST(ConnectionTrackerTest, ConnectionOutsideTheTracedShareIsIgnoredFromItsOpen) {
  Harness h;
  const uint32_t key = ConnectionShareKey(records::LoopbackTuple());
  h.tracker.SetTracedShare(key, 0);  // traced: keys below `key` only
  h.Open(7, FT_ROLE_SERVER);
  ASSERT_EQ(h.control.sets.size(), 1u);
  EXPECT_EQ(h.control.sets[0].first, 7u);
  EXPECT_EQ(h.control.sets[0].second.flags, FT_CONTROL_IGNORE);
  // What the kernel sent before it read the control is dropped.
  h.Request(7, "GET /a HTTP/1.1\r\n\r\n", 10);
  h.Response(7, kOk2, 20);
  EXPECT_TRUE(h.sink.started.empty());
  EXPECT_TRUE(h.sink.exchanges.empty());
  EXPECT_EQ(h.tracker.stats().connections_shed, 1u);
  EXPECT_EQ(h.tracker.stats().requests_shed, 0u);
  h.Close(7, 30);
  EXPECT_EQ(h.control.forgets, std::vector<uint64_t>{7});
}

TEST(ConnectionTrackerTest, ShedWhileARequestBodyIsReadLosesThatRequestAndKeepsNumbering) {
  Harness h;
  const uint32_t key = ConnectionShareKey(records::LoopbackTuple());
  h.Open(7, FT_ROLE_SERVER);
  h.Request(7, "POST /upload HTTP/1.1\r\nContent-Length: 10\r\n\r\nhalf", 10);
  ASSERT_EQ(h.sink.started.size(), 1u);
  h.tracker.SetTracedShare(key, 35);
  EXPECT_EQ(h.tracker.stats().requests_shed, 1u);
  EXPECT_EQ(h.sink.order.back(), "forgotten");
  h.tracker.SetTracedShare(kAllConnectionsTraced, 45);
  h.Request(7, "GET /next HTTP/1.1\r\n\r\n", 20);
  ASSERT_EQ(h.sink.started.size(), 2u);
  // Ids are keyed by (connection, request number): a restart must not reuse a number.
  EXPECT_EQ(h.sink.started[1].second.request_index, 1u);
}

TEST(ConnectionTrackerTest, ShedMidRequestThenTracedAgainAtTheNextRequest) {
  Harness h;
  const uint32_t key = ConnectionShareKey(records::LoopbackTuple());
  h.Open(7, FT_ROLE_SERVER);
  h.Request(7, "GET /first HTTP/1.1\r\n\r\n", 10);
  h.Response(7, kOk2, 20);
  h.Request(7, "GET /cut HTTP/1.1\r\n\r\n", 30);
  ASSERT_EQ(h.sink.exchanges.size(), 1u);
  ASSERT_EQ(h.sink.started.size(), 2u);

  h.tracker.SetTracedShare(key, 35);
  EXPECT_EQ(h.tracker.stats().connections_shed, 1u);
  EXPECT_EQ(h.tracker.stats().requests_shed, 1u);  // /cut never gets its span
  EXPECT_EQ(h.sink.order.back(), "forgotten");      // the assembler drops it too
  ASSERT_EQ(h.control.sets.size(), 1u);
  EXPECT_EQ(h.control.sets.back().second.flags, FT_CONTROL_IGNORE);

  // While shed, the kernel copies nothing: only stream offsets move on.
  h.SendUncaptured(7, FT_DIR_EGRESS, static_cast<uint32_t>(kOk2.size()), 40);
  h.tracker.SetTracedShare(kAllConnectionsTraced, 45);
  ASSERT_EQ(h.control.sets.size(), 2u);
  EXPECT_EQ(h.control.sets.back().second.flags, 0u);
  h.Request(7, "GET /again HTTP/1.1\r\n\r\n", 50);
  h.Response(7, kOk2, 60);
  ASSERT_EQ(h.sink.exchanges.size(), 2u);
  EXPECT_EQ(h.exchange(1).request.head.target(), "/again");
  ASSERT_TRUE(h.exchange(1).response.has_value());
  EXPECT_EQ(h.exchange(1).response->head.status_code, 200);
  // Resuming is not a loss: no resync, no orphan response.
  h.Close(7, 70);
  EXPECT_EQ(h.tracker.stats().http_resyncs, 0u);
  EXPECT_EQ(h.tracker.stats().http_orphan_responses, 0u);
}

}  // namespace
}  // namespace flowtracer::conntrack
