// Batches spans and sends them as OTLP on its own thread. Export() encodes the span and
// queues its bytes (a short lock, never the network), so capture is never held up by the
// collector. The queue is bounded: when full, the oldest span is dropped and counted.
#pragma once

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

  // `resource` is shared with the queue only when the slot does not hold it already (no
  // reference count touched per span then).
  void Export(const spans::Span& span, const ResourcePtr& resource);

  // Waits until everything queued before the call was sent (or dropped). False on timeout.
  bool ForceFlush(uint64_t timeout_ms);

  // Sends what is queued within timeout_ms, then stops; spans left are counted as dropped.
  void Shutdown(uint64_t timeout_ms);

  std::string Describe() { return sender_.transport().Describe(); }

 private:
  // An encoded span waiting to be sent. Buffers are handed over, never copied: a span is
  // encoded into the buffer of one sent before, which then takes its place in the queue,
  // so queueing allocates nothing once sizes settle.
  struct QueuedSpan {
    WireBuffer message;  // the Span message (EncodeSpan), sized to it
    ResourcePtr resource;
  };

  void Run();
  void SendBatch(size_t count);

  OtlpExporterOptions options_;
  telemetry::SelfTelemetry* telemetry_;
  RetryingSender sender_;

  std::mutex mutex_;
  std::condition_variable work_;  // wakes the export thread
  std::condition_variable done_;  // wakes ForceFlush
  std::vector<QueuedSpan> slots_;  // a ring: queued spans are [head_, head_ + queued_)
  size_t head_ = 0;
  size_t queued_ = 0;
  uint64_t enqueued_total_ = 0;   // spans ever queued
  uint64_t finished_total_ = 0;   // spans sent or dropped (queued ones only)
  bool flush_requested_ = false;
  bool stopping_ = false;
  bool stopped_ = false;
  std::thread thread_;

  // The export thread's own: the batch being sent (slots swapped out of the ring) and
  // the request's buffers.
  std::vector<QueuedSpan> batch_;
  TraceRequestEncoder request_encoder_;
};

}  // namespace flowtracer::exporters::otlp
