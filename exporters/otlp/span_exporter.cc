#include "exporters/otlp/span_exporter.h"

#include <opentelemetry/proto/collector/trace/v1/trace_service.pb.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace flowtracer::exporters::otlp {

OtlpSpanExporter::OtlpSpanExporter(const OtlpExporterOptions& options, std::unique_ptr<Transport> transport,
                                   telemetry::SelfTelemetry* telemetry)
    : options_(options),
      telemetry_(telemetry),
      sender_(std::move(transport), RetryPolicyFor(options, Signal::kTraces)) {
  if (options_.max_export_batch_spans == 0) options_.max_export_batch_spans = 1;
  if (options_.max_queue_spans < options_.max_export_batch_spans) options_.max_queue_spans = options_.max_export_batch_spans;
  thread_ = std::thread([this] { Run(); });
}

OtlpSpanExporter::~OtlpSpanExporter() { Shutdown(0); }

void OtlpSpanExporter::Export(const spans::Span& span, const ResourcePtr& resource) {
  // Encoded outside the lock, into the buffer the last queued span's slot gave back.
  thread_local WireBuffer message;
  EncodeSpan(span, &message);
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      telemetry_->spans_dropped_shutdown.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (queued_ == options_.max_queue_spans) {
      head_ = (head_ + 1) % slots_.size();
      --queued_;
      ++finished_total_;
      telemetry_->spans_dropped_queue_full.fetch_add(1, std::memory_order_relaxed);
    }
    if (queued_ == slots_.size()) {
      // Every slot is in use and the queue may still grow: make the ring contiguous from
      // slot 0 and add one. Happens only while the queue reaches a new high-water mark.
      std::rotate(slots_.begin(), slots_.begin() + head_, slots_.end());
      head_ = 0;
      slots_.emplace_back();
    }
    QueuedSpan& slot = slots_[(head_ + queued_) % slots_.size()];
    std::swap(slot.message, message);
    if (slot.resource != resource) slot.resource = resource;
    ++queued_;
    ++enqueued_total_;
    telemetry_->queue_depth_spans.store(queued_, std::memory_order_relaxed);
    wake = queued_ == options_.max_export_batch_spans;
  }
  if (wake) work_.notify_one();
}

bool OtlpSpanExporter::ForceFlush(uint64_t timeout_ms) {
  std::unique_lock lock(mutex_);
  uint64_t target = enqueued_total_;
  flush_requested_ = true;
  work_.notify_one();
  return done_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return finished_total_ >= target; });
}

void OtlpSpanExporter::Shutdown(uint64_t timeout_ms) {
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
    stopping_ = true;
  }
  sender_.SetDeadline(RetryingSender::Clock::now() + std::chrono::milliseconds(timeout_ms));
  work_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void OtlpSpanExporter::Run() {
  auto delay = std::chrono::milliseconds(options_.schedule_delay_ms);
  auto next_send = std::chrono::steady_clock::now() + delay;
  std::unique_lock lock(mutex_);
  while (true) {
    work_.wait_until(lock, next_send, [&] {
      return stopping_ || flush_requested_ || queued_ >= options_.max_export_batch_spans;
    });
    if (queued_ == 0) {
      flush_requested_ = false;
      if (stopping_) break;
      next_send = std::chrono::steady_clock::now() + delay;
      continue;
    }
    const size_t count = std::min<size_t>(queued_, options_.max_export_batch_spans);
    if (batch_.size() < count) batch_.resize(count);
    for (size_t i = 0; i < count; ++i) {
      // Swapped, not moved: the slot gets the batch entry's storage back for reuse.
      std::swap(batch_[i], slots_[head_]);
      head_ = (head_ + 1) % slots_.size();
    }
    queued_ -= count;
    telemetry_->queue_depth_spans.store(queued_, std::memory_order_relaxed);
    lock.unlock();
    SendBatch(count);
    lock.lock();
    finished_total_ += count;
    done_.notify_all();
    if (queued_ < options_.max_export_batch_spans) next_send = std::chrono::steady_clock::now() + delay;
  }
  done_.notify_all();
}

void OtlpSpanExporter::SendBatch(size_t count) {
  for (size_t i = 0; i < count; ++i) request_encoder_.Add(batch_[i].resource.get(), batch_[i].message.view());
  SendOutcome outcome = sender_.Send(request_encoder_.Finish());
  telemetry_->export_requests.fetch_add(outcome.attempts, std::memory_order_relaxed);
  telemetry_->export_errors.fetch_add(outcome.failed_attempts, std::memory_order_relaxed);
  if (outcome.last.outcome != SendResult::Outcome::kSuccess) {
    bool shutting_down = outcome.attempts == 0 || sender_.DeadlinePassed();
    (shutting_down ? telemetry_->spans_dropped_shutdown : telemetry_->spans_dropped_export_failed)
        .fetch_add(count, std::memory_order_relaxed);
    spdlog::warn("OTLP export to {} failed after {} attempt(s): {}; {} spans dropped", sender_.transport().Describe(),
                 outcome.attempts, outcome.last.error, count);
    return;
  }
  opentelemetry::proto::collector::trace::v1::ExportTraceServiceResponse response;
  uint64_t rejected = 0;
  if (!outcome.last.response.empty() && response.ParseFromString(outcome.last.response) && response.has_partial_success()) {
    rejected = std::min<uint64_t>(count, std::max<int64_t>(0, response.partial_success().rejected_spans()));
    if (rejected || !response.partial_success().error_message().empty())
      spdlog::warn("OTLP receiver rejected {} of {} spans: {}", rejected, count,
                   response.partial_success().error_message());
  }
  telemetry_->spans_dropped_rejected.fetch_add(rejected, std::memory_order_relaxed);
  telemetry_->spans_exported.fetch_add(count - rejected, std::memory_order_relaxed);
}

}  // namespace flowtracer::exporters::otlp
