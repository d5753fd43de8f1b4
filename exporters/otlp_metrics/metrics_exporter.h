// Sends metric snapshots as OTLP on an interval, on its own thread, through the same
// transports and retry policy as spans. Shutdown sends one last snapshot.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "exporters/otlp/otlp_options.h"
#include "exporters/otlp/retrying_sender.h"
#include "exporters/otlp_metrics/metric_encoder.h"

namespace flowtracer::exporters::otlp_metrics {

struct MetricsExportStats {
  uint64_t exports = 0;           // requests that reached the receiver
  uint64_t export_failures = 0;   // requests lost (retries exhausted or permanent error)
  uint64_t points_exported = 0;
  uint64_t points_dropped = 0;    // in failed requests, or rejected by the receiver
};

class OtlpMetricsExporter {
 public:
  using SnapshotSource = std::function<metrics::MetricsSnapshot()>;

  OtlpMetricsExporter(const otlp::OtlpExporterOptions& options, std::unique_ptr<otlp::Transport> transport,
                      Temporality temporality, uint64_t interval_ms, ResourceOptions resource,
                      SnapshotSource source);
  ~OtlpMetricsExporter();  // Shutdown(0) if not done

  // Sends a last snapshot within timeout_ms, then stops.
  void Shutdown(uint64_t timeout_ms);

  MetricsExportStats stats() const;
  std::string Describe() { return sender_.transport().Describe(); }

 private:
  void Run();
  void ExportOnce();

  uint64_t interval_ms_;
  MetricsEncoder encoder_;
  SnapshotSource source_;
  otlp::RetryingSender sender_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool stopped_ = false;
  MetricsExportStats stats_;
  std::thread thread_;
};

}  // namespace flowtracer::exporters::otlp_metrics
