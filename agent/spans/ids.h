// Trace and span ids: random generation, hex, and W3C Trace Context `traceparent`.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "agent/spans/span.h"

namespace flowtracer::spans {

TraceId NewTraceId();
SpanId NewSpanId();

bool IsZero(const TraceId& id);
bool IsZero(const SpanId& id);

std::string ToHex(const TraceId& id);
std::string ToHex(const SpanId& id);

struct TraceContext {
  TraceId trace_id{};
  SpanId parent_id{};
  uint8_t flags = 0;
};

// Parses a `traceparent` value per W3C Trace Context level 1 (section 3.2): lowercase
// hex, version "ff" invalid, version 00 exactly 55 characters, later versions at least
// 55 with a '-' after the flags, trace id and parent id not all zero. Invalid values
// give nullopt: they are ignored, never trusted.
std::optional<TraceContext> ParseTraceparent(std::string_view value);

std::string FormatTraceparent(const TraceContext& context);

}  // namespace flowtracer::spans
