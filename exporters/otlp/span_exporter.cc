#include "exporters/otlp/span_exporter.h"

#include <opentelemetry/proto/collector/trace/v1/trace_service.pb.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>

namespace flowtracer::exporters::otlp {

namespace {

// Room for every span that can exist: queued, being sent (one batch), and the one being
// encoded.
size_t FreeRingCapacity(const OtlpExporterOptions& options) {
  return size_t{options.max_queue_spans} + options.max_export_batch_spans + 1;
}

OtlpExporterOptions Sane(OtlpExporterOptions options) {
  if (options.max_export_batch_spans == 0) options.max_export_batch_spans = 1;
  if (options.max_queue_spans < options.max_export_batch_spans) options.max_queue_spans = options.max_export_batch_spans;
  return options;
}

}  // namespace

bool OtlpSpanExporter::Ring::Push(QueuedSpan* span) {
  const uint64_t tail = tail_.load(std::memory_order_relaxed);
  if (tail - head_.load(std::memory_order_acquire) >= capacity_) return false;
  slots_[tail % capacity_].store(span, std::memory_order_relaxed);
  tail_.store(tail + 1, std::memory_order_release);
  return true;
}

size_t OtlpSpanExporter::Ring::Take(QueuedSpan** out, size_t max, size_t min_size) {
  uint64_t head = head_.load(std::memory_order_acquire);
  while (true) {
    const uint64_t waiting = tail_.load(std::memory_order_acquire) - head;
    if (waiting < min_size) return 0;
    const size_t count = std::min<uint64_t>(max, waiting);
    // Read before claiming: once the head moves past them, the adding thread may reuse the
    // slots. If the claim fails the other taker moved the head, and the slots are read again.
    for (size_t i = 0; i < count; ++i) out[i] = slots_[(head + i) % capacity_].load(std::memory_order_relaxed);
    if (count == 0 || head_.compare_exchange_weak(head, head + count, std::memory_order_acq_rel)) return count;
  }
}

OtlpSpanExporter::OtlpSpanExporter(const OtlpExporterOptions& options, std::unique_ptr<Transport> transport,
                                   telemetry::SelfTelemetry* telemetry)
    : options_(Sane(options)),
      telemetry_(telemetry),
      sender_(std::move(transport), RetryPolicyFor(options_, Signal::kTraces)),
      queue_(options_.max_queue_spans),
      free_(FreeRingCapacity(options_)),
      spare_(options_.max_export_batch_spans),
      priority_(options_.max_queue_spans / 2, options_.max_queue_spans / 8) {
  thread_ = std::thread([this] { Run(); });
}

OtlpSpanExporter::~OtlpSpanExporter() {
  Shutdown(0);
  // The export thread has ended with every batch it took back in free_.
  QueuedSpan* span;
  while (queue_.Take(&span, 1)) delete span;
  while (free_.Take(&span, 1)) delete span;
  for (size_t i = 0; i < spare_count_; ++i) delete spare_[i];
}

OtlpSpanExporter::QueuedSpan* OtlpSpanExporter::TakeFreeSpan() {
  // Sent spans come back a batch at a time: one claim of the free ring per batch.
  if (spare_count_ == 0) spare_count_ = free_.Take(spare_.data(), spare_.size());
  if (spare_count_ > 0) return spare_[--spare_count_];
  ++span_buffers_;
  return new QueuedSpan();
}

void OtlpSpanExporter::ReleaseIdleSpans() {
  const uint64_t waiting_since_last_call = free_pushed_at_release_;
  free_pushed_at_release_ = free_.pushed();
  // Every exported span is pushed to queue_ (the full-queue path takes one back first).
  const bool idle = queue_.pushed() == queue_pushed_at_release_;
  queue_pushed_at_release_ = queue_.pushed();
  if (queue_.Size() >= options_.max_export_batch_spans) return;  // their buffers are needed soon
  // The oldest in free_ are the ones pushed before the last call that nothing took since:
  // this thread is the only one that takes from it.
  uint64_t stale = waiting_since_last_call > free_.taken() ? waiting_since_last_call - free_.taken() : 0;
  QueuedSpan* spans[64];
  while (stale > 0) {
    const size_t count = free_.Take(spans, std::min<uint64_t>(stale, std::size(spans)));
    if (count == 0) break;
    for (size_t i = 0; i < count; ++i) delete spans[i];
    span_buffers_ -= count;
    stale -= count;
  }
  if (idle) {
    for (size_t i = 0; i < spare_count_; ++i) delete spare_[i];
    span_buffers_ -= spare_count_;
    spare_count_ = 0;
  }
}

void OtlpSpanExporter::Export(const spans::Span& span, const ResourcePtr& resource) {
  if (stopping_.load(std::memory_order_relaxed)) {
    telemetry_->spans_dropped_shutdown.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  QueuedSpan* queued = TakeFreeSpan();
  // Before encoding: a changed resource's reference counts are locked instructions, which
  // wait for every store before them to drain (after encoding, the span's bytes).
  if (queued->resource != resource) queued->resource = resource;
  EncodeSpan(span, &queued->message);
  const bool pushed = queue_.Push(queued);
  if (!pushed) {
    // Full: the oldest span makes room (the newest are the ones worth keeping once a
    // receiver comes back). Its buffer is spare for the next span; spare_ has room, as
    // this span came from it or it was empty.
    QueuedSpan* oldest;
    if (queue_.Take(&oldest, 1, /*min_size=*/options_.max_queue_spans)) {
      telemetry::AddAsSoleWriter(dropped_oldest_);
      telemetry_->spans_dropped_queue_full.fetch_add(1, std::memory_order_relaxed);
      spare_[spare_count_++] = oldest;
    }
    queue_.Push(queued);  // there is room now: only the export thread takes, besides this one
  }
  const size_t depth = queue_.Size();
  telemetry_->queue_depth_spans.store(depth, std::memory_order_relaxed);
  priority_.Produced(depth);
  if (depth >= options_.max_export_batch_spans) {
    // A full batch: wake the export thread. Holding the mutex orders this with its check
    // of the queue before it sleeps; only tried, because at SCHED_IDLE the export thread
    // may hold it for long, preempted. A wake-up that fell between its check and its sleep
    // is made again by the next span (and the queue is only above a batch while the export
    // thread is behind).
    std::unique_lock lock(mutex_, std::try_to_lock);
    work_.notify_one();
  }
}

bool OtlpSpanExporter::ForceFlush(uint64_t timeout_ms) {
  priority_.Raise();
  std::unique_lock lock(mutex_);
  const uint64_t target = queue_.pushed();
  flush_requested_ = true;
  work_.notify_one();
  return done_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    return finished_total_ + dropped_oldest_.load(std::memory_order_relaxed) >= target;
  });
}

