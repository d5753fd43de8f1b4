#include "agent/protocols/http1/parse.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "agent/text/copy.h"

namespace flowtracer::http1 {
namespace {

// Only these methods are recognised, so that binary data is not mistaken for HTTP.
constexpr std::array<std::string_view, 9> kMethods = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};

constexpr std::string_view kVersionPrefix = "HTTP/1.";
constexpr size_t kMaxChunkSizeDigits = 16;  // 16 hex digits fill a uint64_t
constexpr size_t kMaxTrailerBytes = 64 * 1024;

// Matching a start-line prefix: kPrefix means the buffer ended while it still matched.
enum class Match { kNo, kPrefix, kYes };

constexpr bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsAlnum(char c) {
  return IsDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// RFC 9110 section 5.6.2 tchar: the characters of field names and method tokens.
constexpr bool IsTcharSlow(char c) {
  if (IsDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

// Control characters other than HTAB; obs-text (>= 0x80) is allowed in values.
constexpr bool IsForbiddenCtlSlow(char c) {
  const auto byte = static_cast<unsigned char>(c);
  return (byte < 0x20 && c != '\t') || byte == 0x7f;
}

// Byte classes looked up in one table (field names, chunked framing).
enum ByteClass : uint8_t { kTchar = 1, kForbiddenCtl = 2 };
constexpr std::array<uint8_t, 256> kByteClass = [] {
  std::array<uint8_t, 256> table{};
  for (int i = 0; i < 256; ++i) {
    const char c = static_cast<char>(i);
    table[i] = (IsTcharSlow(c) ? kTchar : 0) | (IsForbiddenCtlSlow(c) ? kForbiddenCtl : 0);
  }
  return table;
}();

bool IsTchar(char c) { return kByteClass[static_cast<unsigned char>(c)] & kTchar; }
bool IsForbiddenCtl(char c) { return kByteClass[static_cast<unsigned char>(c)] & kForbiddenCtl; }

// Head bytes are tested 16 at a time with GCC/Clang vector extensions (SSE2 on x86-64,
// NEON on arm64): a comparison gives -1 in each byte that matches, else 0.
using Bytes = uint8_t __attribute__((vector_size(16)));
using SignedBytes = int8_t __attribute__((vector_size(16)));
constexpr size_t kBlockBytes = sizeof(Bytes);

// A word (or vector) of the bytes at `at`, which need not be aligned.
template <typename Word>
Word Load(const char* at) {
  Word word;
  std::memcpy(&word, at, sizeof(word));
  return word;
}

#if defined(__SSE2__)
// One instruction gathers the 16 results into a bit mask.
uint32_t MaskOf(SignedBytes hits) {
  return static_cast<uint32_t>(_mm_movemask_epi8(std::bit_cast<__m128i>(hits)));
}
bool AnyHit(SignedBytes hits) { return MaskOf(hits) != 0; }
size_t FirstHit(SignedBytes hits) { return static_cast<size_t>(std::countr_zero(MaskOf(hits))); }
#else
bool AnyHit(SignedBytes hits) {
  const auto words = std::bit_cast<std::array<uint64_t, 2>>(hits);
  return (words[0] | words[1]) != 0;
}
size_t FirstHit(SignedBytes hits) {
  const auto words = std::bit_cast<std::array<uint64_t, 2>>(hits);
  const size_t word = words[0] != 0 ? 0 : 1;
  // The first byte in memory order is the lowest of a little-endian word.
  const int bit = std::endian::native == std::endian::little ? std::countr_zero(words[word])
                                                               : std::countl_zero(words[word]);
  return word * sizeof(uint64_t) + static_cast<size_t>(bit) / 8;
}
#endif

// Offset of the first byte at or after `pos` that is below `below` (at most 0x7e) or is
// DEL, or buf.size() when there is none. Header values, reason phrases and request
// targets are most of a head's bytes and only their control bytes (line ends included)
// matter, so they are tested a block at a time, and after the first block four at a time.
// `below` is a constant: its vector is then loaded, not built, on each call.
template <uint8_t below>
size_t FindControlByte(std::string_view buf, size_t pos) {
  static_assert(below <= 0x7e);
  const char* data = buf.data();
  const size_t size = buf.size();
  // Plus 0x81 (wrapping), DEL becomes 0x00, obs-text (0x80-0xff) 0x01-0x80, and the bytes
  // under `below` 0x81 up to below + 0x80, while every other byte is above that: one
  // unsigned comparison finds all three, and for a group of blocks one comparison of their
  // bytewise minimum. The exact test then leaves obs-text out of a group that has any.
  const Bytes shift = Bytes{} + uint8_t{0x81};
  const Bytes highest_candidate = Bytes{} + static_cast<uint8_t>(below + 0x80);
  const auto shifted = [&](size_t at) { return Load<Bytes>(data + at) + shift; };
  const auto candidates = [&](Bytes shifted_bytes) {
    return std::bit_cast<SignedBytes>(shifted_bytes <= highest_candidate);
  };
  // The exact test: a byte under `below`, or DEL.
  const auto matches = [&](size_t at) {
    const Bytes bytes = Load<Bytes>(data + at);
    return std::bit_cast<SignedBytes>((bytes <= uint8_t{below - 1}) | (bytes == uint8_t{0x7f}));
  };
  const auto min = [](Bytes a, Bytes b) { return a < b ? a : b; };

  // Most fields end within their first block.
  if (size - pos >= kBlockBytes) {
    const SignedBytes hits = matches(pos);
    if (AnyHit(hits)) return pos + FirstHit(hits);
    pos += kBlockBytes;
  }
  constexpr size_t kGroupBytes = 4 * kBlockBytes;
  for (; size - pos >= kGroupBytes; pos += kGroupBytes) {
    if (!AnyHit(candidates(min(min(shifted(pos), shifted(pos + kBlockBytes)),
                               min(shifted(pos + 2 * kBlockBytes), shifted(pos + 3 * kBlockBytes)))))) {
      continue;
    }
    for (size_t at = pos; at < pos + kGroupBytes; at += kBlockBytes) {
      const SignedBytes hits = matches(at);
      if (AnyHit(hits)) return at + FirstHit(hits);
    }
  }
  for (; size - pos >= kBlockBytes; pos += kBlockBytes) {
    const SignedBytes hits = matches(pos);
    if (AnyHit(hits)) return pos + FirstHit(hits);
  }
  for (; pos < size; ++pos) {
    const auto byte = static_cast<uint8_t>(data[pos]);
    if (byte < below || byte == 0x7f) return pos;
  }
  return size;
}

// Offset of the first byte at or after `pos` that is not a tchar, or buf.size(). Field
// names are mostly letters, digits and '-': a block of those is skipped at once, and any
// other byte is looked up (the ':' that ends the name, or a rarer tchar such as '_').
size_t SkipTchars(std::string_view buf, size_t pos) {
  const char* data = buf.data();
  const size_t size = buf.size();
  while (size - pos >= kBlockBytes) {
    const Bytes block = Load<Bytes>(data + pos);
    const Bytes lowered = block | uint8_t{0x20};  // a letter of either case, lowercase
    const SignedBytes common = ((lowered - uint8_t{'a'}) < uint8_t{26}) |
                               ((block - uint8_t{'0'}) < uint8_t{10}) | (block == uint8_t{'-'});
    const SignedBytes other = ~common;
    if (!AnyHit(other)) {
      pos += kBlockBytes;
      continue;
    }
    pos += FirstHit(other);
    if (!IsTchar(data[pos])) return pos;
    ++pos;
  }
  while (pos < size && IsTchar(data[pos])) ++pos;
  return pos;
}

int HexValue(char c) {
  if (IsDigit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char ToLowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

// Whether the words `a` and `b` (bytes of the same strings) are equal ignoring ASCII case,
// all their bytes at once: they may differ only in bit 0x20, and only where `a`'s byte is
// a letter.
template <typename Word>
bool WordEqualsIgnoreCase(Word a, Word b) {
  constexpr auto kEach = [](uint8_t byte) { return static_cast<Word>(0x0101010101010101ull * byte); };
  const Word differ = a ^ b;
  if (differ == 0) return true;
  if ((differ & ~kEach(0x20)) != 0) return false;
  // A letter, lowercased, is 0x61-0x7a: in the low 7 bits, adding 0x1f carries into bit
  // 7 from 0x61 on, and adding 0x05 from 0x7b on; no byte carries into the next.
  const Word lowered = a | kEach(0x20);
  const Word low_bits = lowered & kEach(0x7f);
  const Word letters = (low_bits + kEach(0x1f)) & ~(low_bits + kEach(0x05)) & ~lowered & kEach(0x80);
  const Word case_differs = (differ & kEach(0x20)) << 2;  // bit 7 where only the case differs
  return (case_differs & ~letters) == 0;
}

// ASCII case-insensitive equality, 8 or 4 bytes at a time (names are compared per lookup
// of each kept field).
bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  const size_t size = a.size();
  const char* x = a.data();
  const char* y = b.data();
  if (size >= 8) {
    for (size_t at = 0; at + 8 < size; at += 8) {
      if (!WordEqualsIgnoreCase(Load<uint64_t>(x + at), Load<uint64_t>(y + at))) return false;
    }
    return WordEqualsIgnoreCase(Load<uint64_t>(x + size - 8), Load<uint64_t>(y + size - 8));
  }
  if (size >= 4) {  // two overlapping words
    return WordEqualsIgnoreCase(Load<uint32_t>(x), Load<uint32_t>(y)) &&
           WordEqualsIgnoreCase(Load<uint32_t>(x + size - 4), Load<uint32_t>(y + size - 4));
  }
  for (size_t i = 0; i < size; ++i) {
    if (ToLowerAscii(x[i]) != ToLowerAscii(y[i])) return false;
  }
  return true;
}

// For each name length under 64, a bit per kept name of that length (bit i:
// kKeptFieldNames[i]): a name's length rules out most fields, and picks the one or few
// kept names worth comparing without walking the whole list.
constexpr size_t kMaxKeptNameBytes = 63;
static_assert(kKeptFieldNames.size() <= 8, "kKeptByLength holds a bit per kept name in a byte");
constexpr std::array<uint8_t, kMaxKeptNameBytes + 1> kKeptByLength = [] {
  std::array<uint8_t, kMaxKeptNameBytes + 1> table{};
  for (size_t i = 0; i < kKeptFieldNames.size(); ++i) {
    table[kKeptFieldNames[i].size()] |= static_cast<uint8_t>(1u << i);
  }
  return table;
}();

// Kept names are lowercase letters and '-', at least 4 bytes long. For such a name,
// OR-ing 0x20 into each byte of a field name (a token, so no CR) lowercases it exactly:
// a letter matches either case, and '-' only '-'. That lets names be compared 4 or 8
// bytes at a time.
constexpr bool IsFoldableName(std::string_view name) {
  if (name.size() < 4) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || c == '-')) return false;
  }
  return true;
}
static_assert(std::all_of(kKeptFieldNames.begin(), kKeptFieldNames.end(), IsFoldableName),
              "EqualsFoldableName needs lowercase kept names of 4 bytes or more");

template <typename Word>
Word LoadFolded(const char* at) {
  return Load<Word>(at) | static_cast<Word>(0x2020202020202020ull);
}

// `name` (a field name token) equals `kept` (IsFoldableName) ignoring case; same sizes.
bool EqualsFoldableName(std::string_view name, std::string_view kept) {
  const size_t size = kept.size();
  const char* a = name.data();
  const char* b = kept.data();
  if (size < 8) {  // two overlapping 4-byte words
    return LoadFolded<uint32_t>(a) == Load<uint32_t>(b) &&
           LoadFolded<uint32_t>(a + size - 4) == Load<uint32_t>(b + size - 4);
  }
  for (size_t at = 0; at + 8 < size; at += 8) {
    if (LoadFolded<uint64_t>(a + at) != Load<uint64_t>(b + at)) return false;
  }
  return LoadFolded<uint64_t>(a + size - 8) == Load<uint64_t>(b + size - 8);
}

// kKeptFieldNames index of `name`, or -1 for a field that is not kept.
int KeptFieldIndex(std::string_view name) {
  if (name.size() > kMaxKeptNameBytes) return -1;
  for (unsigned candidates = kKeptByLength[name.size()]; candidates != 0; candidates &= candidates - 1) {
    const int i = std::countr_zero(candidates);
    if (EqualsFoldableName(name, kKeptFieldNames[static_cast<size_t>(i)])) return i;
  }
  return -1;
}

constexpr int KeptFieldIndexOf(std::string_view name) {
  for (size_t i = 0; i < kKeptFieldNames.size(); ++i) {
    if (kKeptFieldNames[i] == name) return static_cast<int>(i);
  }
  return -1;
}
constexpr int kTransferEncodingField = KeptFieldIndexOf("transfer-encoding");
constexpr int kContentLengthField = KeptFieldIndexOf("content-length");
static_assert(kTransferEncodingField >= 0 && kContentLengthField >= 0,
              "framing needs its fields kept");

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls `fn` with each trimmed element of a comma-separated field value, empty ones
// included; stops early when `fn` returns false.
template <typename Fn>
void ForEachListElement(std::string_view value, Fn fn) {
  while (true) {
    const size_t comma = value.find(',');
    if (!fn(TrimOws(value.substr(0, comma)))) return;
    if (comma == std::string_view::npos) return;
    value.remove_prefix(comma + 1);
  }
}

// Each known method with its SP fits in 8 bytes: with 8 bytes at hand, a method is
// matched by comparing the first word, masked to its length, with the method's word.
struct MethodWord {
  uint64_t mask;
  uint64_t word;  // "GET " in memory order
};
constexpr std::array<MethodWord, kMethods.size()> kMethodWords = [] {
  std::array<MethodWord, kMethods.size()> words{};
  for (size_t i = 0; i < kMethods.size(); ++i) {
    const std::string_view method = kMethods[i];
    for (size_t at = 0; at <= method.size(); ++at) {
      const uint64_t byte = at < method.size() ? static_cast<uint8_t>(method[at]) : uint64_t{' '};
      const size_t shift = std::endian::native == std::endian::little ? 8 * at : 8 * (7 - at);
      words[i].mask |= uint64_t{0xff} << shift;
      words[i].word |= byte << shift;
    }
  }
  return words;
}();
static_assert(std::all_of(kMethods.begin(), kMethods.end(),
                          [](std::string_view method) { return method.size() < 8; }),
              "kMethodWords needs a method and its SP in 8 bytes");

// "METHOD SP" with a known method at the start of `s`.
Match MatchMethod(std::string_view s, std::string_view* method) {
  if (s.size() >= sizeof(uint64_t)) {
    const uint64_t first = Load<uint64_t>(s.data());
    for (size_t i = 0; i < kMethods.size(); ++i) {
      if ((first & kMethodWords[i].mask) == kMethodWords[i].word) {
        *method = kMethods[i];
        return Match::kYes;
      }
    }
    return Match::kNo;
  }
  bool prefix = false;
  for (std::string_view m : kMethods) {
    if (s.size() > m.size()) {
      if (s.substr(0, m.size()) == m && s[m.size()] == ' ') {
        *method = m;
        return Match::kYes;
      }
    } else if (m.substr(0, s.size()) == s) {
      prefix = true;
    }
  }
  return prefix ? Match::kPrefix : Match::kNo;
}

// origin-form "/", asterisk-form "*", absolute-form "http://"; CONNECT takes
// authority-form "host:port" (or "[v6]:port").
bool PlausibleTargetStart(std::string_view method, char c) {
  if (c == '/' || c == '*' || c == 'h' || c == 'H') return true;
  return method == "CONNECT" && (IsAlnum(c) || c == '[');
}

Match MatchRequestStart(std::string_view s) {
  std::string_view method;
  const Match match = MatchMethod(s, &method);
  if (match != Match::kYes) return match;
  if (s.size() == method.size() + 1) return Match::kPrefix;
  return PlausibleTargetStart(method, s[method.size() + 1]) ? Match::kYes : Match::kNo;
}

// "HTTP/1.0 " or "HTTP/1.1 " and the first digit of a status code.
// "HTTP/1.0" and "HTTP/1.1" differ only in the low bit of their last byte: with 8 bytes at
// hand, both are matched by one comparison of the masked word.
bool IsVersionWord(const char* at) {
  return (Load<uint64_t>(at) & Load<uint64_t>("\xff\xff\xff\xff\xff\xff\xff\xfe")) ==
         Load<uint64_t>("HTTP/1.0");
}

Match MatchResponseStart(std::string_view s) {
  constexpr size_t kMatchBytes = 10;
  if (s.size() >= kMatchBytes) {
    return IsVersionWord(s.data()) && s[8] == ' ' && s[9] >= '1' && s[9] <= '9' ? Match::kYes
                                                                                  : Match::kNo;
  }
  for (size_t i = 0; i < std::min(s.size(), kMatchBytes); ++i) {
    const char c = s[i];
    bool ok;
    if (i < kVersionPrefix.size()) {
      ok = c == kVersionPrefix[i];
    } else if (i == kVersionPrefix.size()) {
      ok = c == '0' || c == '1';
    } else if (i == kVersionPrefix.size() + 1) {
      ok = c == ' ';
    } else {
      ok = c >= '1' && c <= '9';
    }
    if (!ok) return Match::kNo;
  }
  return s.size() >= kMatchBytes ? Match::kYes : Match::kPrefix;
}

bool IsNoBodyStatus(int status_code) {
  return (status_code >= 100 && status_code < 200) || status_code == 204 || status_code == 304;
}

}  // namespace

// Walks a head once, keeping views of its parts (no allocation: an incomplete head is
// parsed again on every call that adds bytes); Fill() copies them into a Message only
// once the head is complete.
class HeadParser {
 public:
  HeadParser(std::string_view buf, const ParseLimits& limits) : buf_(buf), limits_(limits) {}

