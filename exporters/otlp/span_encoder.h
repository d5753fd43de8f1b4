// Spans to OTLP: one ResourceSpans per traced process, scope "flowtracer", the span's
// kind, status, timestamps, parent and attributes exactly as the capture JSON has them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <opentelemetry/proto/collector/trace/v1/trace_service.pb.h>

#include "agent/process/process_info.h"
#include "agent/spans/span.h"
#include "exporters/otlp/otlp_options.h"

namespace flowtracer::exporters::otlp {

// The resource of one traced process, built once per process and shared by its spans.
struct Resource {
  std::vector<spans::Attribute> attributes;
  std::vector<std::string> command_args;  // process.command_args, an array attribute
};
using ResourcePtr = std::shared_ptr<const Resource>;

// service.name, service.instance.id, process.*, host.name, telemetry.distro.*; then the
// agent-wide attributes (OTEL_RESOURCE_ATTRIBUTES, config) for keys the process did not set.
// `start_ticks` (from /proc/PID/stat) tells a reused pid apart in service.instance.id.
Resource ProcessResource(const process::ProcessInfo& info, const std::string& host_name,
                         uint64_t start_ticks, const KeyValues& agent_attributes);

// Clock ticks since boot when the process started (/proc/PID/stat field 22); 0 if unknown.
uint64_t ProcessStartTicks(uint32_t pid, const std::string& proc_root = "/proc");

struct ResourcedSpan {
  spans::Span span;
  ResourcePtr resource;
};

// Appends the spans to `request`, one ResourceSpans per distinct resource, in first-seen order.
void EncodeSpans(const std::vector<ResourcedSpan>& batch,
                 opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest* request);

}  // namespace flowtracer::exporters::otlp
