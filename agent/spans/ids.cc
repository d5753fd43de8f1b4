#include "agent/spans/ids.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <random>

namespace flowtracer::spans {
namespace {

// Ids need unpredictable, uniformly distributed 64-bit words, not a cryptographic
// generator (W3C Trace Context asks for randomness, and ids are not secrets): xoshiro256++
// (Blackman and Vigna) gives 64-bit outputs that pass BigCrush from a 256-bit state, in a
// dozen instructions. mt19937_64 took ~100 per word and refilled its 2.5 KB table every
// 312 words. The state is seeded with 256 bits from std::random_device once per thread.
class IdGenerator {
 public:
  IdGenerator() {
    std::random_device device;
    uint64_t any = 0;
    for (uint64_t& word : state_) {
      word = (static_cast<uint64_t>(device()) << 32) ^ device();
      any |= word;
    }
    if (any == 0) state_[0] = 0x9e3779b97f4a7c15ull;  // the all-zero state is a fixed point
  }
  uint64_t Next() {
    const uint64_t result = std::rotl(state_[0] + state_[3], 23) + state_[0];
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = std::rotl(state_[3], 45);
    return result;
  }

 private:
  uint64_t state_[4];
};

IdGenerator& Generator() {
  thread_local IdGenerator generator;
  return generator;
}

template <size_t N>
std::array<uint8_t, N> RandomNonZero() {
  static_assert(N % 8 == 0);
  IdGenerator& generator = Generator();
  std::array<uint8_t, N> id;
  uint64_t any;
  do {
    any = 0;
    for (size_t i = 0; i < N; i += 8) {
      const uint64_t value = generator.Next();
      any |= value;
      std::memcpy(id.data() + i, &value, sizeof(value));
    }
  } while (any == 0);
  return id;
}

template <size_t N>
std::string Hex(const std::array<uint8_t, N>& id) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * N, '0');
  for (size_t i = 0; i < N; ++i) {
    out[2 * i] = kDigits[id[i] >> 4];
    out[2 * i + 1] = kDigits[id[i] & 0xf];
  }
  return out;
}

int LowerHexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

template <size_t N>
bool ParseHex(std::string_view text, std::array<uint8_t, N>* out) {
  if (text.size() != 2 * N) return false;
  for (size_t i = 0; i < N; ++i) {
    int high = LowerHexValue(text[2 * i]), low = LowerHexValue(text[2 * i + 1]);
    if (high < 0 || low < 0) return false;
    (*out)[i] = static_cast<uint8_t>(high << 4 | low);
  }
  return true;
}

}  // namespace

TraceId NewTraceId() { return RandomNonZero<16>(); }
SpanId NewSpanId() { return RandomNonZero<8>(); }

bool IsZero(const TraceId& id) { return std::all_of(id.begin(), id.end(), [](uint8_t b) { return b == 0; }); }
bool IsZero(const SpanId& id) { return std::all_of(id.begin(), id.end(), [](uint8_t b) { return b == 0; }); }

std::string ToHex(const TraceId& id) { return Hex(id); }
std::string ToHex(const SpanId& id) { return Hex(id); }

std::optional<TraceContext> ParseTraceparent(std::string_view value) {
  // Surrounding optional whitespace is part of the header syntax, not the value.
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.size() < 55) return std::nullopt;
  std::array<uint8_t, 1> version{};
  if (!ParseHex(value.substr(0, 2), &version) || version[0] == 0xff) return std::nullopt;
  if (version[0] == 0 && value.size() != 55) return std::nullopt;
  if (value.size() > 55 && value[55] != '-') return std::nullopt;
  if (value[2] != '-' || value[35] != '-' || value[52] != '-') return std::nullopt;
  TraceContext context;
  std::array<uint8_t, 1> flags{};
  if (!ParseHex(value.substr(3, 32), &context.trace_id) ||
      !ParseHex(value.substr(36, 16), &context.parent_id) || !ParseHex(value.substr(53, 2), &flags))
    return std::nullopt;
  if (IsZero(context.trace_id) || IsZero(context.parent_id)) return std::nullopt;
  context.flags = flags[0];
  return context;
}