  ParseState Parse(MessageType type) {
    ParseState state =
        type == MessageType::kRequest ? ParseRequestLine() : ParseStatusLine();
    if (state != ParseState::kSuccess) return state;
    state = ParseHeaderLines();
    if (state != ParseState::kSuccess) return state;
    return DecideFraming(type);
  }

  // After Parse() returned kSuccess. The message's text keeps its storage.
  void Fill(MessageType type, Message* out) const {
    out->type = type;
    out->minor_version = minor_version_;
    out->status_code = status_code_;
    // Each field is copied as it lies in the head, from its name to the end of its value
    // (the colon and spaces between them included): one copy per field.
    const auto line_bytes = [](const FieldView& field) {
      return static_cast<uint32_t>(field.value + field.value_size - field.name);
    };
    size_t field_bytes = 0;
    for (size_t i = 0; i < kept_count_; ++i) field_bytes += line_bytes(Field(i));
    char* const text = out->LayOut(method_, target_, reason_, field_bytes, kept_count_);
    auto name_begin = static_cast<uint32_t>(text - out->text_.data());
    for (size_t i = 0; i < kept_count_; ++i) {
      const FieldView& field = Field(i);
      const uint32_t bytes = line_bytes(field);
      std::memcpy(out->text_.data() + name_begin, field.name, bytes);
      const auto value_begin = static_cast<uint32_t>(name_begin + (field.value - field.name));
      out->SetEntry(i, {name_begin, field.name_size, value_begin, field.value_size});
      name_begin += bytes;
    }
    out->field_count = field_count_;
    out->head_bytes = pos_;
    out->framing = framing_;
    out->content_length = framing_ == BodyFraming::kContentLength ? content_length_ : 0;
  }

