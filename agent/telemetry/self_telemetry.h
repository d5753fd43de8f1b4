// The agent's own counters: what it saw, what it lost (per reason), what it exported.
// Written by the capture and export threads (relaxed atomics), read by anyone: the
// shutdown log and the metrics exporter. Names are a contract (README, "Self-telemetry").
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace flowtracer::telemetry {

// Adds to a counter that only the calling thread writes: a plain load and store instead of
// a locked add, which waits for every store before it to drain (per span, after the span's
// bytes were written). Readers on other threads still see whole values.
inline void AddAsSoleWriter(std::atomic<uint64_t>& counter, uint64_t n = 1) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

struct SelfTelemetry {
  // Capture: kernel events and losses, refreshed from the kernel counters once a second.
  std::atomic<uint64_t> events_data{0};
  std::atomic<uint64_t> events_connection{0};
  std::atomic<uint64_t> events_lost_ring_buffer_full{0};
  std::atomic<uint64_t> events_lost_connection_table_full{0};
  std::atomic<uint64_t> events_lost_user_memory_unreadable{0};
  std::atomic<uint64_t> events_lost_syscall_stash_full{0};
  // Userspace: records it could not use.
  std::atomic<uint64_t> events_lost_malformed{0};
  std::atomic<uint64_t> events_lost_unknown_connection{0};
  std::atomic<uint64_t> stream_gap_bytes{0};
  // Share of connections traced under the CPU budget (--max-cpu), rounded up; gauge.
  std::atomic<uint64_t> connections_traced_percent{100};

  // Spans.
  std::atomic<uint64_t> spans_produced{0};  // by the capture thread only
  std::atomic<uint64_t> spans_exported{0};
  std::atomic<uint64_t> spans_dropped_queue_full{0};     // oldest dropped to make room
  std::atomic<uint64_t> spans_dropped_export_failed{0};  // retries exhausted or permanent error
  std::atomic<uint64_t> spans_dropped_rejected{0};       // the receiver's partial_success
  std::atomic<uint64_t> spans_dropped_shutdown{0};       // still queued when the flush timed out
  std::atomic<uint64_t> export_requests{0};              // every attempt, retries included
  std::atomic<uint64_t> export_errors{0};                // attempts that failed
  std::atomic<uint64_t> queue_depth_spans{0};            // gauge

  // Losses and oddities of the userspace pipeline by reason (TracePipeline::Anomalies),
  // replaced whole by the capture thread on every tick.
  void SetPipelineAnomalies(std::vector<std::pair<std::string, uint64_t>> by_reason) {
    std::lock_guard<std::mutex> lock(anomalies_mutex_);
    pipeline_anomalies_ = std::move(by_reason);
  }

  enum class Kind { kCounter, kGauge };
  struct Value {
    std::string name;    // e.g. "flowtracer.spans.dropped"
    std::string reason;  // attribute value for per-reason counters, else empty
    Kind kind;
    uint64_t value;
  };
  // Every value with its stable name, for logs and metrics.
  std::vector<Value> Snapshot() const;

 private:
  mutable std::mutex anomalies_mutex_;
  std::vector<std::pair<std::string, uint64_t>> pipeline_anomalies_;
};

}  // namespace flowtracer::telemetry
