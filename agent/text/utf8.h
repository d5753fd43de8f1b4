// Text from the network made safe for formats that require UTF-8 (OTLP strings,
// Prometheus labels, terminals): request paths and headers are arbitrary bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace flowtracer::text {

// Length of the valid UTF-8 sequence starting `text` (1 to 4), or 0 when it is not one
// (stray continuation bytes, overlong forms, surrogates, beyond U+10FFFF, cut short).
size_t Utf8SequenceLength(std::string_view text);

// `value` as valid UTF-8, each invalid byte as U+FFFD (as JSON output does), at most
// `max_bytes` long without splitting a character.
std::string ValidUtf8(std::string_view value, size_t max_bytes = std::string::npos);

// True when no byte of `value` has its high bit set, read 8 (or 4) bytes at a time; the
// last read overlaps the one before it. Inline: callers check many short strings.
inline bool IsAscii(std::string_view value) {
  constexpr uint64_t kHigh64 = 0x8080808080808080ull;
  constexpr uint32_t kHigh32 = 0x80808080u;
  const char* p = value.data();
  const size_t n = value.size();
  if (n >= 8) {
    uint64_t word;
    for (size_t i = 0; i + 8 < n; i += 8) {
      memcpy(&word, p + i, sizeof(word));
      if (word & kHigh64) return false;
    }
    memcpy(&word, p + n - 8, sizeof(word));
    return !(word & kHigh64);
  }
  if (n >= 4) {
    uint32_t head, tail;
    memcpy(&head, p, sizeof(head));
    memcpy(&tail, p + n - 4, sizeof(tail));
    return !((head | tail) & kHigh32);
  }
  unsigned char bits = 0;
  for (size_t i = 0; i < n; ++i) bits |= static_cast<unsigned char>(p[i]);
  return bits < 0x80;
}

// The full check, for text that is not all ASCII.
bool IsValidUtf8NotAscii(std::string_view value);

// True when `value` needs no change from ValidUtf8 (the common case: no copy needed).
inline bool IsValidUtf8(std::string_view value) { return IsAscii(value) || IsValidUtf8NotAscii(value); }

}  // namespace flowtracer::text
