// Batches spans and sends them as OTLP on its own thread. Export() encodes the span and
// queues its bytes (no lock, never the network), so capture is never held up by the
// collector. The queue is bounded: when full, the new span is dropped and counted, as the
// OpenTelemetry SDKs' batch processors do.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "agent/telemetry/self_telemetry.h"
#include "exporters/otlp/otlp_options.h"
#include "exporters/otlp/retrying_sender.h"
#include "exporters/otlp/span_encoder.h"

namespace flowtracer::exporters::otlp {

class OtlpSpanExporter {
 public:
  // `telemetry` must outlive the exporter.
  OtlpSpanExporter(const OtlpExporterOptions& options, std::unique_ptr<Transport> transport,
                   telemetry::SelfTelemetry* telemetry);
  ~OtlpSpanExporter();  // Shutdown(0) if not done

  // Called from one thread only (the capture loop): the queue has a single producer.
  // `resource` is shared with the queued span only when its buffer does not hold it
  // already (no reference count touched per span then).
  void Export(const spans::Span& span, const ResourcePtr& resource);

  // Waits until everything queued before the call was sent (or dropped). False on timeout.
  // Any thread.
  bool ForceFlush(uint64_t timeout_ms);

  // Sends what is queued within timeout_ms, then stops; spans left are counted as dropped.
  // From the thread that calls Export (spans exported afterwards are counted as dropped).
  void Shutdown(uint64_t timeout_ms);

  std::string Describe() { return sender_.transport().Describe(); }

 private:
  // An encoded span waiting to be sent. Made once and passed around by pointer: a span is
  // encoded into one that was sent before, so queueing allocates nothing once sizes settle.
  struct QueuedSpan {
    WireBuffer message;  // the Span message (EncodeSpan), sized to it
    ResourcePtr resource;
  };

  // A single-producer, single-consumer ring of pointers. The producer's and the consumer's
  // positions sit on their own cache lines; publishing is a release store, so handing a
  // span over costs no locked instruction (a mutex per span was 3% of the agent's CPU:
  // its locked exchange waited for the encoded span's stores to drain).
  class Ring {
   public:
    explicit Ring(size_t capacity) : slots_(new QueuedSpan*[capacity]), capacity_(capacity) {}
    size_t capacity() const { return capacity_; }
    // Producer side.
    bool Push(QueuedSpan* span);
    bool Full() const { return ProducerSize() == capacity_; }
    size_t ProducerSize() const {
      return tail_.load(std::memory_order_relaxed) - head_.load(std::memory_order_acquire);
    }
    // Consumer side: how many are waiting, the i-th of them, and releasing the first n.
    size_t Size() const {
      return tail_.load(std::memory_order_acquire) - head_.load(std::memory_order_relaxed);
    }
    QueuedSpan* Peek(size_t i) const { return slots_[(head_.load(std::memory_order_relaxed) + i) % capacity_]; }
    void Pop(size_t n) { head_.store(head_.load(std::memory_order_relaxed) + n, std::memory_order_release); }
    uint64_t pushed() const { return tail_.load(std::memory_order_acquire); }

   private:
    std::unique_ptr<QueuedSpan*[]> slots_;  // not zero-filled: pages are touched as used
    size_t capacity_;
    alignas(64) std::atomic<uint64_t> tail_{0};  // written by the producer only
    alignas(64) std::atomic<uint64_t> head_{0};  // written by the consumer only
  };

  void Run();
  void SendBatch(size_t count);
  QueuedSpan* TakeFreeSpan();

  OtlpExporterOptions options_;
  telemetry::SelfTelemetry* telemetry_;
  RetryingSender sender_;

  // Spans to send (capture thread -> export thread) and sent ones whose buffers can be
  // reused (export thread -> capture thread). Every QueuedSpan ever made is in `all_`.
  Ring queue_;
  Ring free_;
  std::vector<std::unique_ptr<QueuedSpan>> all_;  // the producer's

  // The export thread sleeps on `work_`; the producer takes `mutex_` only to wake it, once a
  // batch is full. ForceFlush waits on `done_` for `finished_total_`.
  std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable done_;
  uint64_t finished_total_ = 0;  // spans sent or dropped after being queued
  bool flush_requested_ = false;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
  std::thread thread_;

  // The export thread's own: the batch being sent and the request's buffers.
  std::vector<QueuedSpan*> batch_;
  TraceRequestEncoder request_encoder_;
};

}  // namespace flowtracer::exporters::otlp
