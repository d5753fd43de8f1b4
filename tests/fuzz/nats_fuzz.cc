// libFuzzer target for the NATS parser: no crash on any input, and the results agree
// with each other (whole frames vs their prefixes, control lines vs frames, resync).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agent/protocols/nats/parse.h"

namespace {

using flowtracer::nats::CarriesHeaders;
using flowtracer::nats::CarriesPayload;
using flowtracer::nats::FindMessageStart;
using flowtracer::nats::Message;
using flowtracer::nats::ParseControlLine;
using flowtracer::nats::ParseFrame;
using flowtracer::nats::ParseHeaderBlock;
using flowtracer::nats::ParseLimits;
using flowtracer::nats::ParseState;

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

void CheckFrame(std::string_view buf) {
  const size_t start = FindMessageStart(buf);
  Check(start == std::string_view::npos || start < buf.size());
  if (start != std::string_view::npos) Check(FindMessageStart(buf, start) == start);

  Message control;
  const ParseState control_state = ParseControlLine(buf, &control);
  Check(control_state != ParseState::kIgnored);
  Message frame;
  std::string_view body;
  const ParseState frame_state = ParseFrame(buf, &frame, &body);
  if (control_state != ParseState::kSuccess) {
    // A frame cannot parse without its control line.
    Check(frame_state == control_state);
    if (control_state == ParseState::kNeedsMoreData) Check(start == 0 || buf.empty());
    return;
  }
  Check(start == 0);
  Check(control.control_bytes > 0 && control.control_bytes <= buf.size());
  Check(control.header_bytes <= control.total_bytes);
  if (CarriesHeaders(control.verb)) Check(control.header_bytes >= 12);
  if (!CarriesPayload(control.verb)) Check(control.total_bytes == 0);
  // The control line alone decides; any shorter prefix is incomplete.
  Message again;
  Check(ParseControlLine(buf.substr(0, control.control_bytes), &again) == ParseState::kSuccess);
  Check(again.control_bytes == control.control_bytes && again.total_bytes == control.total_bytes);
  Check(ParseControlLine(buf.substr(0, control.control_bytes - 1), &again) == ParseState::kNeedsMoreData);
  ParseLimits tight;
  tight.max_control_line_bytes = control.control_bytes - 1;
  Check(ParseControlLine(buf, &again, tight) == ParseState::kInvalid);

  if (frame_state == ParseState::kSuccess) {
    Check(frame.frame_bytes() <= buf.size());
    Check(frame.control_bytes == control.control_bytes);
    Check(body.size() == frame.body_bytes());
    if (CarriesPayload(frame.verb)) {
      Check(body.data() == buf.data() + frame.control_bytes + frame.header_bytes);
      Message shorter;
      Check(ParseFrame(buf.substr(0, frame.frame_bytes() - 1), &shorter) == ParseState::kNeedsMoreData);
    }
  } else if (frame_state == ParseState::kNeedsMoreData) {
    Check(CarriesPayload(control.verb) && buf.size() < control.frame_bytes());
  }
  if (CarriesHeaders(control.verb) && buf.size() >= control.control_bytes + control.header_bytes) {
    Message headers = control;
    ParseHeaderBlock(buf.substr(control.control_bytes, control.header_bytes), &headers);
    if (!headers.headers.empty()) Check(headers.Header(headers.headers.front().first) == headers.headers.front().second);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckFrame(input);
  Message headers;
  ParseHeaderBlock(input, &headers);
  return 0;
}
