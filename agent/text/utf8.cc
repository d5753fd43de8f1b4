#include "agent/text/utf8.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace flowtracer::text {

size_t Utf8SequenceLength(std::string_view text) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  size_t length;
  uint32_t min_code_point;
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) length = 2, min_code_point = 0x80;
  else if (lead >= 0xe0 && lead <= 0xef) length = 3, min_code_point = 0x800;
  else if (lead >= 0xf0 && lead <= 0xf4) length = 4, min_code_point = 0x10000;
  else return 0;
  if (text.size() < length) return 0;
  uint32_t code_point = lead & (0x3f >> (length - 1));
  for (size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xc0) != 0x80) return 0;
    code_point = (code_point << 6) | (byte(i) & 0x3f);
  }
  if (code_point < min_code_point || code_point > 0x10ffff || (code_point >= 0xd800 && code_point <= 0xdfff))
    return 0;
  return length;
}


std::string ValidUtf8(std::string_view value, size_t max_bytes) {
  static constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD
  std::string out;
  out.reserve(std::min(value.size(), max_bytes));
  while (!value.empty()) {
    const size_t length = Utf8SequenceLength(value);
    std::string_view character = length ? value.substr(0, length) : kReplacement;
    if (out.size() + character.size() > max_bytes) break;  // never cut a character in two
    out.append(character);
    value.remove_prefix(length ? length : 1);
  }
  return out;
}

bool IsValidUtf8NotAscii(std::string_view value) {
  while (value.size() >= 8) {
    uint64_t word;
    memcpy(&word, value.data(), sizeof(word));
    if (word & kHighBitOfEachByte) break;
    value.remove_prefix(8);
  }
  while (!value.empty()) {
    if (static_cast<unsigned char>(value[0]) < 0x80) {
      value.remove_prefix(1);
      continue;
    }
    size_t length = Utf8SequenceLength(value);
    if (length == 0) return false;
    value.remove_prefix(length);
  }
  return true;
}

}  // namespace flowtracer::text
