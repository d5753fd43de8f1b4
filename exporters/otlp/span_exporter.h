// Batches spans and sends them as OTLP on its own thread. Export() encodes the span and
// queues its bytes (no lock, never the network), so capture is never held up by the
// collector. The queue is bounded: when full, the oldest span is dropped and counted.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "agent/sched/idle_priority.h"
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

  // Frees the sent spans' buffers that were already waiting for reuse at the last call and
  // are still waiting, unless the queue is backed up, and its own spare ones after an
  // interval without spans. About once a second, from the thread that calls Export: a
  // burst's spans would otherwise keep their buffers for good, scattered over the heap the
  // burst grew, each keeping a page of it resident (5 MB after a burst of 10 000
  // connections). In steady traffic every buffer is reused within the interval.
  void ReleaseIdleSpans();
  // Raises the export thread to normal priority when spans are queued or being sent and it
  // has not woken for a second past the schedule delay: at SCHED_IDLE it waits for a free
  // CPU, and with few spans the queue never fills enough to raise it (a slow collector
  // looks the same, and raising then does no harm). About once a second, any thread.
  void RaiseIfStalled();
  // Span buffers in existence (queued, being sent, or kept for reuse). The capture thread's.
  size_t span_buffers() const { return span_buffers_; }

  // Sends what is queued within timeout_ms, then stops; spans left are counted as dropped.
  // From the thread that calls Export, as is the destructor (spans exported afterwards
  // are counted as dropped).
  void Shutdown(uint64_t timeout_ms);

  std::string Describe() { return sender_.transport().Describe(); }

 private:
  // An encoded span waiting to be sent. Made once and passed around by pointer: a span is
  // encoded into one that was sent before, so queueing allocates nothing once sizes settle.
  struct QueuedSpan {
    WireBuffer message;  // the span's ScopeSpans.spans field (EncodeSpan), sized to it
    ResourcePtr resource;
  };

  // A ring of pointers with one thread adding and one taking. Adding is a release store of
  // the tail, with no locked instruction (a mutex per span was 3% of the agent's CPU at
  // 10 000 requests/s: its locked exchange waited for the encoded span's stores to drain).
  // Taking claims the oldest with a compare-and-swap of the head, so that the adding
  // thread can also take the oldest to drop it when the ring is full.
  class Ring {
   public:
    explicit Ring(size_t capacity) : slots_(new std::atomic<QueuedSpan*>[capacity]), capacity_(capacity) {}
    size_t Size() const {
      const uint64_t head = head_.load(std::memory_order_acquire);
      return tail_.load(std::memory_order_acquire) - head;
    }
    uint64_t pushed() const { return tail_.load(std::memory_order_acquire); }
    uint64_t taken() const { return head_.load(std::memory_order_acquire); }
    // The adding thread only; false when full.
    bool Push(QueuedSpan* span);
    // Takes up to `max` of the oldest into `out` if at least `min_size` are waiting; how many.
    size_t Take(QueuedSpan** out, size_t max, size_t min_size = 1);

   private:
    // Atomic (relaxed: plain moves) because a taker reads slots before claiming them, and
    // a failed claim means the adding thread may have written them meanwhile.
    std::unique_ptr<std::atomic<QueuedSpan*>[]> slots_;
    size_t capacity_;
    alignas(64) std::atomic<uint64_t> tail_{0};  // written by the adding thread only
    alignas(64) std::atomic<uint64_t> head_{0};
  };

  void Run();
  void SendBatch(size_t count);
  QueuedSpan* TakeFreeSpan();

  OtlpExporterOptions options_;
  telemetry::SelfTelemetry* telemetry_;
  RetryingSender sender_;

  // Spans to send (capture thread -> export thread) and sent ones whose buffers can be
  // reused (export thread -> capture thread). A QueuedSpan is owned by where it is: one of
  // the rings, spare_, the span being encoded or the batch being sent.
  Ring queue_;
  Ring free_;
  std::vector<QueuedSpan*> spare_;  // the capture thread's: taken from free_, not used yet
  size_t spare_count_ = 0;
  // free_.pushed() and queue_.pushed() at the last ReleaseIdleSpans. The capture thread's.
  uint64_t free_pushed_at_release_ = 0;
  uint64_t queue_pushed_at_release_ = 0;
  size_t span_buffers_ = 0;              // the capture thread's

  // The export thread sleeps on `work_`; the producer takes `mutex_` only to wake it, once a
  // batch is full. ForceFlush waits on `done_` for `finished_total_`.
  std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable done_;
  uint64_t finished_total_ = 0;  // spans sent or dropped by the export thread after being queued
  std::atomic<uint64_t> dropped_oldest_{0};  // queued spans the capture thread dropped for room
  bool flush_requested_ = false;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
  // The export thread yields the CPU to the traced programs (SCHED_IDLE) while fewer than
  // half the queue's spans wait, when its transport starts no threads (they would inherit
  // the policy). The capture thread raises it from Export.
  sched::BacklogPriority priority_;
  std::atomic<int64_t> woke_ns_{0};  // steady clock: when the export thread last woke
  std::atomic<bool> sending_{false};
  std::thread thread_;

  // The export thread's own: the batch being sent and the request's buffers.
  std::vector<QueuedSpan*> batch_;
  TraceRequestEncoder request_encoder_;
};

}  // namespace flowtracer::exporters::otlp
