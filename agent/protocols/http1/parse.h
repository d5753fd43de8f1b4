// HTTP/1.x message heads and bodies, parsed from byte strings.
//
// The stream driver (agent/conntrack) owns reassembly, gaps and resync; it calls:
//   1. FindMessageStart() to (re)synchronise on a request or status line,
//   2. ParseHead() until it returns kSuccess (start line + headers + blank line),
//   3. then consumes the body by its framing: a byte count it can skip by stream
//      position (kContentLength), or a ChunkedBodyDecoder fed with the body bytes.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
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

// A kept header field, viewed in the message that holds it.
struct HeaderField {
  std::string_view name;  // original case
  std::string_view value;
  bool operator==(const HeaderField&) const = default;
};

// The kept header fields of a message, in the order received: a view into the message,
// valid while the message is neither changed nor destroyed.
class HeaderFields {
 public:
  // Where a field's name and value lie in the message's text.
  struct Entry {
    uint32_t name_begin;
    uint32_t name_size;
    uint32_t value_begin;
    uint32_t value_size;
  };

  HeaderFields() = default;
  HeaderFields(const char* text, const char* entries, size_t count)
      : text_(text), entries_(entries), count_(count) {}

  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  HeaderField operator[](size_t i) const { return At(text_, entries_, i); }
  HeaderField front() const { return (*this)[0]; }

  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = HeaderField;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = HeaderField;
    Iterator() = default;
    Iterator(const char* text, const char* entries, size_t i) : text_(text), entries_(entries), i_(i) {}
    HeaderField operator*() const { return At(text_, entries_, i_); }
    Iterator& operator++() {
      ++i_;
      return *this;
    }
    Iterator operator++(int) {
      Iterator before = *this;
      ++i_;
      return before;
    }
    bool operator==(const Iterator& other) const { return i_ == other.i_; }

   private:
    const char* text_ = nullptr;
    const char* entries_ = nullptr;
    size_t i_ = 0;
  };
  Iterator begin() const { return {text_, entries_, 0}; }
  Iterator end() const { return {text_, entries_, count_}; }

  bool operator==(const HeaderFields& other) const {
    return std::equal(begin(), end(), other.begin(), other.end());
  }

 private:
  static HeaderField At(const char* text, const char* entries, size_t i) {
    Entry entry;
    std::memcpy(&entry, entries + i * sizeof(Entry), sizeof(Entry));  // not aligned
    return {{text + entry.name_begin, entry.name_size}, {text + entry.value_begin, entry.value_size}};
  }

  const char* text_ = nullptr;
  const char* entries_ = nullptr;
  size_t count_ = 0;
};

class HeadParser;

// One message head. The start line's strings and the kept fields are kept in one string
// (one allocation per message at most, instead of one per string longer than 15 bytes
// and one for the field list); a reused message keeps its storage.
class Message {
 public:
  Message() = default;
  Message(const Message&) = default;
  Message(Message&&) = default;
  Message& operator=(const Message&) = default;
  Message& operator=(Message&&) = default;
  ~Message();  // gives the text's storage to the next message parsed on the thread

  MessageType type = MessageType::kRequest;
  int minor_version = 1;   // HTTP/1.<minor_version>
  int status_code = 0;     // status line
  size_t field_count = 0;  // header fields received, kept or not

  BodyFraming framing = BodyFraming::kNone;
  uint64_t content_length = 0;  // valid when framing == kContentLength
  size_t head_bytes = 0;        // bytes of start line + headers + the blank line

  // Request line: the method ("GET") and the request-target as sent ("/users/42?x=1");
  // empty in a response.
  std::string_view method() const { return {text_.data(), method_size_}; }
  std::string_view target() const { return {text_.data() + method_size_, target_size_}; }
  // Status line: the reason phrase; empty in a request.
  std::string_view reason() const { return {text_.data() + method_size_ + target_size_, reason_size_}; }

  // The kept header fields (kKeptFieldNames) in the order received; names keep their
  // original case.
  HeaderFields headers() const { return {text_.data(), text_.data() + entries_begin_, field_entries_}; }
  // Case-insensitive lookup of the first kept header with this name; empty when absent.
  std::string_view Header(std::string_view name) const;
  bool HasHeader(std::string_view name) const;

  // Sets the start line's strings and the kept fields, for messages made by hand (tests);
  // ParseHead sets them from the head.
  void SetText(std::string_view method, std::string_view target, std::string_view reason = {},
               std::initializer_list<HeaderField> fields = {});

 private:
  friend class HeadParser;
  // Sizes the text for these start-line strings (copied in) and `fields` entries after
  // `field_bytes` bytes of names and values; returns where those bytes go.
  char* LayOut(std::string_view method, std::string_view target, std::string_view reason,
               size_t field_bytes, size_t fields);
  void SetEntry(size_t i, HeaderFields::Entry entry) {
    std::memcpy(text_.data() + entries_begin_ + i * sizeof(entry), &entry, sizeof(entry));
  }

  // The method, target and reason, each kept field's bytes (parsed: from its name to the
  // end of its value, as in the head), then an Entry per kept field.
  std::string text_;
  uint32_t method_size_ = 0;
  uint32_t target_size_ = 0;
  uint32_t reason_size_ = 0;
  uint32_t entries_begin_ = 0;
  uint32_t field_entries_ = 0;
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
