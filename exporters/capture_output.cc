#include "exporters/capture_output.h"

#include <algorithm>
#include <ctime>
#include <string_view>
#include <vector>

#include <fmt/compile.h>
#include <spdlog/fmt/fmt.h>

#include "agent/spans/ids.h"
#include "agent/spans/span_assembler.h"
#include "agent/text/utf8.h"

namespace flowtracer::exporters {
namespace {

// Most fields are short printable ASCII: nothing to cut or replace.
bool FitsAsIs(std::string_view field, size_t width) {
  return field.size() <= width &&
         std::all_of(field.begin(), field.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

// At most `width` characters (code points), "~" marking a cut. Fields come from network
// bytes, so control characters and invalid UTF-8 become '?' rather than reach a terminal.
std::string Fit(std::string_view field, size_t width) {
  if (FitsAsIs(field, width)) return std::string(field);
  std::vector<std::string_view> characters;
  for (size_t i = 0; i < field.size();) {
    size_t length = text::Utf8SequenceLength(field.substr(i));
    auto byte = static_cast<unsigned char>(field[i]);
    characters.push_back(length == 0 || byte < 0x20 || byte == 0x7f ? "?" : field.substr(i, length));
    i += length ? length : 1;
  }
  bool cut = characters.size() > width;
  if (cut) characters.resize(width - 1);
  std::string out;
  for (std::string_view character : characters) out.append(character);
  return cut ? out + "~" : out;
}

enum class Align { kLeft, kRight, kUnpadded };

// `field` through Fit, padded with spaces to `width` characters.
void AppendColumn(std::string* out, std::string_view field, size_t width, Align align) {
  std::string fitted;
  std::string_view text = field;
  size_t characters = field.size();
  if (!FitsAsIs(field, width)) {
    fitted = Fit(field, width);
    text = fitted;
    characters = std::count_if(text.begin(), text.end(), [](char c) { return (c & 0xc0) != 0x80; });
  }
  const size_t padding = characters < width && align != Align::kUnpadded ? width - characters : 0;
  if (align == Align::kRight) out->append(padding, ' ');
  out->append(text);
  if (align == Align::kLeft) out->append(padding, ' ');
}

// "HH:MM:SS.mmm" in local time. localtime_r takes a lock and reads the time zone each
// call: the text of the current second is kept.
std::string ClockTime(uint64_t unix_ns) {
  thread_local time_t cached_seconds = -1;
  thread_local char cached_text[16];
  time_t seconds = static_cast<time_t>(unix_ns / 1000000000ull);
  if (seconds != cached_seconds) {
    tm local{};
    localtime_r(&seconds, &local);
    strftime(cached_text, sizeof(cached_text), "%H:%M:%S", &local);
    cached_seconds = seconds;
  }
  // Compiled formats: these run for every span, and parsing the format string each time
  // was most of their cost.
  return fmt::format(FMT_COMPILE("{}.{:03}"), std::string_view(cached_text), (unix_ns / 1000000ull) % 1000);
}

std::string Duration(uint64_t ns) {
  double ms = ns / 1e6;
  if (ms < 10) return fmt::format(FMT_COMPILE("{:.2f}ms"), ms);
  if (ms < 10000) return fmt::format(FMT_COMPILE("{:.0f}ms"), ms);
  return fmt::format(FMT_COMPILE("{:.1f}s"), ms / 1000);
}

}  // namespace

nlohmann::json SpanToJson(const spans::Span& span) {
  nlohmann::json attributes = nlohmann::json::object();
  for (const spans::Attribute& attribute : span.attributes) {
    std::visit([&](const auto& value) { attributes[attribute.key] = value; }, attribute.value);
  }
  return {
      {"trace_id", spans::ToHex(span.trace_id)},
      {"span_id", spans::ToHex(span.span_id)},
      {"parent_span_id", spans::IsZero(span.parent_span_id) ? "" : spans::ToHex(span.parent_span_id)},
      {"trace_state", span.trace_state},
      {"kind", spans::SpanKindName(span.kind)},
      {"name", span.name},
      {"service", span.service},
      {"start_time_unix_nano", span.start_unix_ns},
      {"end_time_unix_nano", span.end_unix_ns},
      {"status", spans::StatusCodeName(span.status)},
      {"attributes", attributes},
  };
}

std::string SpanTextHeader() {
  // 12 + 10 + 6 + 20 + 3 + 8 + 15 (peer) + 6 separators = 80 columns.
  return fmt::format("{:<12} {:<10} {:<6} {:<20} {:>3} {:>7} {}", "TIME", "SERVICE", "KIND", "REQUEST",
                     "ST", "DURATION", "PEER");
}

std::string SpanToText(const spans::Span& span) {
  std::string status = "-";
  if (const auto* code = span.Find("http.response.status_code")) status = std::to_string(std::get<int64_t>(*code));
  else if (span.status == spans::StatusCode::kError) status = "ERR";
  std::string peer = spans::FormatAddress(span.tuple.remote_addr) + ":" + std::to_string(span.tuple.remote_port);
  static constexpr std::string_view kKinds[] = {"server", "client", "prod", "cons"};
  std::string_view kind = kKinds[static_cast<int>(span.kind)];
  // Columns padded by hand: fmt's generic padding (format-string parsing and display-width
  // computation per field) was a fifth of capture's CPU under load.
  std::string line;
  line.reserve(96);
  AppendColumn(&line, ClockTime(span.start_unix_ns), 12, Align::kLeft);
  line += ' ';
  AppendColumn(&line, span.service, 10, Align::kLeft);
  line += ' ';
  AppendColumn(&line, kind, 6, Align::kLeft);
  line += ' ';
  AppendColumn(&line, span.name, 20, Align::kLeft);
  line += ' ';
  AppendColumn(&line, status, 3, Align::kRight);
  line += ' ';
  AppendColumn(&line, Duration(span.end_unix_ns - span.start_unix_ns), 8, Align::kRight);
  line += ' ';
  AppendColumn(&line, peer, 15, Align::kUnpadded);
  return line;
}

std::string SummaryTable(const std::vector<spans::CallSummaryRow>& rows) {
  std::string out = fmt::format("{:<20} {:<22} {:>7} {:>6} {:>9} {:>9}\n", "CALLER", "CALLEE", "CALLS",
                                "ERRORS", "P50", "P99");
  for (const spans::CallSummaryRow& row : rows) {
    out += fmt::format("{:<20} {:<22} {:>7} {:>6} {:>7.2f}ms {:>7.2f}ms\n", Fit(row.caller, 20),
                       Fit(row.callee, 22), row.count, row.errors, row.p50_ms, row.p99_ms);
  }
  return out;
}

}  // namespace flowtracer::exporters