namespace {

bool IsLowerAlpha(char c) { return c >= 'a' && c <= 'z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsKeyChar(char c) {
  return IsLowerAlpha(c) || IsDigit(c) || c == '_' || c == '-' || c == '*' || c == '/';
}

// key = simple-key / multi-tenant-key (section 3.3.1.3.1).
bool ValidTracestateKey(std::string_view key) {
  size_t at = key.find('@');
  if (at == std::string_view::npos) {
    if (key.empty() || key.size() > 256 || !IsLowerAlpha(key[0])) return false;
    return std::all_of(key.begin(), key.end(), IsKeyChar);
  }
  std::string_view tenant = key.substr(0, at), system = key.substr(at + 1);
  if (tenant.empty() || tenant.size() > 241 || !(IsLowerAlpha(tenant[0]) || IsDigit(tenant[0]))) return false;
  if (system.empty() || system.size() > 14 || !IsLowerAlpha(system[0])) return false;
  return std::all_of(tenant.begin(), tenant.end(), IsKeyChar) &&
         std::all_of(system.begin(), system.end(), IsKeyChar);
}

// value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E.
bool ValidTracestateValue(std::string_view value) {
  if (value.empty() || value.size() > 256 || value.back() == ' ') return false;
  return std::all_of(value.begin(), value.end(), [](char c) {
    return c >= 0x20 && c <= 0x7e && c != ',' && c != '=';
  });
}

std::string_view TrimOws(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x | 0x20) == (y | 0x20);
         });
}

}  // namespace

std::optional<std::string> ParseTracestate(const std::vector<std::string_view>& values) {
  constexpr size_t kMaxMembers = 32;
  std::vector<std::string_view> keys;
  std::string joined;
  for (std::string_view field : values) {
    while (true) {
      size_t comma = field.find(',');
      std::string_view member = TrimOws(field.substr(0, comma));
      if (!member.empty()) {
        size_t equals = member.find('=');
        if (equals == std::string_view::npos) return std::nullopt;
        std::string_view key = member.substr(0, equals), value = member.substr(equals + 1);
        if (!ValidTracestateKey(key) || !ValidTracestateValue(value)) return std::nullopt;
        if (std::find(keys.begin(), keys.end(), key) != keys.end()) return std::nullopt;
        if (keys.size() == kMaxMembers) return std::nullopt;
        keys.push_back(key);
        if (!joined.empty()) joined += ',';
        joined.append(member);
      }
      if (comma == std::string_view::npos) break;
      field.remove_prefix(comma + 1);
    }
  }
  return joined;
}

namespace {
// `headers`: (name, value) pairs of anything that views as strings.
template <typename Fields>
std::optional<TraceContext> TraceContextOf(const Fields& headers) {
  std::optional<std::string_view> traceparent;
  std::vector<std::string_view> tracestate;
  for (const auto& [name, value] : headers) {
    if (EqualsIgnoreCase(name, "traceparent")) {
      if (traceparent) return std::nullopt;
      traceparent = value;
    } else if (EqualsIgnoreCase(name, "tracestate")) {
      tracestate.push_back(value);
    }
  }
  if (!traceparent) return std::nullopt;
  std::optional<TraceContext> context = ParseTraceparent(*traceparent);
  if (!context) return std::nullopt;
  // An invalid tracestate does not invalidate the traceparent (section 3.3.1.1).
  if (auto state = ParseTracestate(tracestate)) context->trace_state = std::move(*state);
  return context;
}
}  // namespace

std::optional<TraceContext> ExtractTraceContext(
    const std::vector<std::pair<std::string, std::string>>& headers) {
  return TraceContextOf(headers);
}

std::optional<TraceContext> ExtractTraceContext(const http1::HeaderFields& headers) {
  return TraceContextOf(headers);
}

std::string FormatTraceparent(const TraceContext& context) {
  std::array<uint8_t, 1> flags{context.flags};
  return "00-" + ToHex(context.trace_id) + "-" + ToHex(context.parent_id) + "-" + Hex(flags);
}

std::string_view SpanKindName(SpanKind kind) {
  switch (kind) {
    case SpanKind::kServer: return "SERVER";
    case SpanKind::kClient: return "CLIENT";
    case SpanKind::kProducer: return "PRODUCER";
    case SpanKind::kConsumer: return "CONSUMER";
  }
  return "SERVER";
}

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kUnset: return "UNSET";
    case StatusCode::kOk: return "OK";
    case StatusCode::kError: return "ERROR";
  }
  return "UNSET";
}

}  // namespace flowtracer::spans
