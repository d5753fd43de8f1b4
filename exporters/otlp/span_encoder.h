// Spans to OTLP: one ResourceSpans per traced process, scope "flowtracer", the span's
// kind, status, timestamps, parent and attributes exactly as the capture JSON has them.
//
// The wire bytes are written directly (field numbers from opentelemetry-proto's
// trace.proto, common.proto and resource.proto; varints by protobuf's CodedOutputStream)
// instead of building the generated message tree: a span becomes ~300 bytes once, when
// it is queued, with no allocation per attribute, where the message tree cost a dozen
// allocations per span and most of the exporter's CPU. Tests decode the result with the
// generated classes, and e2e tests with an independent implementation.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agent/process/process_info.h"
#include "agent/spans/span.h"
#include "exporters/otlp/otlp_options.h"
#include "exporters/otlp/transport.h"

namespace flowtracer::exporters::otlp {

// The resource of one traced process, built once per process and shared by its spans.
struct Resource {
  std::vector<spans::Attribute> attributes;
  std::vector<std::string> command_args;  // process.command_args, an array attribute
  std::string message;                    // the encoded Resource message (EncodeResource)
};
using ResourcePtr = std::shared_ptr<const Resource>;

// service.name, service.instance.id, process.*, host.name, telemetry.distro.*; then the
// agent-wide attributes (OTEL_RESOURCE_ATTRIBUTES, config) for keys the process did not set.
// `start_ticks` (from /proc/PID/stat) tells a reused pid apart in service.instance.id.
// The result's `message` is filled.
Resource ProcessResource(const process::ProcessInfo& info, const std::string& host_name,
                         uint64_t start_ticks, const KeyValues& agent_attributes);

// The Resource message (attributes, then process.command_args as an array) of `resource`.
std::string EncodeResource(const Resource& resource);

// Clock ticks since boot when the process started (/proc/PID/stat field 22); 0 if unknown.
uint64_t ProcessStartTicks(uint32_t pid, const std::string& proc_root = "/proc");

// Bytes being encoded. Like a std::string, but room is added without being zero-filled:
// the encoder asks for a worst-case bound, several times what a span needs, and filling
// it cost more than encoding.
class WireBuffer {
 public:
  std::string_view view() const { return {reinterpret_cast<const char*>(data_.get()), size_}; }
  void clear() { size_ = 0; }

  // Room for `max_bytes` more at the end, uninitialised; Commit() says how much was written.
  // Growing doubles the capacity, unless `tight`: then an eighth more than needed, for a
  // buffer that holds one span and waits in the queue (buffers pass from span to span, and
  // doubling for a slightly larger one left many at twice their spans' size).
  uint8_t* Extend(size_t max_bytes, bool tight = false);
  void Commit(uint8_t* end) { size_ = end - data_.get(); }

 private:
  std::unique_ptr<uint8_t[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// Replaces `out` with `span` as a ScopeSpans.spans field (tag, length, Span message): the
// bytes a request carries for it, so the request is sent from the span buffers as they are.
// Strings are repaired to valid UTF-8: receivers refuse a whole request otherwise.
void EncodeSpan(const spans::Span& span, WireBuffer* out);

// Collects encoded spans, grouped by resource in first-seen order, into one
// ExportTraceServiceRequest. Keeps its buffers between requests.
class TraceRequestEncoder {
 public:
  // `resource` and the bytes of `span_field` (from EncodeSpan) must stay alive until the
  // request is sent; nullptr: a ResourceSpans without a resource.
  void Add(const Resource* resource, std::string_view span_field);

  // The request: each resource's fields up to its spans, then its span fields as they
  // were added. Valid until the next Finish; starts a new, empty request.
  RequestPieces Finish();

 private:
  struct Group {
    const Resource* resource = nullptr;
    std::vector<std::string_view> span_fields;
    size_t span_fields_bytes = 0;
  };
  std::vector<Group> groups_;  // [0, used_groups_) belong to the current request
  size_t used_groups_ = 0;
  std::unordered_map<const Resource*, size_t> group_of_;
  WireBuffer headers_;
  std::vector<std::string_view> pieces_;
};

}  // namespace flowtracer::exporters::otlp
