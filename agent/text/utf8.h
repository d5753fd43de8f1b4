// Text from the network made safe for formats that require UTF-8 (OTLP strings,
// Prometheus labels, terminals): request paths and headers are arbitrary bytes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace flowtracer::text {

// Length of the valid UTF-8 sequence starting `text` (1 to 4), or 0 when it is not one
// (stray continuation bytes, overlong forms, surrogates, beyond U+10FFFF, cut short).
size_t Utf8SequenceLength(std::string_view text);

// `value` as valid UTF-8, each invalid byte as U+FFFD (as JSON output does), at most
// `max_bytes` long without splitting a character.
std::string ValidUtf8(std::string_view value, size_t max_bytes = std::string::npos);

// True when `value` needs no change from ValidUtf8 (the common case: no copy needed).
bool IsValidUtf8(std::string_view value);

}  // namespace flowtracer::text
