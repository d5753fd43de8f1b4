#include "agent/spans/ids.h"

#include <algorithm>
#include <random>

namespace flowtracer::spans {
namespace {

std::mt19937_64& Generator() {
  thread_local std::mt19937_64 generator([] {
    std::random_device device;
    return (static_cast<uint64_t>(device()) << 32) ^ device();
  }());
  return generator;
}

template <size_t N>
std::array<uint8_t, N> RandomNonZero() {
  std::array<uint8_t, N> id{};
  do {
    for (size_t i = 0; i < N; i += 8) {
      uint64_t value = Generator()();
      for (size_t j = 0; j < 8 && i + j < N; ++j) id[i + j] = static_cast<uint8_t>(value >> (8 * j));
    }
  } while (std::all_of(id.begin(), id.end(), [](uint8_t b) { return b == 0; }));
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
