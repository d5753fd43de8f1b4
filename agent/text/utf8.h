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

// Every byte of `text` ORed together, read 8 (or 4) bytes at a time, the last read
// overlapping the one before, with no branch per word. The text is ASCII when the result
// has no kHighBitOfEachByte bit set; results for several texts can be ORed and tested
// once. Inline: callers check many short strings.
[[gnu::always_inline]] inline uint64_t OrOfBytes(std::string_view text) {
  const char* p = text.data();
  const size_t n = text.size();
  uint64_t bits = 0;
  if (n >= 8) {
    uint64_t word;
    for (size_t i = 0; i + 8 < n; i += 8) {
      memcpy(&word, p + i, sizeof(word));
      bits |= word;
    }
    memcpy(&word, p + n - 8, sizeof(word));
    return bits | word;
  }
  if (n >= 4) {
    uint32_t head, tail;
    memcpy(&head, p, sizeof(head));
    memcpy(&tail, p + n - 4, sizeof(tail));
    return head | tail;
  }
  for (size_t i = 0; i < n; ++i) bits |= static_cast<unsigned char>(p[i]);
  return bits;
}
inline constexpr uint64_t kHighBitOfEachByte = 0x8080808080808080ull;

inline bool IsAscii(std::string_view value) { return (OrOfBytes(value) & kHighBitOfEachByte) == 0; }

// The full check, for text that is not all ASCII.
bool IsValidUtf8NotAscii(std::string_view value);

// True when `value` needs no change from ValidUtf8 (the common case: no copy needed).
inline bool IsValidUtf8(std::string_view value) { return IsAscii(value) || IsValidUtf8NotAscii(value); }

}  // namespace flowtracer::text