void OtlpSpanExporter::Shutdown(uint64_t timeout_ms) {
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
    stopping_.store(true, std::memory_order_relaxed);
  }
  sender_.SetDeadline(RetryingSender::Clock::now() + std::chrono::milliseconds(timeout_ms));
  priority_.RaiseForGood();
  work_.notify_one();
  if (thread_.joinable()) thread_.join();
  if (priority_.raises() > 0)
    spdlog::debug("OTLP span export: raised to normal priority {} times (the queue filling, or a stall)",
                  priority_.raises());
}

void OtlpSpanExporter::RaiseIfStalled() {
  if (!priority_.lowered() || (queue_.Size() == 0 && !sending_.load(std::memory_order_relaxed))) return;
  const auto woke = std::chrono::steady_clock::time_point(
      std::chrono::steady_clock::duration(woke_ns_.load(std::memory_order_relaxed)));
  if (std::chrono::steady_clock::now() - woke > std::chrono::milliseconds(options_.schedule_delay_ms + 1000))
    priority_.Raise();
}

void OtlpSpanExporter::Run() {
  const auto note_woke = [this] {
    woke_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  };
  note_woke();
  if (sender_.transport().StartsNoThreadsWhenSending()) {
    std::string why_not;
    if (!priority_.Lower(gettid(), "the OTLP span export thread", &why_not)) spdlog::debug("{}", why_not);
  }
  const size_t batch_spans = options_.max_export_batch_spans;
  batch_.resize(batch_spans);
  auto delay = std::chrono::milliseconds(options_.schedule_delay_ms);
  auto next_send = std::chrono::steady_clock::now() + delay;
  std::unique_lock lock(mutex_);
  while (true) {
    work_.wait_until(lock, next_send, [&] {
      return stopping_.load(std::memory_order_relaxed) || flush_requested_ || queue_.Size() >= batch_spans;
    });
    note_woke();
    if (queue_.Size() == 0) {
      flush_requested_ = false;
      if (stopping_.load(std::memory_order_relaxed)) break;
      next_send = std::chrono::steady_clock::now() + delay;
      continue;
    }
    const bool flushing = flush_requested_;
    lock.unlock();
    // Taken at once: the queue has room for new spans while this batch is sent.
    const size_t count = queue_.Take(batch_.data(), batch_spans);
    if (count == 0) {  // the capture thread took the last for room (a full queue)
      lock.lock();
      continue;
    }
    telemetry_->queue_depth_spans.store(queue_.Size(), std::memory_order_relaxed);
    sending_.store(true, std::memory_order_relaxed);
    SendBatch(count);
    sending_.store(false, std::memory_order_relaxed);
    for (size_t i = 0; i < count; ++i) free_.Push(batch_[i]);  // never full: see FreeRingCapacity
    if (!flushing) priority_.Worked(queue_.Size());  // a flush raised it: it ends raised
    lock.lock();
    finished_total_ += count;
    done_.notify_all();
    if (queue_.Size() < batch_spans) next_send = std::chrono::steady_clock::now() + delay;
  }
  done_.notify_all();
}

void OtlpSpanExporter::SendBatch(size_t count) {
  for (size_t i = 0; i < count; ++i) request_encoder_.Add(batch_[i]->resource.get(), batch_[i]->message.view());
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
