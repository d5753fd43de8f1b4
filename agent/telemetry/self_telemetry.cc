#include "agent/telemetry/self_telemetry.h"

namespace flowtracer::telemetry {

std::vector<SelfTelemetry::Value> SelfTelemetry::Snapshot() const {
  auto get = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };
  const Kind c = Kind::kCounter;
  std::vector<Value> values = {
      {"flowtracer.events.seen", "data", c, get(events_data)},
      {"flowtracer.events.seen", "connection", c, get(events_connection)},
      {"flowtracer.events.lost", "ring_buffer_full", c, get(events_lost_ring_buffer_full)},
      {"flowtracer.events.lost", "connection_table_full", c, get(events_lost_connection_table_full)},
      {"flowtracer.events.lost", "user_memory_unreadable", c, get(events_lost_user_memory_unreadable)},
      {"flowtracer.events.lost", "syscall_stash_full", c, get(events_lost_syscall_stash_full)},
      {"flowtracer.events.lost", "malformed", c, get(events_lost_malformed)},
      {"flowtracer.events.lost", "unknown_connection", c, get(events_lost_unknown_connection)},
      {"flowtracer.stream.gap_bytes", "", c, get(stream_gap_bytes)},
      {"flowtracer.connections.traced_percent", "", Kind::kGauge, get(connections_traced_percent)},
      {"flowtracer.spans.produced", "", c, get(spans_produced)},
      {"flowtracer.spans.exported", "", c, get(spans_exported)},
      {"flowtracer.spans.dropped", "queue_full", c, get(spans_dropped_queue_full)},
      {"flowtracer.spans.dropped", "export_failed", c, get(spans_dropped_export_failed)},
      {"flowtracer.spans.dropped", "rejected", c, get(spans_dropped_rejected)},
      {"flowtracer.spans.dropped", "shutdown", c, get(spans_dropped_shutdown)},
      {"flowtracer.export.requests", "", c, get(export_requests)},
      {"flowtracer.export.errors", "", c, get(export_errors)},
      {"flowtracer.export.queue_depth", "", Kind::kGauge, get(queue_depth_spans)},
  };
  std::lock_guard<std::mutex> lock(anomalies_mutex_);
  for (const auto& [reason, value] : pipeline_anomalies_) values.push_back({"flowtracer.pipeline.anomalies", reason, c, value});
  return values;
}

}  // namespace flowtracer::telemetry
