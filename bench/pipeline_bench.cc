// Userspace pipeline throughput: ring buffer records, as the kernel writes them, through
// connection tracking, HTTP/1 parsing, request/response stitching and span building.
// Events/s is the `items_per_second` column; `ns_per_span` is the cost of one span,
// every record that led to it included.
//
// Records of one round are generated once; each iteration replays the round with
// stream offsets, timestamps and (for churn) connection ids moved forward, so the
// tracker sees a continuing, valid stream and no generation cost is measured.
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "agent/conntrack/connection_tracker.h"
#include "agent/metrics/span_metrics.h"
#include "agent/process/process_info.h"
#include "agent/spans/span_assembler.h"
#include "agent/telemetry/self_telemetry.h"
#include "exporters/otlp/span_exporter.h"

namespace flowtracer {
namespace {

constexpr uint32_t kClientPid = 1000;
constexpr uint32_t kServerPid = 2000;
constexpr uint16_t kServerPort = 8080;
constexpr uint64_t kCallSpacingNs = 1000;
constexpr uint64_t kFirstTimeNs = 1'000'000'000;

struct RecordPatch {
  size_t offset = 0;            // into the round's arena
  size_t size = 0;
  bool data = false;
  uint64_t position = 0;        // data records: offset in the round's first replay
  uint64_t advance_per_round = 0;
  uint64_t conn_id = 0;
  uint64_t timestamp_ns = 0;
};

// A round of records plus what moves between rounds.
class RecordRound {
 public:
  void Conn(uint32_t type, uint64_t conn_id, ft_role role, uint32_t pid, uint16_t local_port,
            uint16_t remote_port) {
    ft_conn_event event{};
    event.header.type = type;
    event.header.pid = pid;
    event.header.tid = pid;
    event.header.timestamp_ns = NextTime();
    event.header.conn_id = conn_id;
    for (uint8_t* address : {event.tuple.local_addr, event.tuple.remote_addr}) {
      address[10] = address[11] = 0xff;
      address[12] = 127;
      address[15] = 1;
    }
    event.tuple.local_port = local_port;
    event.tuple.remote_port = remote_port;
    event.tuple.family = 2;
    event.role = static_cast<uint8_t>(role);
    std::memcpy(event.comm, pid == kServerPid ? "nginx" : "wrk", pid == kServerPid ? 5 : 3);
    Append(&event, sizeof(event), {}, RecordPatch{.conn_id = conn_id, .timestamp_ns = event.header.timestamp_ns});
  }

  // `position` is the offset at the first replay; `advance` how far the direction moves
  // per round (its bytes per round for keep-alive connections, 0 for fresh ones).
  void Data(uint64_t conn_id, ft_direction direction, uint32_t pid, uint64_t position,
            std::string_view payload, uint64_t advance) {
    ft_data_event event{};
    event.header.type = FT_EVENT_DATA;
    event.header.pid = pid;
    event.header.tid = pid;
    event.header.timestamp_ns = NextTime();
    event.header.conn_id = conn_id;
    event.position = position;
    event.length = static_cast<uint32_t>(payload.size());
    event.payload_bytes = static_cast<uint32_t>(payload.size());
    event.fd = 7;
    event.direction = static_cast<uint8_t>(direction);
    event.io_call = direction == FT_DIR_EGRESS ? FT_IO_WRITEV : FT_IO_RECVFROM;
    event.hook = FT_HOOK_SOCKET_TRACEPOINTS;
    ++data_records_;
    Append(&event, sizeof(event), payload,
           RecordPatch{.data = true, .position = position, .advance_per_round = advance,
                       .conn_id = conn_id, .timestamp_ns = event.header.timestamp_ns});
  }

  // Moves the round forward to replay number `round` (0 is as generated).
  void PrepareRound(uint64_t round, uint64_t conn_id_stride) {
    uint64_t time_shift = round * (next_time_ns_ - kFirstTimeNs + kCallSpacingNs);
    for (const RecordPatch& patch : patches_) {
      char* record = arena_.data() + patch.offset;
      uint64_t timestamp = patch.timestamp_ns + time_shift;
      uint64_t conn_id = patch.conn_id + round * conn_id_stride;
      std::memcpy(record + offsetof(ft_event_header, timestamp_ns), &timestamp, sizeof(timestamp));
      std::memcpy(record + offsetof(ft_event_header, conn_id), &conn_id, sizeof(conn_id));
      if (patch.data) {
        uint64_t position = patch.position + round * patch.advance_per_round;
        std::memcpy(record + offsetof(ft_data_event, position), &position, sizeof(position));
      }
    }
  }