 private:
  bool AtEnd() const { return pos_ >= buf_.size(); }

  // Matches `literal` at pos_; a truncated match is kNeedsMoreData.
  ParseState ExpectLiteral(std::string_view literal) {
    const size_t available = std::min(literal.size(), buf_.size() - pos_);
    if (buf_.substr(pos_, available) != literal.substr(0, available)) {
      return ParseState::kInvalid;
    }
    pos_ += available;
    return available == literal.size() ? ParseState::kSuccess : ParseState::kNeedsMoreData;
  }

  // CRLF or a bare LF.
  ParseState ExpectLineEnd() {
    if (AtEnd()) return ParseState::kNeedsMoreData;
    if (buf_[pos_] == '\n') {
      ++pos_;
      return ParseState::kSuccess;
    }
    if (buf_[pos_] != '\r') return ParseState::kInvalid;
    if (pos_ + 1 >= buf_.size()) return ParseState::kNeedsMoreData;
    if (buf_[pos_ + 1] != '\n') return ParseState::kInvalid;
    pos_ += 2;
    return ParseState::kSuccess;
  }

  // "HTTP/1.0" or "HTTP/1.1".
  ParseState ParseVersion(int* minor_version) {
    if (buf_.size() - pos_ >= sizeof(uint64_t)) {
      if (!IsVersionWord(buf_.data() + pos_)) return ParseState::kInvalid;
      *minor_version = buf_[pos_ + kVersionPrefix.size()] - '0';
      pos_ += sizeof(uint64_t);
      return ParseState::kSuccess;
    }
    const ParseState state = ExpectLiteral(kVersionPrefix);
    if (state != ParseState::kSuccess) return state;
    if (AtEnd()) return ParseState::kNeedsMoreData;
    const char minor = buf_[pos_];
    if (minor != '0' && minor != '1') return ParseState::kInvalid;
    ++pos_;
    *minor_version = minor - '0';
    return ParseState::kSuccess;
  }

