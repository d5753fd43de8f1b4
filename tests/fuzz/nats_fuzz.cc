// libFuzzer target for the NATS parser and its stream driver: no crash on any input, and
// the results agree with each other (whole frames vs their prefixes, control lines vs
// frames, resync, and the driver's messages whatever the reads the bytes came in).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "agent/conntrack/nats_stream.h"
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

using flowtracer::conntrack::ByteStream;
using flowtracer::conntrack::NatsConversation;
using flowtracer::conntrack::NatsMessageRecord;

// Feeds `bytes` as server -> client reads whose sizes cycle through `read_sizes` (a zero
// stands for 1; empty: one read), every byte captured.
std::vector<NatsMessageRecord> Drive(std::string_view bytes, std::string_view read_sizes) {
  ByteStream from_client, from_server;
  NatsConversation conversation;
  std::vector<NatsMessageRecord> records;
  uint64_t position = 0;
  size_t index = 0;
  while (position < bytes.size()) {
    size_t length = bytes.size();
    // Large inputs (the real-server seeds) in larger reads: one-byte reads of 77 KB make
    // every step rejoin the stream and starve the fuzzer of executions.
    size_t scale = bytes.size() > 4096 ? 64 : 1;
    if (!read_sizes.empty())
      length = scale * (1 + static_cast<unsigned char>(read_sizes[index++ % read_sizes.size()]));
    std::string_view piece = bytes.substr(position, length);
    from_server.Add(position, piece.size(), 0, piece, position + 1, 7);
    position += piece.size();
    conversation.Process(from_client, from_server, &records);
  }
  return records;
}

void CheckDriver(std::string_view bytes, std::string_view read_sizes) {
  std::vector<NatsMessageRecord> whole = Drive(bytes, {});
  std::vector<NatsMessageRecord> pieces = Drive(bytes, read_sizes);
  Check(whole.size() == pieces.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    Check(whole[i].message.verb == pieces[i].message.verb);
    Check(whole[i].message.subject == pieces[i].message.subject);
    Check(whole[i].message.total_bytes == pieces[i].message.total_bytes);
    Check(whole[i].message.headers == pieces[i].message.headers);
    Check(whole[i].fingerprint == pieces[i].fingerprint);
    Check(!whole[i].from_client && pieces[i].start_ns <= pieces[i].end_ns);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckFrame(input);
  Message headers;
  ParseHeaderBlock(input, &headers);
  // The first byte says how many bytes at the end set the read sizes.
  if (!input.empty()) {
    size_t spec_bytes = std::min<size_t>(static_cast<unsigned char>(input[0]) % 8, size - 1);
    CheckDriver(input.substr(1, size - 1 - spec_bytes), input.substr(size - spec_bytes));
  }
  return 0;
}
