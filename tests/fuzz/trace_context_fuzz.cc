// libFuzzer target for W3C Trace Context parsing: no crash on any input, and what
// parses is consistent (valid ids are never zero, formatting and parsing round-trip,
// a normalised tracestate parses to itself).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/spans/ids.h"

namespace {

namespace spans = flowtracer::spans;

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);

  if (auto context = spans::ParseTraceparent(input)) {
    Check(!spans::IsZero(context->trace_id) && !spans::IsZero(context->parent_id));
    auto again = spans::ParseTraceparent(spans::FormatTraceparent(*context));
    Check(again.has_value());
    Check(again->trace_id == context->trace_id && again->parent_id == context->parent_id &&
          again->flags == context->flags);
  }

  // The input split at each newline: the values of several tracestate fields.
  std::vector<std::string_view> fields;
  for (size_t start = 0; start <= input.size();) {
    size_t end = input.find('\n', start);
    if (end == std::string_view::npos) end = input.size();
    fields.push_back(input.substr(start, end - start));
    start = end + 1;
  }
  if (auto state = spans::ParseTracestate(fields)) {
    Check(state->size() <= input.size());
    auto again = spans::ParseTracestate({*state});
    Check(again.has_value() && *again == *state);
  }

  // The same fields as a header block, with the first one as the traceparent.
  std::vector<std::pair<std::string, std::string>> headers;
  for (size_t i = 0; i < fields.size(); ++i)
    headers.emplace_back(i == 0 ? "traceparent" : "tracestate", std::string(fields[i]));
  if (auto context = spans::ExtractTraceContext(headers)) {
    Check(spans::ParseTraceparent(fields[0]).has_value());
  }
  return 0;
}
