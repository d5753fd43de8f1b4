#include "exporters/otlp_metrics/metrics_exporter.h"

#include <spdlog/spdlog.h>

namespace flowtracer::exporters::otlp_metrics {

namespace pb = opentelemetry::proto;

OtlpMetricsExporter::OtlpMetricsExporter(const otlp::OtlpExporterOptions& options,
                                         std::unique_ptr<otlp::Transport> transport, Temporality temporality,
                                         uint64_t interval_ms, ResourceOptions resource, SnapshotSource source)
    : interval_ms_(interval_ms),
      encoder_(temporality, std::move(resource)),
      source_(std::move(source)),
      sender_(std::move(transport), otlp::RetryPolicyFor(options, otlp::Signal::kMetrics)) {
  thread_ = std::thread([this] { Run(); });
}

OtlpMetricsExporter::~OtlpMetricsExporter() { Shutdown(0); }

void OtlpMetricsExporter::Run() {
  std::unique_lock lock(mutex_);
  while (true) {
    const bool stop = wake_.wait_for(lock, std::chrono::milliseconds(interval_ms_), [this] { return stopping_; });
    lock.unlock();
    ExportOnce();  // on stop too: the last interval's data
    lock.lock();
    if (stop) break;
  }
}

void OtlpMetricsExporter::ExportOnce() {
  pb::collector::metrics::v1::ExportMetricsServiceRequest request;
  const size_t points = encoder_.Encode(source_(), &request);
  if (points == 0) return;
  const std::string bytes = request.SerializeAsString();
  const std::string_view piece = bytes;
  otlp::SendOutcome outcome = sender_.Send({&piece, 1});
  std::lock_guard lock(mutex_);
  if (outcome.last.outcome != otlp::SendResult::Outcome::kSuccess) {
    ++stats_.export_failures;
    stats_.points_dropped += points;
    spdlog::warn("OTLP metrics export to {} failed: {}", sender_.transport().Describe(), outcome.last.error);
    return;
  }
  uint64_t rejected = 0;
  pb::collector::metrics::v1::ExportMetricsServiceResponse response;
  if (!outcome.last.response.empty() && response.ParseFromString(outcome.last.response) &&
      response.has_partial_success()) {
    rejected = std::min<uint64_t>(points, std::max<int64_t>(0, response.partial_success().rejected_data_points()));
    if (rejected || !response.partial_success().error_message().empty())
      spdlog::warn("OTLP receiver rejected {} of {} metric points: {}", rejected, points,
                   response.partial_success().error_message());
  }
  ++stats_.exports;
  stats_.points_exported += points - rejected;
  stats_.points_dropped += rejected;
}

void OtlpMetricsExporter::Shutdown(uint64_t timeout_ms) {
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
    stopping_ = true;
  }
  sender_.SetDeadline(otlp::RetryingSender::Clock::now() + std::chrono::milliseconds(timeout_ms));
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

MetricsExportStats OtlpMetricsExporter::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace flowtracer::exporters::otlp_metrics