  // Advances pos_ to the CR or LF that ends the current line, rejecting control bytes
  // other than HTAB.
  ParseState ScanToLineEnd() {
    while (true) {
      pos_ = FindControlByte<' '>(buf_, pos_);
      if (AtEnd()) return ParseState::kNeedsMoreData;
      const char c = buf_[pos_];
      if (c == '\r' || c == '\n') return ParseState::kSuccess;
      if (c != '\t') return ParseState::kInvalid;
      ++pos_;
    }
  }

  ParseState ParseRequestLine() {
    std::string_view method;
    const Match match = MatchMethod(buf_, &method);
    if (match == Match::kNo) return ParseState::kInvalid;
    if (match == Match::kPrefix) return ParseState::kNeedsMoreData;
    pos_ = method.size() + 1;

    const size_t target_begin = pos_;
    if (AtEnd()) return ParseState::kNeedsMoreData;
    if (!PlausibleTargetStart(method, buf_[pos_])) return ParseState::kInvalid;
    // SP ends the target; any other control byte (HTAB and DEL included) is invalid.
    pos_ = FindControlByte<' ' + 1>(buf_, pos_);
    if (AtEnd()) return ParseState::kNeedsMoreData;
    if (buf_[pos_] != ' ') return ParseState::kInvalid;
    const std::string_view target = buf_.substr(target_begin, pos_ - target_begin);
    ++pos_;  // the SP

    int minor_version = 0;
    ParseState state = ParseVersion(&minor_version);
    if (state != ParseState::kSuccess) return state;
    state = ExpectLineEnd();
    if (state != ParseState::kSuccess) return state;

    minor_version_ = minor_version;
    method_ = method;
    target_ = target;
    return ParseState::kSuccess;
  }