  template <typename Fn>
  void ForEach(Fn fn) const {
    for (const RecordPatch& patch : patches_) fn(arena_.data() + patch.offset, patch.size);
  }

  size_t records() const { return patches_.size(); }
  size_t data_records() const { return data_records_; }
  size_t bytes() const { return arena_.size(); }

 private:
  uint64_t NextTime() { return next_time_ns_ += kCallSpacingNs; }
  void Append(const void* header, size_t header_size, std::string_view payload, RecordPatch patch) {
    // Records start 8-byte aligned, as in the BPF ring buffer.
    arena_.resize((arena_.size() + 7) & ~size_t{7});
    patch.offset = arena_.size();
    patch.size = header_size + payload.size();
    arena_.append(static_cast<const char*>(header), header_size);
    arena_.append(payload);
    patches_.push_back(patch);
  }

  std::string arena_;
  std::vector<RecordPatch> patches_;
  uint64_t next_time_ns_ = kFirstTimeNs;
  size_t data_records_ = 0;
};

std::string SmallRequest(int connection, int request) {
  return "GET /api/users/" + std::to_string(connection * 1000 + request) +
         "?fields=name HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk/4.2\r\nAccept: */*\r\n\r\n";
}

std::string SmallResponse() {
  return "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 19:00:00 GMT\r\n"
         "Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\n"
         "hello, world\n";
}

// About 8 KiB of head: browsers' cookies and forwarded-for chains, still one write.
std::string LargeRequest(int connection, int request) {
  std::string head = "POST /api/orders/" + std::to_string(connection * 1000 + request) +
                     "/items HTTP/1.1\r\nHost: shop.example.com\r\n"
                     "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n"
                     "Content-Type: application/json\r\nContent-Length: 2\r\n"
                     "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n";
  for (int i = 0; i < 24; ++i) {
    head += "X-Custom-Header-" + std::to_string(i) + ": " + std::string(120, 'a' + i % 26) + "\r\n";
  }
  head += "Cookie: session=" + std::string(4096, 'c') + "\r\n\r\n{}";
  return head;
}

struct Pipeline {
  // `sink` sees every span; by default nothing is done with it.
  explicit Pipeline(spans::SpanAssembler::SpanHandler sink = {}) : sink_(std::move(sink)) {}

