// Kernel records in, spans out: the connection tracker, the messaging and HTTP span
// assemblers, wired in the one order that works (the tracker feeds messaging, which
// passes HTTP on and lends its in-process messages as parents). Every command that
// traces uses this, so capture and the agent cannot drift apart.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/conntrack/connection_tracker.h"
#include "agent/pipeline/load_shedder.h"
#include "agent/process/process_info.h"
#include "agent/spans/messaging_assembler.h"
#include "agent/spans/span_assembler.h"

namespace flowtracer::pipeline {

// A loss or oddity of the userspace pipeline: `reason` is a stable snake_case name (the
// `reason` of the flowtracer.pipeline.anomalies self-metric), `description` is for people.
struct PipelineAnomaly {
  std::string reason;
  std::string description;
  uint64_t value = 0;
};

struct PipelineOptions {
  // CPU budget, percent of one core (LoadShedder); 0: none, every connection is traced.
  double max_cpu_percent = 0;
  conntrack::TrackerOptions tracker;
  spans::AssemblerOptions http;
  spans::MessagingOptions messaging;
};

class TracePipeline {
 public:
  TracePipeline(PipelineOptions options, process::ProcessRegistry* processes,
                spans::SpanAssembler::SpanHandler on_span, conntrack::KernelControl* control,
                spans::MessagingAssembler::HopHandler on_message_hop = {});
  TracePipeline(const TracePipeline&) = delete;
  TracePipeline& operator=(const TracePipeline&) = delete;

  void OnRecord(const void* data, size_t size);
  // Timeouts, idle connections, held spans and the CPU budget; `now_ns` on the kernel's
  // clock (CLOCK_MONOTONIC), about once a second.
  void Tick(uint64_t now_ns);
  // End of tracing: emits every span that can still be built and returns the requests
  // still awaiting a response (they are not emitted).
  uint64_t Flush();

  // Everything counted as lost or odd, except what the tracker's own stats name below.
  std::vector<PipelineAnomaly> Anomalies() const;
  const conntrack::TrackerStats& tracker_stats() const { return tracker_.stats(); }
  // Of 65536 (conntrack::kAllConnectionsTraced when no budget applies).
  uint32_t traced_share() const { return tracker_.traced_share(); }

 private:
  process::ProcessRegistry* processes_;
  spans::SpanAssembler http_;
  spans::MessagingAssembler messaging_;
  conntrack::ConnectionTracker tracker_;
  LoadShedder shedder_;
};

}  // namespace flowtracer::pipeline