  ParseState ParseStatusLine() {
    int minor_version = 0;
    ParseState state = ParseVersion(&minor_version);
    if (state != ParseState::kSuccess) return state;
    state = ExpectLiteral(" ");
    if (state != ParseState::kSuccess) return state;

    int status_code = 0;
    for (int i = 0; i < 3; ++i) {
      if (AtEnd()) return ParseState::kNeedsMoreData;
      const char c = buf_[pos_];
      if (!IsDigit(c) || (i == 0 && c == '0')) return ParseState::kInvalid;
      status_code = status_code * 10 + (c - '0');
      ++pos_;
    }

    // The SP before an empty reason phrase is often omitted: "HTTP/1.1 200\r\n".
    if (AtEnd()) return ParseState::kNeedsMoreData;
    if (buf_[pos_] == ' ') {
      ++pos_;
    } else if (buf_[pos_] != '\r' && buf_[pos_] != '\n') {
      return ParseState::kInvalid;
    }
    const size_t reason_begin = pos_;
    state = ScanToLineEnd();
    if (state != ParseState::kSuccess) return state;
    const std::string_view reason = buf_.substr(reason_begin, pos_ - reason_begin);
    state = ExpectLineEnd();
    if (state != ParseState::kSuccess) return state;

    minor_version_ = minor_version;
    status_code_ = status_code;
    reason_ = reason;
    return ParseState::kSuccess;
  }

