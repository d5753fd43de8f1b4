#include "agent/pipeline/trace_pipeline.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "tests/unit/kernel_records.h"

namespace flowtracer::pipeline {
namespace {

using records::ConnRecord;
using records::DataRecord;

struct Replay {
  explicit Replay(std::string proc_root = "/proc") : processes(std::move(proc_root)) {}
  process::ProcessRegistry processes;
  std::vector<spans::Span> spans;
  TracePipeline pipeline{PipelineOptions{}, &processes, [this](const spans::Span& span) { spans.push_back(span); },
                         nullptr};
  uint64_t position[2] = {0, 0};

  void Feed(const std::string& record) { pipeline.OnRecord(record.data(), record.size()); }
  void Send(ft_direction direction, std::string_view bytes, uint64_t ts) {
    Feed(DataRecord(1, direction, position[direction], bytes, ts, 4242, static_cast<uint32_t>(bytes.size())));
    position[direction] += bytes.size();
  }
};

TEST(TracePipelineTest, RecordsBecomeSpansAndFlushEndsThem) {
  Replay run;
  run.Feed(ConnRecord(FT_EVENT_CONN_OPEN, 1, 1000, FT_ROLE_SERVER));
  run.Send(FT_DIR_INGRESS, "GET /users/42 HTTP/1.1\r\nHost: x\r\n\r\n", 2000);
  run.Send(FT_DIR_EGRESS, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 5000);
  run.Send(FT_DIR_INGRESS, "GET /never HTTP/1.1\r\n\r\n", 6000);
  run.pipeline.Tick(7000);
  EXPECT_EQ(run.pipeline.Flush(), 1u);  // /never is still awaiting its response
  ASSERT_EQ(run.spans.size(), 1u);
  EXPECT_EQ(run.spans[0].name, "GET /users/{id}");
  EXPECT_EQ(run.spans[0].kind, spans::SpanKind::kServer);
  EXPECT_EQ(run.spans[0].end_unix_ns - run.spans[0].start_unix_ns, 3000u);
}

TEST(TracePipelineTest, AConnectionDroppedWithoutACloseEndsItsRequestsInTheAssembler) {
  // The tracker forgets a connection (here to make room; also by idle age, a socket found
  // gone, or shedding): the span assembler must forget its unfinished requests then, not
  // keep them in flight (a wrong parent for later work on the thread) until they expire.
  PipelineOptions options;
  options.tracker.max_connections = 1;
  process::ProcessRegistry processes;
  std::vector<spans::Span> spans;
  TracePipeline pipeline(options, &processes, [&](const spans::Span& span) { spans.push_back(span); }, nullptr);
  auto feed = [&](const std::string& record) { pipeline.OnRecord(record.data(), record.size()); };
  feed(ConnRecord(FT_EVENT_CONN_OPEN, 1, 1000, FT_ROLE_SERVER));
  const std::string_view request = "GET /never HTTP/1.1\r\n\r\n";
  feed(DataRecord(1, FT_DIR_INGRESS, 0, request, 2000, 4242, static_cast<uint32_t>(request.size())));
  feed(ConnRecord(FT_EVENT_CONN_OPEN, 2, 3000, FT_ROLE_SERVER));  // evicts connection 1
  EXPECT_EQ(pipeline.tracker_stats().connections_evicted_full, 1u);
  pipeline.Tick(120ull * 1000 * 1000 * 1000);  // past the assembler's age for open requests (60 s)
  uint64_t expired = ~0ull;
  for (const PipelineAnomaly& anomaly : pipeline.Anomalies())
    if (anomaly.reason == "open_request_expired") expired = anomaly.value;
  EXPECT_EQ(expired, 0u);
  pipeline.Flush();
  EXPECT_TRUE(spans.empty());
}

TEST(TracePipelineTest, ProcessIsReadWhenItsConnectionOpens) {
  // A short-lived client: by the time its spans are built its /proc entry is gone.
  char root_template[] = "/tmp/flowtracer_pipeline_proc_XXXXXX";
  ASSERT_NE(::mkdtemp(root_template), nullptr);
  const std::filesystem::path root = root_template;
  std::filesystem::create_directories(root / "4242");
  std::ofstream(root / "4242" / "environ", std::ios::binary) << std::string("OTEL_SERVICE_NAME=batch-job\0", 28);
  std::ofstream(root / "4242" / "cmdline", std::ios::binary) << std::string("python3\0job.py\0", 15);
  std::ofstream(root / "4242" / "comm") << "python3\n";
  Replay run(root.string());
  run.Feed(ConnRecord(FT_EVENT_CONN_OPEN, 1, 1000, FT_ROLE_CLIENT));
  std::filesystem::remove_all(root);  // the process exits
  run.Send(FT_DIR_EGRESS, "GET /report HTTP/1.1\r\n\r\n", 2000);
  run.Send(FT_DIR_INGRESS, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 3000);
  run.pipeline.Flush();
  ASSERT_EQ(run.spans.size(), 1u);
  EXPECT_EQ(run.spans[0].service, "batch-job");
}

TEST(TracePipelineTest, AnomaliesHaveUniqueStableReasonsAndCount) {
  Replay run;
  run.Feed(ConnRecord(FT_EVENT_CONN_OPEN, 1, 1000, FT_ROLE_SERVER));
  run.Send(FT_DIR_EGRESS, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2000);  // no request seen
  run.Send(FT_DIR_INGRESS, "GET / HTTP/1.1\r\n\r\n", 3000);
  run.Send(FT_DIR_EGRESS, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4000);
  run.pipeline.Flush();
  std::set<std::string> reasons;
  uint64_t orphans = 0;
  for (const PipelineAnomaly& anomaly : run.pipeline.Anomalies()) {
    EXPECT_TRUE(reasons.insert(anomaly.reason).second) << anomaly.reason;
    EXPECT_EQ(anomaly.reason.find_first_not_of("abcdefghijklmnopqrstuvwxyz_"), std::string::npos) << anomaly.reason;
    EXPECT_FALSE(anomaly.description.empty());
    if (anomaly.reason == "http_orphan_response") orphans = anomaly.value;
  }
  EXPECT_EQ(orphans, 1u);
}

}  // namespace
}  // namespace flowtracer::pipeline
