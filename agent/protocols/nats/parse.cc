#include "agent/protocols/nats/parse.h"

#include <array>
#include <charconv>

namespace flowtracer::nats {
namespace {

struct VerbSpec {
  std::string_view text;
  Verb verb;
  bool has_arguments;  // followed by a space or tab; otherwise by the line ending
};

constexpr std::array<VerbSpec, 12> kVerbs = {{
    {"INFO", Verb::kInfo, true},
    {"CONNECT", Verb::kConnect, true},
    {"PUB", Verb::kPub, true},
    {"HPUB", Verb::kHpub, true},
    {"SUB", Verb::kSub, true},
    {"UNSUB", Verb::kUnsub, true},
    {"MSG", Verb::kMsg, true},
    {"HMSG", Verb::kHmsg, true},
    {"PING", Verb::kPing, false},
    {"PONG", Verb::kPong, false},
    {"+OK", Verb::kOk, false},
    {"-ERR", Verb::kErr, true},
}};

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (Lower(a[i]) != Lower(b[i])) return false;
  return true;
}

bool IsBlank(char c) { return c == ' ' || c == '\t'; }

enum class VerbMatch { kNo, kPrefix, kYes };

// Whether `buf` starts with `spec` and its separator (kPrefix: `buf` ends before deciding).
VerbMatch MatchVerb(std::string_view buf, const VerbSpec& spec) {
  size_t compared = std::min(buf.size(), spec.text.size());
  if (!EqualsIgnoreCase(buf.substr(0, compared), spec.text.substr(0, compared))) return VerbMatch::kNo;
  if (buf.size() <= spec.text.size()) return VerbMatch::kPrefix;
  char next = buf[spec.text.size()];
  if (IsBlank(next)) return VerbMatch::kYes;
  if (!spec.has_arguments && (next == '\r' || next == '\n')) return VerbMatch::kYes;
  return VerbMatch::kNo;
}

// The verb at the start of `buf`, or whether one may still start there.
VerbMatch MatchAnyVerb(std::string_view buf, const VerbSpec** found) {
  VerbMatch best = VerbMatch::kNo;
  for (const VerbSpec& spec : kVerbs) {
    VerbMatch match = MatchVerb(buf, spec);
    if (match == VerbMatch::kYes) {
      *found = &spec;
      return match;
    }
    if (match == VerbMatch::kPrefix) best = VerbMatch::kPrefix;
  }
  return best;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

// Splits on runs of spaces and tabs; false when there are more than `max_fields`.
bool SplitFields(std::string_view s, std::array<std::string_view, 6>* fields, size_t* count) {
  *count = 0;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && IsBlank(s[i])) ++i;
    if (i == s.size()) break;
    size_t start = i;
    while (i < s.size() && !IsBlank(s[i])) ++i;
    if (*count == fields->size()) return false;
    (*fields)[(*count)++] = s.substr(start, i - start);
  }
  return true;
}

bool ParseSize(std::string_view text, uint64_t limit, uint64_t* value) {
  if (text.empty() || text.size() > 18) return false;
  for (char c : text)
    if (c < '0' || c > '9') return false;
  std::from_chars(text.data(), text.data() + text.size(), *value);
  return *value <= limit;
}

// Fills the fields of a control line's arguments; false when they do not fit its verb.
bool ParseArguments(Verb verb, std::string_view arguments, Message* out, const ParseLimits& limits) {
  std::array<std::string_view, 6> f;
  size_t n = 0;
  switch (verb) {
    case Verb::kInfo:
    case Verb::kConnect:
    case Verb::kErr:
      out->argument.assign(Trim(arguments));
      return true;
    case Verb::kPing:
    case Verb::kPong:
    case Verb::kOk:
      return Trim(arguments).empty();
    default:
      break;
  }
  if (!SplitFields(arguments, &f, &n)) return false;
  auto sizes = [&](size_t first) -> bool {
    if (!CarriesHeaders(verb)) return ParseSize(f[first], limits.max_total_bytes, &out->total_bytes);
    // "NATS/1.0\r\n\r\n" is the shortest header block.
    return ParseSize(f[first], limits.max_total_bytes, &out->header_bytes) &&
           ParseSize(f[first + 1], limits.max_total_bytes, &out->total_bytes) &&
           out->header_bytes >= 12 && out->header_bytes <= out->total_bytes;
  };
  size_t size_fields = CarriesHeaders(verb) ? 2 : 1;
  switch (verb) {
    case Verb::kPub:
    case Verb::kHpub:
      // subject [reply-to] sizes
      if (n != 1 + size_fields && n != 2 + size_fields) return false;
      out->subject.assign(f[0]);
      if (n == 2 + size_fields) out->reply_to.assign(f[1]);
      return sizes(n - size_fields);
    case Verb::kMsg:
    case Verb::kHmsg:
      // subject sid [reply-to] sizes
      if (n != 2 + size_fields && n != 3 + size_fields) return false;
      out->subject.assign(f[0]);
      out->sid.assign(f[1]);
      if (n == 3 + size_fields) out->reply_to.assign(f[2]);
      return sizes(n - size_fields);
    case Verb::kSub:
      // subject [queue group] sid
      if (n != 2 && n != 3) return false;
      out->subject.assign(f[0]);
      if (n == 3) out->queue_group.assign(f[1]);
      out->sid.assign(f[n - 1]);
      return true;
    case Verb::kUnsub: {
      // sid [max-msgs]
      if (n != 1 && n != 2) return false;
      uint64_t max_messages = 0;
      if (n == 2 && !ParseSize(f[1], UINT64_MAX, &max_messages)) return false;
      out->sid.assign(f[0]);
      return true;
    }
    default:
      return false;
  }
}

}  // namespace

