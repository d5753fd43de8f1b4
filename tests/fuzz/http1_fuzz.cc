// libFuzzer target for the HTTP/1.x parser: no crash on any input, and the results
// agree with each other (prefixes, resync, incremental vs one-shot chunked decoding).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <string_view>

#include "agent/protocols/http1/parse.h"

namespace {

using flowtracer::http1::BodyFraming;
using flowtracer::http1::ChunkedBodyDecoder;
using flowtracer::http1::FindMessageStart;
using flowtracer::http1::Message;
using flowtracer::http1::MessageType;
using flowtracer::http1::ParseHead;
using flowtracer::http1::ParseLimits;
using flowtracer::http1::ParseState;
using flowtracer::http1::ResponseFraming;
using flowtracer::http1::WantsClose;

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

void CheckHead(MessageType type, std::string_view buf) {
  const size_t start = FindMessageStart(type, buf);
  Check(start == std::string_view::npos || start < buf.size());
  if (start != std::string_view::npos) Check(FindMessageStart(type, buf, start) == start);
  Check(FindMessageStart(type, buf, buf.size() + 1) == std::string_view::npos);

  Message message;
  const ParseState state = ParseHead(type, buf, &message);
  if (state == ParseState::kSuccess) {
    Check(message.head_bytes > 0 && message.head_bytes <= buf.size());
    Check(message.type == type);
    Check(message.minor_version == 0 || message.minor_version == 1);
    // Whatever parses can also be found by a resync.
    Check(start == 0);
    // The head alone decides: the bytes after it do not matter, and any shorter prefix
    // is incomplete.
    Message head_only;
    Check(ParseHead(type, buf.substr(0, message.head_bytes), &head_only) ==
          ParseState::kSuccess);
    Check(head_only.head_bytes == message.head_bytes);
    Check(head_only.framing == message.framing);
    Message shorter;
    Check(ParseHead(type, buf.substr(0, message.head_bytes - 1), &shorter) ==
          ParseState::kNeedsMoreData);

    Check(message.framing == BodyFraming::kContentLength || message.content_length == 0);
    if (type == MessageType::kRequest) {
      Check(message.framing != BodyFraming::kUntilClose);
      Check(!message.method().empty() && !message.target().empty());
    } else {
      Check(message.status_code >= 100 && message.status_code <= 999);
      Check(ResponseFraming(message, "HEAD") == BodyFraming::kNone);
      const BodyFraming after_get = ResponseFraming(message, "GET");
      Check(after_get == message.framing);
      ResponseFraming(message, "CONNECT");
    }
    // Only the kept fields are copied, each under a kept name.
    Check(message.headers().size() <= message.field_count);
    for (const auto& field : message.headers()) {
      const std::string_view name = field.name;
      const std::string_view value = field.value;
      Check(std::any_of(flowtracer::http1::kKeptFieldNames.begin(),
                        flowtracer::http1::kKeptFieldNames.end(), [&](std::string_view kept) {
                          return name.size() == kept.size() &&
                                 std::equal(name.begin(), name.end(), kept.begin(), [](char a, char b) {
                                   return (a >= 'A' && a <= 'Z' ? a + 32 : a) == b;
                                 });
                        }));
      // Kept values are trimmed and hold no control byte but HTAB.
      Check(value.empty() || (value.front() != ' ' && value.front() != '\t' &&
                              value.back() != ' ' && value.back() != '\t'));
      Check(std::none_of(value.begin(), value.end(), [](char c) {
        const auto byte = static_cast<unsigned char>(c);
        return (byte < 0x20 && c != '\t') || byte == 0x7f;
      }));
    }
    if (!message.headers().empty()) {
      Check(message.HasHeader(message.headers().front().name));
      Check(message.Header(message.headers().front().name) == message.headers().front().value);
    }
    // A copy views its own text; a moved-to message keeps the fields.
    const Message copy = message;
    Check(copy.method() == message.method() && copy.target() == message.target() &&
          copy.reason() == message.reason() && copy.headers() == message.headers());
    Check(copy.headers().empty() || copy.headers().front().name.data() != message.headers().front().name.data());
    Message source = copy;
    const Message moved = std::move(source);
    Check(moved.target() == message.target() && moved.headers() == message.headers());
    WantsClose(message);

    ParseLimits tight;
    tight.max_head_bytes = message.head_bytes - 1;
    Check(ParseHead(type, buf, &shorter, tight) == ParseState::kInvalid);
    tight.max_head_bytes = message.head_bytes;
    tight.max_headers = message.field_count;
    Check(ParseHead(type, buf, &shorter, tight) == ParseState::kSuccess);
    if (message.field_count > 0) {
      tight.max_headers = message.field_count - 1;
      Check(ParseHead(type, buf, &shorter, tight) == ParseState::kInvalid);
    }
  } else if (state == ParseState::kNeedsMoreData) {
    Check(ParseHead(type, buf.substr(0, buf.size() / 2), &message) ==
          ParseState::kNeedsMoreData);
  } else if (state == ParseState::kIgnored) {
    Check(type == MessageType::kRequest);
    Check(message.head_bytes == 1 || message.head_bytes == 2);
    Check(message.head_bytes <= buf.size());
  }
}

struct ChunkedOutcome {
  ParseState state;
  size_t consumed_bytes;
  uint64_t body_bytes;
};

// Feeds `body` in pieces whose sizes cycle through `piece_sizes` (a zero stands for 1).
ChunkedOutcome DecodeInPieces(std::string_view body, std::string_view piece_sizes) {
  ChunkedBodyDecoder decoder;
  size_t offset = 0;
  size_t piece_index = 0;
  ParseState state = ParseState::kNeedsMoreData;
  while (offset < body.size()) {
    size_t piece_bytes = 1;
    if (!piece_sizes.empty()) {
      piece_bytes += static_cast<unsigned char>(piece_sizes[piece_index++ % piece_sizes.size()]);
    }
    const std::string_view piece = body.substr(offset, piece_bytes);
    size_t consumed = 0;
    state = decoder.Feed(piece, &consumed);
    Check(consumed <= piece.size());
    Check(decoder.body_bytes() <= offset + consumed);
    offset += consumed;
    if (state != ParseState::kNeedsMoreData) break;
    Check(consumed == piece.size());
  }
  return {state, offset, decoder.body_bytes()};
}

void CheckChunked(std::string_view body, std::string_view piece_sizes) {
  ChunkedBodyDecoder decoder;
  size_t consumed = 0;
  const ParseState state = decoder.Feed(body, &consumed);
  Check(consumed <= body.size());
  Check(state != ParseState::kIgnored);
  if (state == ParseState::kNeedsMoreData) Check(consumed == body.size());
  if (state == ParseState::kSuccess) {
    size_t again = 1;
    Check(decoder.Feed(body.substr(consumed), &again) == ParseState::kSuccess && again == 0);
  }

  // Where the input is split must not change the outcome.
  const ChunkedOutcome pieces = DecodeInPieces(body, piece_sizes);
  Check(pieces.state == state);
  Check(pieces.consumed_bytes == consumed);
  Check(pieces.body_bytes == decoder.body_bytes());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckHead(MessageType::kRequest, input);
  CheckHead(MessageType::kResponse, input);

  // The first byte says how many bytes at the end set the chunked piece sizes.
  size_t piece_spec_bytes = 0;
  std::string_view body = input;
  if (!input.empty()) {
    piece_spec_bytes = std::min<size_t>(static_cast<unsigned char>(input[0]) % 8, size - 1);
    body = input.substr(1, size - 1 - piece_spec_bytes);
  }
  CheckChunked(body, input.substr(size - piece_spec_bytes));
  return 0;
}