  // The position and count are kept in locals for the loop and stored when it returns:
  // members written back around each call were a measurable part of every header line.
  ParseState ParseHeaderLines() {
    const char* data = buf_.data();
    const size_t size = buf_.size();
    const size_t max_fields = limits_.max_headers;
    size_t pos = pos_;
    size_t field_count = field_count_;
    const auto stop = [&](ParseState state) {
      pos_ = pos;
      field_count_ = field_count;
      return state;
    };
    while (true) {
      if (pos >= size) return stop(ParseState::kNeedsMoreData);
      const char first = data[pos];
      if (first == '\r' || first == '\n') {  // the blank line
        stop(ParseState::kSuccess);
        return ExpectLineEnd();
      }

      // Leading whitespace is an obs-fold continuation (or junk before a name): rejected
      // rather than unfolded, as RFC 9112 section 5.2 allows.
      const size_t name_begin = pos;
      pos = SkipTchars(buf_, pos);
      if (pos >= size) return stop(ParseState::kNeedsMoreData);
      if (data[pos] != ':' || pos == name_begin) return stop(ParseState::kInvalid);
      const std::string_view name(data + name_begin, pos - name_begin);
      ++pos;  // the colon

      // The value, up to CR or LF; HTAB is the only other control byte allowed.
      const size_t value_begin = pos;
      while (true) {
        pos = FindControlByte<' '>(buf_, pos);
        if (pos >= size) return stop(ParseState::kNeedsMoreData);
        const char c = data[pos];
        if (c == '\r' || c == '\n') break;
        if (c != '\t') return stop(ParseState::kInvalid);
        ++pos;
      }
      const size_t value_end = pos;
      // CRLF or a bare LF.
      if (data[pos] == '\r') {
        if (pos + 1 >= size) return stop(ParseState::kNeedsMoreData);
        if (data[pos + 1] != '\n') return stop(ParseState::kInvalid);
        ++pos;
      }
      ++pos;

      if (++field_count > max_fields) return stop(ParseState::kInvalid);
      const int kept = KeptFieldIndex(name);
      if (kept < 0) continue;
      const std::string_view value = TrimOws({data + value_begin, value_end - value_begin});
      NoteFramingField(kept, value);
      AddField(name, value);
    }
  }

  // Only Content-Length and Transfer-Encoding decide the framing.
  void NoteFramingField(int kept_field, std::string_view value) {
    if (kept_field == kTransferEncodingField) {
      has_transfer_encoding_ = true;
      ForEachListElement(value, [&](std::string_view coding) {
        if (!coding.empty()) last_coding_ = coding;
        return true;
      });
    } else if (kept_field == kContentLengthField) {
      // "5, 5" (a list of equal values) is allowed; anything else conflicting is not.
      ForEachListElement(value, [&](std::string_view element) {
        uint64_t parsed = 0;
        bool ok = !element.empty();
        for (char c : element) {
          if (!IsDigit(c) || parsed > (UINT64_MAX - static_cast<uint64_t>(c - '0')) / 10) {
            ok = false;
            break;
          }
          parsed = parsed * 10 + static_cast<uint64_t>(c - '0');
        }
        if (!ok || (has_content_length_ && parsed != content_length_)) {
          content_length_valid_ = false;
          return false;
        }
        has_content_length_ = true;
        content_length_ = parsed;
        return true;
      });
    }
  }

  // RFC 9112 section 6.3, from the start line and headers alone.
  ParseState DecideFraming(MessageType type) {
    const bool is_request = type == MessageType::kRequest;
    framing_ = BodyFraming::kNone;
    // Transfer-Encoding overrides Content-Length, so a bad Content-Length beside it is
    // ignored.
    if (has_transfer_encoding_) {
      if (EqualsIgnoreCase(last_coding_, "chunked")) {
        framing_ = BodyFraming::kChunked;
      } else if (is_request) {
        return ParseState::kInvalid;  // a request body must end in chunked to be delimited
      } else {
        framing_ = BodyFraming::kUntilClose;
      }
    } else if (!content_length_valid_) {
      return ParseState::kInvalid;
    } else if (has_content_length_) {
      framing_ = BodyFraming::kContentLength;
    } else if (!is_request) {
      framing_ = BodyFraming::kUntilClose;
    }

    if (!is_request && IsNoBodyStatus(status_code_)) framing_ = BodyFraming::kNone;
    return ParseState::kSuccess;
  }

  void AddField(std::string_view name, std::string_view value) {
    // Fields lie in the first max_head_bytes of the buffer (64 KiB unless configured).
    const FieldView field{name.data(), value.data(), static_cast<uint32_t>(name.size()),
                          static_cast<uint32_t>(value.size())};
    if (kept_count_ < kInlineFields) {
      inline_fields_[kept_count_] = field;
    } else {
      more_fields_.push_back(field);
    }
    ++kept_count_;
  }

  // Enough kept fields for any ordinary head without touching the heap.
  static constexpr size_t kInlineFields = 16;

  std::string_view buf_;
  const ParseLimits& limits_;
  size_t pos_ = 0;
  int minor_version_ = 1;
  int status_code_ = 0;
  std::string_view method_, target_, reason_;
  // Trivially constructible, so the inline slots are not zero-filled on every parse
  // (string_views would be: a tenth of a small head's parse).
  struct FieldView {
    const char* name;
    const char* value;
    uint32_t name_size;
    uint32_t value_size;
  };
  FieldView inline_fields_[kInlineFields];  // the first kept_count_ are set
  std::vector<FieldView> more_fields_;
  const FieldView& Field(size_t i) const {
    return i < kInlineFields ? inline_fields_[i] : more_fields_[i - kInlineFields];
  }
  size_t kept_count_ = 0;
  size_t field_count_ = 0;  // kept or not

