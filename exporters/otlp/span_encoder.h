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

// Replaces `out` with the Span message of `span` (its fields, without a tag or length).
// Strings are repaired to valid UTF-8: receivers refuse a whole request otherwise.
void EncodeSpan(const spans::Span& span, std::string* out);

// Collects encoded spans, grouped by resource in first-seen order, into one
// ExportTraceServiceRequest. Keeps its buffers between requests.
class TraceRequestEncoder {
 public:
  // `resource` must stay alive until Finish(); nullptr: a ResourceSpans without a resource.
  void Add(const Resource* resource, std::string_view span_message);

  // Replaces `out` with the request's bytes and starts a new, empty request.
  void Finish(std::string* out);

 private:
  struct Group {
    const Resource* resource = nullptr;
    std::string span_fields;  // the ScopeSpans.spans fields, tag and length included
  };
  std::vector<Group> groups_;  // [0, used_groups_) belong to the current request
  size_t used_groups_ = 0;
  std::unordered_map<const Resource*, size_t> group_of_;
};

}  // namespace flowtracer::exporters::otlp
