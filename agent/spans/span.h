// A finished span as every exporter sees it: ids, kind, timing, status and attributes
// named by the OpenTelemetry semantic conventions.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "flowtracer/events.h"

namespace flowtracer::spans {

using TraceId = std::array<uint8_t, 16>;
using SpanId = std::array<uint8_t, 8>;

enum class SpanKind { kServer, kClient, kProducer, kConsumer };
enum class StatusCode { kUnset, kOk, kError };

using AttributeValue = std::variant<std::string, int64_t, bool, double>;
struct Attribute {
  std::string key;
  AttributeValue value;
};

struct Span {
  TraceId trace_id{};
  SpanId span_id{};
  SpanId parent_span_id{};  // all zero: a root span
  std::string trace_state;  // W3C `tracestate` the span's context carries ("" when none)
  SpanKind kind = SpanKind::kServer;
  std::string name;     // "GET /users/{id}"
  std::string service;  // service.name of the traced process
  uint32_t pid = 0;
  uint64_t start_unix_ns = 0;
  uint64_t end_unix_ns = 0;
  StatusCode status = StatusCode::kUnset;
  std::vector<Attribute> attributes;
  ft_tuple tuple{};  // the traced side's connection, local first

  const AttributeValue* Find(std::string_view key) const {
    for (const Attribute& a : attributes)
      if (a.key == key) return &a.value;
    return nullptr;
  }
};

std::string_view SpanKindName(SpanKind kind);      // "SERVER", ...
std::string_view StatusCodeName(StatusCode code);  // "UNSET", "OK", "ERROR"

}  // namespace flowtracer::spans
