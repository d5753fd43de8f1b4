// NATS client-protocol messages parsed from byte strings (pure functions).
//
// The stream driver (agent/conntrack/nats_stream.cc) owns reassembly, gaps and resync; it
// calls FindMessageStart() to (re)synchronise, ParseControlLine() for the line that says
// what follows, ParseHeaderBlock() for an HPUB/HMSG header block, and skips the body by
// its length. ParseFrame() parses a whole frame at once (tests, fuzzing, small frames).
#pragma once

#include <cstddef>
#include <string_view>

#include "agent/protocols/nats/types.h"
#include "agent/protocols/parse_state.h"

namespace flowtracer::nats {

using protocols::ParseState;

// Offset of the first position at or after `from` that is `from` itself or follows a line
// feed, and starts a known verb (any case) followed by its separator, or could still
// become one when `buf` ends there; npos when none.
size_t FindMessageStart(std::string_view buf, size_t from = 0);

// Parses the control line at the start of `buf` ("PUB subj 5\r\n", "PING\r\n", ...).
// Verbs are case-insensitive and fields are separated by spaces or tabs, as nats-server
// accepts them; a line ends with CRLF or a bare LF. kSuccess fills `out` (control_bytes
// included). kNeedsMoreData when `buf` is a valid prefix of a control line. kInvalid for
// anything else, including lines longer than the limit.
ParseState ParseControlLine(std::string_view buf, Message* out, const ParseLimits& limits = {});

// Parses a header block of exactly `out->header_bytes` bytes: "NATS/1.0[ code[ text]]\r\n",
// then "Name: value\r\n" lines, then "\r\n". kSuccess or kInvalid (never needs more data:
// the caller passes the whole block).
ParseState ParseHeaderBlock(std::string_view block, Message* out, const ParseLimits& limits = {});

// A whole frame at the start of `buf`: the control line, then for messages with a payload
// the header block, the body and the CRLF after it. On kSuccess `*body` (when not null)
// views the body inside `buf`, and out->frame_bytes() bytes were used.
ParseState ParseFrame(std::string_view buf, Message* out, std::string_view* body = nullptr,
                      const ParseLimits& limits = {});

}  // namespace flowtracer::nats