  // What the framing fields said so far.
  bool has_transfer_encoding_ = false;
  std::string_view last_coding_;
  bool has_content_length_ = false;
  bool content_length_valid_ = true;
  uint64_t content_length_ = 0;
  BodyFraming framing_ = BodyFraming::kNone;
};

namespace {
// Texts of destroyed messages, taken by messages parsed later: a message's text is its
// only allocation, and a message is made and destroyed for every request and response.
// Per thread and bounded (32 x 4 KiB at most): enough for a message per side of the
// calls in flight on a busy host (with 8, 40 connections' messages took about 1% of the
// agent's CPU in malloc and free), while many more, filled during a burst and kept, held
// scattered heap pages that no trim could give back (64 of them and the trace groups'
// free list: ~2 MB).
constexpr size_t kMaxSpareTexts = 32;
constexpr size_t kMaxSpareTextBytes = 4096;
const size_t kInlineTextBytes = std::string().capacity();  // short strings live in the object
thread_local std::vector<std::string> spare_texts;
}  // namespace

Message::~Message() {
  if (text_.capacity() > kInlineTextBytes && text_.capacity() <= kMaxSpareTextBytes &&
      spare_texts.size() < kMaxSpareTexts) {
    spare_texts.push_back(std::move(text_));
  }
}

char* Message::LayOut(std::string_view method, std::string_view target, std::string_view reason,
                      size_t field_bytes, size_t fields) {
  const size_t start_line = method.size() + target.size() + reason.size();
  const size_t entries_begin = start_line + field_bytes;
  const size_t text_bytes = entries_begin + fields * sizeof(HeaderFields::Entry);
  if (text_bytes > text_.capacity() && text_.capacity() == kInlineTextBytes && !spare_texts.empty()) {
    text_.swap(spare_texts.back());
    spare_texts.pop_back();
  }
  text_.resize(text_bytes);
  char* at = text_.data();
  for (std::string_view part : {method, target, reason}) {
    std::char_traits<char>::copy(at, part.data(), part.size());  // no call when empty
    at += part.size();
  }
  method_size_ = static_cast<uint32_t>(method.size());
  target_size_ = static_cast<uint32_t>(target.size());
  reason_size_ = static_cast<uint32_t>(reason.size());
  entries_begin_ = static_cast<uint32_t>(entries_begin);
  field_entries_ = static_cast<uint32_t>(fields);
  return at;
}

void Message::SetText(std::string_view method, std::string_view target, std::string_view reason,
                      std::initializer_list<HeaderField> fields) {
  size_t field_bytes = 0;
  for (const HeaderField& field : fields) field_bytes += field.name.size() + field.value.size();
  auto name_begin = static_cast<uint32_t>(LayOut(method, target, reason, field_bytes, fields.size()) - text_.data());
  size_t i = 0;
  for (const HeaderField& field : fields) {
    char* const name = text_.data() + name_begin;
    std::char_traits<char>::copy(name, field.name.data(), field.name.size());
    std::char_traits<char>::copy(name + field.name.size(), field.value.data(), field.value.size());
    const auto name_size = static_cast<uint32_t>(field.name.size());
    const auto value_size = static_cast<uint32_t>(field.value.size());
    SetEntry(i++, {name_begin, name_size, name_begin + name_size, value_size});
    name_begin += name_size + value_size;
  }
}

std::string_view Message::Header(std::string_view name) const {
  for (const HeaderField field : headers()) {
    if (EqualsIgnoreCase(field.name, name)) return field.value;
  }
  return {};
}

bool Message::HasHeader(std::string_view name) const {
  const HeaderFields fields = headers();
  return std::any_of(fields.begin(), fields.end(),
                     [&](const HeaderField& field) { return EqualsIgnoreCase(field.name, name); });
}

size_t FindMessageStart(MessageType type, std::string_view buf, size_t from) {
  for (size_t i = from; i < buf.size(); ++i) {
    const std::string_view rest = buf.substr(i);
    const Match match =
        type == MessageType::kRequest ? MatchRequestStart(rest) : MatchResponseStart(rest);
    if (match != Match::kNo) return i;  // a truncated candidate may still complete
  }
  return std::string_view::npos;
}

ParseState ParseHead(MessageType type, std::string_view buf, Message* out,
                     const ParseLimits& limits) {
  if (type == MessageType::kRequest && !buf.empty() && (buf[0] == '\r' || buf[0] == '\n')) {
    if (buf[0] == '\n') {
      out->head_bytes = 1;
      return ParseState::kIgnored;
    }
    if (buf.size() < 2) return ParseState::kNeedsMoreData;
    if (buf[1] != '\n') return ParseState::kInvalid;
    out->head_bytes = 2;
    return ParseState::kIgnored;
  }

  // Parsing only the allowed prefix bounds the work and makes an oversized head kInvalid.
  const std::string_view bounded = buf.substr(0, std::min(buf.size(), limits.max_head_bytes));
  HeadParser parser(bounded, limits);
  const ParseState state = parser.Parse(type);
  if (state == ParseState::kNeedsMoreData && buf.size() > limits.max_head_bytes) {
    return ParseState::kInvalid;
  }
  if (state != ParseState::kSuccess) return state;
  parser.Fill(type, out);
  return ParseState::kSuccess;
}

BodyFraming ResponseFraming(const Message& response, std::string_view request_method) {
  if (IsNoBodyStatus(response.status_code) || request_method == "HEAD") {
    return BodyFraming::kNone;
  }
  // A 2xx answer to CONNECT turns the connection into a tunnel: the rest is not HTTP.
  if (request_method == "CONNECT" && response.status_code >= 200 &&
      response.status_code < 300) {
    return BodyFraming::kUntilClose;
  }
  return response.framing;
}

bool WantsClose(const Message& message) {
  bool close = false;
  bool keep_alive = false;
  for (const auto& [name, value] : message.headers()) {
    if (!EqualsIgnoreCase(name, "Connection")) continue;
    ForEachListElement(value, [&](std::string_view option) {
      close = close || EqualsIgnoreCase(option, "close");
      keep_alive = keep_alive || EqualsIgnoreCase(option, "keep-alive");
      return true;
    });
  }
  return close || (message.minor_version == 0 && !keep_alive);
}

ParseState ChunkedBodyDecoder::Feed(std::string_view data, size_t* consumed) {
  size_t pos = 0;
  // On kInvalid, *consumed is the offset of the offending byte.
  const auto fail = [&]() {
    *consumed = pos - 1;
    return ParseState::kInvalid;
  };
  // An LF ended a chunk-size line or a trailer line. Trailer bytes are counted from the
  // byte after the last chunk's size line, so a non-zero count means we are in the
  // trailer section, where an empty line ends the body.
  const auto end_line = [&]() {
    const bool in_trailer = trailer_total_bytes_ > 0;
    if (!in_trailer) {
      stage_ = chunk_remaining_ == 0 ? Stage::kTrailer : Stage::kData;
    } else {
      stage_ = trailer_line_bytes_ == 0 ? Stage::kDone : Stage::kTrailer;
    }
    trailer_line_bytes_ = 0;
  };
  const auto start_size_line = [&]() {
    stage_ = Stage::kSize;
    size_digits_ = 0;
    chunk_remaining_ = 0;
  };

  while (pos < data.size() && stage_ != Stage::kDone) {
    if (stage_ == Stage::kData) {
      const uint64_t n = std::min<uint64_t>(chunk_remaining_, data.size() - pos);
      pos += n;
      chunk_remaining_ -= n;
      body_bytes_ += n;
      if (chunk_remaining_ == 0) stage_ = Stage::kDataCr;
      continue;
    }

    const char c = data[pos++];
    switch (stage_) {
      case Stage::kSize: {
        const int digit = HexValue(c);
        if (digit >= 0) {
          if (++size_digits_ > kMaxChunkSizeDigits) return fail();
          chunk_remaining_ = (chunk_remaining_ << 4) | static_cast<uint64_t>(digit);
        } else if (size_digits_ == 0) {
          return fail();
        } else if (c == ';' || c == ' ' || c == '\t') {
          stage_ = Stage::kSizeExtension;  // extensions (and BWS before them) are skipped
        } else if (c == '\r') {
          stage_ = Stage::kSizeLf;
        } else if (c == '\n') {
          end_line();
        } else {
          return fail();
        }
        break;
      }
      case Stage::kSizeExtension:
        if (c == '\r') {
          stage_ = Stage::kSizeLf;
        } else if (c == '\n') {
          end_line();
        } else if (IsForbiddenCtl(c)) {
          return fail();
        }
        break;
      case Stage::kSizeLf:  // also the LF after a CR in the trailer section
        if (c != '\n') return fail();
        if (trailer_total_bytes_ > 0 && ++trailer_total_bytes_ > kMaxTrailerBytes) {
          return fail();
        }
        end_line();
        break;
      case Stage::kDataCr:
        if (c == '\r') {
          stage_ = Stage::kDataLf;
        } else if (c == '\n') {
          start_size_line();
        } else {
          return fail();
        }
        break;
      case Stage::kDataLf:
        if (c != '\n') return fail();
        start_size_line();
        break;
      case Stage::kTrailer:
        if (++trailer_total_bytes_ > kMaxTrailerBytes) return fail();
        if (c == '\r') {
          stage_ = Stage::kSizeLf;
        } else if (c == '\n') {
          end_line();
        } else if (trailer_line_bytes_ == 0 ? !IsTchar(c) : IsForbiddenCtl(c)) {
          return fail();  // a trailer field starts with its name; no obs-fold
        } else {
          ++trailer_line_bytes_;
        }
        break;
      case Stage::kData:
      case Stage::kDone:
        break;  // handled before the switch
    }
  }
  *consumed = pos;
  return stage_ == Stage::kDone ? ParseState::kSuccess : ParseState::kNeedsMoreData;
}

}  // namespace flowtracer::http1