std::string_view VerbName(Verb verb) {
  for (const VerbSpec& spec : kVerbs)
    if (spec.verb == verb) return spec.text;
  return "?";
}

std::string_view Message::Header(std::string_view name) const {
  for (const auto& [key, value] : headers)
    if (EqualsIgnoreCase(key, name)) return value;
  return {};
}

size_t FindMessageStart(std::string_view buf, size_t from) {
  for (size_t i = from; i < buf.size(); ++i) {
    if (i != from && buf[i - 1] != '\n') continue;
    const VerbSpec* spec = nullptr;
    if (MatchAnyVerb(buf.substr(i), &spec) != VerbMatch::kNo) return i;
  }
  return std::string_view::npos;
}

ParseState ParseControlLine(std::string_view buf, Message* out, const ParseLimits& limits) {
  const VerbSpec* spec = nullptr;
  VerbMatch match = MatchAnyVerb(buf, &spec);
  if (match == VerbMatch::kNo) return ParseState::kInvalid;
  if (match == VerbMatch::kPrefix) return ParseState::kNeedsMoreData;
  size_t line_end = buf.find('\n');
  if (line_end == std::string_view::npos) {
    return buf.size() >= limits.max_control_line_bytes ? ParseState::kInvalid : ParseState::kNeedsMoreData;
  }
  if (line_end + 1 > limits.max_control_line_bytes) return ParseState::kInvalid;
  std::string_view line = buf.substr(0, line_end);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  Message message;
  message.verb = spec->verb;
  message.control_bytes = line_end + 1;
  if (!ParseArguments(spec->verb, line.substr(spec->text.size()), &message, limits))
    return ParseState::kInvalid;
  *out = std::move(message);
  return ParseState::kSuccess;
}

ParseState ParseHeaderBlock(std::string_view block, Message* out, const ParseLimits& limits) {
  constexpr std::string_view kVersion = "NATS/1.0";
  if (block.size() < 4 || !block.starts_with(kVersion) || !block.ends_with("\r\n\r\n"))
    return ParseState::kInvalid;
  size_t line_end = block.find("\r\n");
  std::string_view status = block.substr(kVersion.size(), line_end - kVersion.size());
  if (!status.empty() && !IsBlank(status.front())) return ParseState::kInvalid;
  status = Trim(status);
  out->status_code = 0;
  out->status_description.clear();
  out->headers.clear();
  if (!status.empty()) {
    size_t digits = 0;
    while (digits < status.size() && status[digits] >= '0' && status[digits] <= '9') ++digits;
    if (digits != 3 || (status.size() > 3 && !IsBlank(status[3]))) return ParseState::kInvalid;
    out->status_code = (status[0] - '0') * 100 + (status[1] - '0') * 10 + (status[2] - '0');
    out->status_description.assign(Trim(status.substr(3)));
  }
  size_t position = line_end + 2;
  while (position < block.size()) {
    size_t end = block.find("\r\n", position);
    std::string_view line = block.substr(position, end - position);
    position = end + 2;
    if (line.empty()) return position == block.size() ? ParseState::kSuccess : ParseState::kInvalid;
    size_t colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos) return ParseState::kInvalid;
    std::string_view name = line.substr(0, colon);
    for (char c : name)
      if (IsBlank(c) || static_cast<unsigned char>(c) < 0x21 || c == 0x7f) return ParseState::kInvalid;
    if (out->headers.size() >= limits.max_headers) return ParseState::kInvalid;
    out->headers.emplace_back(std::string(name), std::string(Trim(line.substr(colon + 1))));
  }
  // The block ends with a status line directly followed by the blank line.
  return ParseState::kSuccess;
}

ParseState ParseFrame(std::string_view buf, Message* out, std::string_view* body, const ParseLimits& limits) {
  Message message;
  ParseState state = ParseControlLine(buf, &message, limits);
  if (state != ParseState::kSuccess) return state;
  if (CarriesPayload(message.verb)) {
    if (buf.size() < message.frame_bytes()) return ParseState::kNeedsMoreData;
    std::string_view payload = buf.substr(message.control_bytes, message.total_bytes);
    if (buf.substr(message.control_bytes + message.total_bytes, 2) != "\r\n") return ParseState::kInvalid;
    if (CarriesHeaders(message.verb) &&
        ParseHeaderBlock(payload.substr(0, message.header_bytes), &message, limits) != ParseState::kSuccess)
      return ParseState::kInvalid;
    if (body) *body = payload.substr(message.header_bytes);
  } else if (body) {
    *body = {};
  }
  *out = std::move(message);
  return ParseState::kSuccess;
}

}  // namespace flowtracer::nats