  process::ProcessRegistry processes{"/nonexistent-proc"};  // no /proc reads: names from comm
  uint64_t spans = 0;
  spans::SpanAssembler::SpanHandler sink_;
  spans::SpanAssembler assembler{{}, &processes, [this](const spans::Span& span) {
                                   ++spans;
                                   benchmark::DoNotOptimize(span.attributes.data());
                                   if (sink_) sink_(span);
                                 }};
  conntrack::ConnectionTracker tracker{{}, &assembler};
};

// Takes every request, as a collector that keeps up does; nothing leaves the process.
class AcceptingTransport : public exporters::otlp::Transport {
 public:
  exporters::otlp::SendResult Send(exporters::otlp::RequestPieces request, uint64_t) override {
    benchmark::DoNotOptimize(request.data());
    return {exporters::otlp::SendResult::Outcome::kSuccess, {}, {}, {}};
  }
  std::string Describe() const override { return "accepting"; }
};

// What `flowtracer agent` does with each span: span metrics (RED and service graph) and
// the OTLP span exporter (encoding, queue, batching on its thread, a transport that
// accepts everything).
struct AgentSinks {
  AgentSinks() {
    process::ProcessInfo info;
    info.pid = kServerPid;
    info.service_name = "nginx";
    resource = std::make_shared<exporters::otlp::Resource>(
        exporters::otlp::ProcessResource(info, "bench-host", 1, {}));
  }
  ~AgentSinks() { exporter.Shutdown(10'000); }

  void OnSpan(const spans::Span& span) {
    span_metrics.Add(span);
    exporter.Export(span, resource);
  }

  telemetry::SelfTelemetry telemetry;
  metrics::SpanMetrics span_metrics;
  exporters::otlp::OtlpSpanExporter exporter{{}, std::make_unique<AcceptingTransport>(), &telemetry};
  exporters::otlp::ResourcePtr resource;
};

void Report(benchmark::State& state, const RecordRound& round, const Pipeline& pipeline) {
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * round.records()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * round.bytes()));
  state.counters["ns_per_span"] = benchmark::Counter(
      static_cast<double>(pipeline.spans) / 1e9, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["spans"] = static_cast<double>(pipeline.spans);
  if (pipeline.tracker.stats().http_resyncs || pipeline.tracker.stats().gap_bytes ||
      pipeline.tracker.stats().malformed_records)
    state.SkipWithError("the generated stream did not parse cleanly");
}

// Long-lived keep-alive connections (nginx under wrk): `requests` exchanges per
// connection per round, request and response each in one call.
// Feeds `round` to the pipeline once per iteration (renumbered by PrepareRound, outside
// the timing), then reports.
void Replay(benchmark::State& state, RecordRound& round, Pipeline& pipeline, uint64_t conn_id_stride) {
  uint64_t replay = 0;
  for (auto _ : state) {
    state.PauseTiming();
    round.PrepareRound(replay++, conn_id_stride);
    state.ResumeTiming();
    round.ForEach([&](const char* record, size_t size) { pipeline.tracker.OnRecord(record, size); });
  }
  Report(state, round, pipeline);
}

void KeepAlive(benchmark::State& state, bool large_headers) {
  const int connections = static_cast<int>(state.range(0));
  const int requests = 16;
  Pipeline pipeline;
  RecordRound open, round;
  for (int c = 0; c < connections; ++c)
    open.Conn(FT_EVENT_CONN_OPEN, c + 1, FT_ROLE_SERVER, kServerPid, kServerPort, 40000 + c);
  open.ForEach([&](const char* record, size_t size) { pipeline.tracker.OnRecord(record, size); });

  std::vector<uint64_t> in_bytes(connections), out_bytes(connections);
  std::vector<std::vector<std::string>> request_text(connections);
  for (int c = 0; c < connections; ++c)
    for (int r = 0; r < requests; ++r) {
      request_text[c].push_back(large_headers ? LargeRequest(c, r) : SmallRequest(c, r));
      in_bytes[c] += request_text[c].back().size();
      out_bytes[c] += SmallResponse().size();
    }
  std::vector<uint64_t> in_pos(connections), out_pos(connections);
  const std::string response = SmallResponse();
  for (int r = 0; r < requests; ++r)
    for (int c = 0; c < connections; ++c) {
      round.Data(c + 1, FT_DIR_INGRESS, kServerPid, in_pos[c], request_text[c][r], in_bytes[c]);
      in_pos[c] += request_text[c][r].size();
      round.Data(c + 1, FT_DIR_EGRESS, kServerPid, out_pos[c], response, out_bytes[c]);
      out_pos[c] += response.size();
    }

  Replay(state, round, pipeline, 0);
}

void BM_KeepAliveSmall(benchmark::State& state) { KeepAlive(state, false); }
void BM_KeepAliveLargeHeaders(benchmark::State& state) { KeepAlive(state, true); }

// Opens `connections` client/server pairs of one host in `pipeline` and returns a round of
// 16 keep-alive calls on each: four records per call (request and response, seen by both).
RecordRound SameHostRound(Pipeline& pipeline, int connections) {
  const int requests = 16;
  RecordRound open, round;
  for (int c = 0; c < connections; ++c) {
    uint16_t client_port = static_cast<uint16_t>(40000 + c);
    open.Conn(FT_EVENT_CONN_OPEN, 2 * c + 1, FT_ROLE_CLIENT, kClientPid, client_port, kServerPort);
    open.Conn(FT_EVENT_CONN_OPEN, 2 * c + 2, FT_ROLE_SERVER, kServerPid, kServerPort, client_port);
  }
  open.ForEach([&](const char* record, size_t size) { pipeline.tracker.OnRecord(record, size); });
  const std::string response = SmallResponse();
  std::vector<std::string> request_text(requests);
  uint64_t request_bytes = 0;
  for (int r = 0; r < requests; ++r) {
    request_text[r] = SmallRequest(0, r);
    request_bytes += request_text[r].size();
  }
  const uint64_t response_bytes = requests * response.size();
  uint64_t request_pos = 0, response_pos = 0;
  for (int r = 0; r < requests; ++r) {
    for (int c = 0; c < connections; ++c) {
      uint64_t client = 2 * c + 1, server = 2 * c + 2;
      round.Data(client, FT_DIR_EGRESS, kClientPid, request_pos, request_text[r], request_bytes);
      round.Data(server, FT_DIR_INGRESS, kServerPid, request_pos, request_text[r], request_bytes);
      round.Data(server, FT_DIR_EGRESS, kServerPid, response_pos, response, response_bytes);
      round.Data(client, FT_DIR_INGRESS, kClientPid, response_pos, response, response_bytes);
    }
    request_pos += request_text[r].size();
    response_pos += response.size();
  }
  return round;
}

// Two traced processes on one host: a client's request and the server's view of it
// are stitched into one trace (same-host pairing), four records and two spans per call.
void BM_SameHostStitched(benchmark::State& state) {
  const int connections = static_cast<int>(state.range(0));
  Pipeline pipeline;
  RecordRound round = SameHostRound(pipeline, connections);
  Replay(state, round, pipeline, 0);
  if (pipeline.assembler.stats().parent_from_same_host * 2 != pipeline.spans)
    state.SkipWithError("server spans were not stitched to their client spans");
}

// The same, with each span also going where `flowtracer agent` sends it: span metrics and
// the OTLP exporter (its thread's batching and encoding included, the network not).
void BM_SameHostStitchedExport(benchmark::State& state) {
  const int connections = static_cast<int>(state.range(0));
  AgentSinks sinks;
  Pipeline pipeline([&sinks](const spans::Span& span) { sinks.OnSpan(span); });
  RecordRound round = SameHostRound(pipeline, connections);
  Replay(state, round, pipeline, 0);
  if (!sinks.exporter.ForceFlush(10'000)) state.SkipWithError("the exporter did not drain its queue");
  if (sinks.span_metrics.stats().graph_pairs * 2 != pipeline.spans)
    state.SkipWithError("span metrics did not pair every client span with its server span");
}

// Connection churn: every connection opens, carries one exchange and closes.
void BM_ConnectionChurn(benchmark::State& state) {
  const int connections = static_cast<int>(state.range(0));
  Pipeline pipeline;
  RecordRound round;
  const std::string response = SmallResponse();
  for (int c = 0; c < connections; ++c) {
    std::string request = SmallRequest(c, 0);
    round.Conn(FT_EVENT_CONN_OPEN, c + 1, FT_ROLE_SERVER, kServerPid, kServerPort, 40000 + c);
    round.Data(c + 1, FT_DIR_INGRESS, kServerPid, 0, request, 0);
    round.Data(c + 1, FT_DIR_EGRESS, kServerPid, 0, response, 0);
    round.Conn(FT_EVENT_CONN_CLOSE, c + 1, FT_ROLE_SERVER, kServerPid, kServerPort, 40000 + c);
  }
  Replay(state, round, pipeline, connections);
  if (pipeline.tracker.connection_count() != 0) state.SkipWithError("closed connections were kept");
}

// The head parser alone, on the two request shapes above.
void BM_ParseHead(benchmark::State& state) {
  const std::string request = state.range(0) ? LargeRequest(1, 1) : SmallRequest(1, 1);
  http1::Message head;
  for (auto _ : state) {
    auto result = http1::ParseHead(http1::MessageType::kRequest, request, &head);
    benchmark::DoNotOptimize(result);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * request.size()));
  state.SetLabel(state.range(0) ? "large_headers" : "small");
}

BENCHMARK(BM_KeepAliveSmall)->Arg(64)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_KeepAliveLargeHeaders)->Arg(64)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SameHostStitched)->Arg(32)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SameHostStitchedExport)->Arg(32)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ConnectionChurn)->Arg(256)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ParseHead)->Arg(0)->Arg(1);

}  // namespace
}  // namespace flowtracer

BENCHMARK_MAIN();
