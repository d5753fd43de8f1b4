// HTTP/1.x message heads and bodies, parsed from byte strings.
//
// The stream driver (agent/conntrack) owns reassembly, gaps and resync; it calls:
//   1. FindMessageStart() to (re)synchronise on a request or status line,
//   2. ParseHead() until it returns kSuccess (start line + headers + blank line),
//   3. then consumes the body by its framing: a byte count it can skip by stream
//      position (kContentLength), or a ChunkedBodyDecoder fed with the body bytes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/protocols/parse_state.h"

namespace flowtracer::http1 {

using protocols::MessageType;
using protocols::ParseState;

// How the body after the head is delimited (RFC 9112 section 6.3).
enum class BodyFraming {
  kNone,           // no body (e.g. GET without Content-Length, 204, 304, 1xx, HEAD responses)
  kContentLength,  // exactly `content_length` bytes
  kChunked,        // Transfer-Encoding: chunked
  kUntilClose,     // a response without length: the body ends when the connection closes
};

// The header fields a Message keeps, lowercase: what framing, span building and trace
// linking read. Every field of a head is validated, but only these are copied (a head of
// large cookies costs no copy or allocation); reading another field means adding it here.
inline constexpr std::array<std::string_view, 7> kKeptFieldNames = {
    "host", "user-agent", "connection", "content-length", "transfer-encoding",
    "traceparent", "tracestate"};

struct Message {
  MessageType type = MessageType::kRequest;
  int minor_version = 1;  // HTTP/1.<minor_version>

  // Request line.
  std::string method;  // "GET"
  std::string target;  // request-target as sent, e.g. "/users/42?x=1"

  // Status line.
  int status_code = 0;
  std::string reason;

  // The kept header fields (kKeptFieldNames) in the order received; names keep their
  // original case.
  std::vector<std::pair<std::string, std::string>> headers;
  size_t field_count = 0;  // header fields received, kept or not

  BodyFraming framing = BodyFraming::kNone;
  uint64_t content_length = 0;  // valid when framing == kContentLength
  size_t head_bytes = 0;        // bytes of start line + headers + the blank line

  // Case-insensitive lookup of the first kept header with this name; empty when absent.
  std::string_view Header(std::string_view name) const;
  bool HasHeader(std::string_view name) const;
};

struct ParseLimits {
  size_t max_head_bytes = 64 * 1024;  // longer heads are kInvalid (resync), not buffered forever
  size_t max_headers = 256;
};

// Offset of the first position at or after `from` where a message of `type` may start
// (a request line "METHOD SP" with a known method token, or "HTTP/1.x SP" for responses);
// npos when none. Used after a gap or a parse error to resynchronise.
size_t FindMessageStart(MessageType type, std::string_view buf, size_t from = 0);

// Parses the start line and header block at the start of `buf`. On kSuccess fills `out`
// (including head_bytes and framing as the headers alone decide it). kNeedsMoreData when
// `buf` is a valid prefix shorter than a whole head. kInvalid when the bytes cannot be
// the start of a message of `type` or break the limits. A lone CRLF or LF before a
// request line is kIgnored with head_bytes set to its length (RFC 9112 section 2.2).
ParseState ParseHead(MessageType type, std::string_view buf, Message* out,
                     const ParseLimits& limits = {});

// Framing of a response once the request it answers is known: HEAD requests, 1xx, 204
// and 304 responses have no body whatever their headers say.
BodyFraming ResponseFraming(const Message& response, std::string_view request_method);

// True when the message asks to close the connection after it (Connection: close,
// or HTTP/1.0 without keep-alive).
bool WantsClose(const Message& message);

// Incremental decoder of a chunked body (RFC 9112 section 7.1), including the trailer
// section. Feed it the body bytes in order, in pieces of any size.
class ChunkedBodyDecoder {
 public:
  // Consumes a prefix of `data` and sets `*consumed`. Returns kSuccess when the final
  // chunk and trailers ended within `data` (bytes after that are the next message),
  // kNeedsMoreData when all of `data` was consumed and more is expected, kInvalid on
  // malformed framing.
  ParseState Feed(std::string_view data, size_t* consumed);

  uint64_t body_bytes() const { return body_bytes_; }  // decoded payload bytes so far

 private:
  enum class Stage { kSize, kSizeExtension, kSizeLf, kData, kDataCr, kDataLf, kTrailer, kDone };
  Stage stage_ = Stage::kSize;
  uint64_t chunk_remaining_ = 0;
  uint64_t body_bytes_ = 0;
  size_t size_digits_ = 0;
  size_t trailer_line_bytes_ = 0;  // bytes in the current trailer line (0: at line start)
  size_t trailer_total_bytes_ = 0;
};

}  // namespace flowtracer::http1
