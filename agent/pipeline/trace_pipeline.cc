#include "agent/pipeline/trace_pipeline.h"

#include <time.h>

#include <cstring>
#include <string_view>
#include <utility>

#include <spdlog/spdlog.h>

namespace flowtracer::pipeline {

TracePipeline::TracePipeline(PipelineOptions options, process::ProcessRegistry* processes,
                             spans::SpanAssembler::SpanHandler on_span, conntrack::KernelControl* control,
                             spans::MessagingAssembler::HopHandler on_message_hop)
    : processes_(processes),
      http_(options.http, processes, on_span),
      messaging_(options.messaging, processes, &http_, on_span, std::move(on_message_hop)),
      tracker_(options.tracker, &messaging_, control),
      shedder_(options.max_cpu_percent) {}

namespace {
double ProcessCpuSeconds() {
  timespec cpu{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
  return static_cast<double>(cpu.tv_sec) + static_cast<double>(cpu.tv_nsec) / 1e9;
}
}  // namespace

void TracePipeline::OnRecord(const void* data, size_t size) {
  if (shedder_.enabled() && !shedder_.primed() && size >= sizeof(ft_event_header)) {
    // Records carry the kernel's clock, the one Tick is given.
    ft_event_header header;
    std::memcpy(&header, data, sizeof(header));
    shedder_.Prime(ProcessCpuSeconds(), header.timestamp_ns);
  }
  // Only the type is read on the hot path: data records are the common case.
  uint32_t type = 0;
  if (size >= sizeof(ft_conn_event)) std::memcpy(&type, data, sizeof(type));
  if (type == FT_EVENT_CONN_OPEN) {
    ft_conn_event open;
    std::memcpy(&open, data, sizeof(open));
    // Read the process now, while it surely exists: one that exits right after its calls
    // (a batch job, a CLI) would otherwise be named by its comm when its spans are built.
    processes_->Get(open.header.pid, std::string_view(open.comm, strnlen(open.comm, sizeof(open.comm))));
  }
  tracker_.OnRecord(data, size);
}

void TracePipeline::Tick(uint64_t now_ns) {
  if (shedder_.enabled()) {
    const uint32_t before = tracker_.traced_share();
    const uint32_t share = shedder_.Update(ProcessCpuSeconds(), now_ns);
    if (share != before) {
      tracker_.SetTracedShare(share, now_ns);
      spdlog::info("CPU {:.1f}% of a core (budget {:.1f}%): tracing {:.1f}% of connections",
                   100 * shedder_.last_cpu(), 100 * shedder_.max_cpu(),
                   100.0 * share / conntrack::kAllConnectionsTraced);
    }
  }
  tracker_.Tick(now_ns);
  http_.Tick(now_ns);
  messaging_.Tick(now_ns);
}

uint64_t TracePipeline::Flush() {
  uint64_t in_flight = 0;
  tracker_.Flush(&in_flight);
  http_.Flush();
  messaging_.Flush();
  return in_flight;
}

std::vector<PipelineAnomaly> TracePipeline::Anomalies() const {
  const conntrack::TrackerStats& t = tracker_.stats();
  const spans::AssemblerStats& h = http_.stats();
  const spans::MessagingStats& m = messaging_.stats();
  return {
      {"stream_buffer_overflow", "stream buffer overflows", t.stream_overflow_drops},
      {"connection_evicted_table_full", "connections evicted (table full)", t.connections_evicted_full},
      {"connection_close_missed", "connections whose close was not seen (socket gone)", t.connections_close_missed},
      {"http_resync", "HTTP resynchronisations", t.http_resyncs},
      {"http_orphan_response", "HTTP responses without a request", t.http_orphan_responses},
      {"http_late_response", "HTTP responses after their request timed out", t.http_late_responses},
      {"http_pending_overflow", "HTTP requests dropped (too many awaiting responses)", t.http_pending_overflow},
      {"nats_resync", "NATS resynchronisations", t.nats_resyncs},
      {"nats_message_without_fingerprint", "NATS messages without a fingerprint (body not captured)",
       t.nats_messages_without_fingerprint},
      {"nats_uncaptured_bytes", "NATS bytes not captured (messages in them lost)", t.nats_uncaptured_bytes},
      {"nats_delivery_unlinked", "NATS deliveries linked to no publish", m.deliveries_unlinked},
      {"nats_publish_dropped_table_full", "NATS publishes dropped (match table full)", m.publishes_dropped_table_full},
      {"nats_consumer_dropped_table_full", "NATS consumers ended early (table full)", m.consumers_dropped_table_full},
      {"route_overflow", "routes folded into {overflow}", http_.routes().overflow_count()},
      {"open_request_dropped_table_full", "requests without decided ids (table full)", h.open_requests_dropped},
      {"held_span_forced_out_age", "spans sent before their trace settled: too old", h.held_spans_forced_out_age},
      {"held_span_forced_out_count", "spans sent before their trace settled: too many", h.held_spans_forced_out_count},
      {"held_span_released_at_exit", "spans held until exit", h.held_spans_released_at_exit},
      {"event_loop_table_full", "event-loop processes not remembered (table full)", h.event_loop_table_full},
      {"same_host_not_linked", "same-host pairs not linked (ends in two traces)", h.same_host_not_linked},
      {"open_request_expired", "requests forgotten unanswered after 60 s", h.open_requests_expired},
      {"connection_shed", "connections left untraced to keep within --max-cpu", t.connections_shed},
      {"request_shed", "requests in flight on a connection when it was shed", t.requests_shed},
  };
}

}  // namespace flowtracer::pipeline
