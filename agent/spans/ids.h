// Trace and span ids: random generation, hex, and W3C Trace Context `traceparent`.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/protocols/http1/parse.h"
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
  std::string trace_state;  // normalised `tracestate` list ("k1=v1,k2=v2"), "" when none or invalid
};

// Parses a `traceparent` value per W3C Trace Context level 1 (section 3.2): lowercase
// hex, version "ff" invalid, version 00 exactly 55 characters, later versions at least
// 55 with a '-' after the flags, trace id and parent id not all zero. Invalid values
// give nullopt: they are ignored, never trusted.
std::optional<TraceContext> ParseTraceparent(std::string_view value);

std::string FormatTraceparent(const TraceContext& context);

// Parses the `tracestate` field values of one message, combined in order (RFC 9110
// section 5.3), per W3C Trace Context level 1 (section 3.3): comma-separated key=value
// list members with optional whitespace, empty members skipped, at most 32 members,
// keys unique. Returns them joined by ","; nullopt when invalid (the whole header is
// then dropped, as the spec asks).
std::optional<std::string> ParseTracestate(const std::vector<std::string_view>& values);

// The trace context of an HTTP message's header fields (names case-insensitive):
// exactly one valid `traceparent` field, and its `tracestate` when valid. Several
// `traceparent` fields make the context invalid: combined they are not one value.
std::optional<TraceContext> ExtractTraceContext(
    const std::vector<std::pair<std::string, std::string>>& headers);
std::optional<TraceContext> ExtractTraceContext(const http1::HeaderFields& headers);

}  // namespace flowtracer::spans
