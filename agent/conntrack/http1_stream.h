// HTTP/1.x over one connection: frames messages out of the two byte streams and pairs
// each response with its request (FIFO, so pipelining works). Protocol-specific code
// only; reassembly, gaps and timing live in ByteStream.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "agent/conntrack/byte_stream.h"
#include "agent/protocols/http1/parse.h"

namespace flowtracer::conntrack {

struct HttpMessageRecord {
  http1::Message head;
  uint64_t start_ns = 0;       // the call that moved the message's first byte
  uint64_t end_ns = 0;         // the call that moved its last byte
  uint64_t body_bytes = 0;     // payload bytes (decoded for chunked bodies)
  bool body_complete = true;   // false when a gap or the close cut the body short
  uint32_t tid = 0;            // thread that moved the first byte
  uint64_t request_index = 0;  // requests: 0, 1, 2... in order on the connection
  std::optional<uint32_t> start_seq;  // TCP sequence number of its first byte, when known
};

struct HttpExchange {
  HttpMessageRecord request;
  std::optional<HttpMessageRecord> response;
  std::string error_type;  // "" or why the exchange is incomplete ("connection_closed", "timeout")
};

struct Http1Stats {
  uint64_t resyncs = 0;            // parse errors or gaps that forced a search for the next message
  uint64_t orphan_responses = 0;   // responses with no request seen (joined mid-connection)
  uint64_t pending_overflow = 0;   // requests dropped because too many awaited responses
  uint64_t late_responses = 0;     // responses that came after their request timed out
};

// Called with each request as soon as its head is parsed (span ids are decided then),
// before any exchange of the same Process call is reported.
using RequestStarted = std::function<void(const HttpMessageRecord& request)>;

class Http1Conversation {
 public:
  static constexpr size_t kMaxPendingRequests = 64;

  // A conversation may be released while idle and made again: numbering continues.
  explicit Http1Conversation(uint64_t first_request_index = 0) : next_request_index_(first_request_index) {}

  // Parses what both streams hold and appends finished exchanges to `done`; calls
  // `started` (if given) for each request whose head was just parsed.
  void Process(ByteStream& requests, ByteStream& responses, std::vector<HttpExchange>* done,
               const RequestStarted* started = nullptr);

  // The connection closed: a body delimited by the close ends now, and requests still
  // waiting for a response end with error_type "connection_closed".
  void Close(ByteStream& requests, ByteStream& responses, std::vector<HttpExchange>* done,
             const RequestStarted* started = nullptr);

  // Requests that started before `deadline_ns` and are still unanswered end with
  // "timeout"; their responses, should they come later, are dropped and counted.
  void ExpireOlderThan(uint64_t deadline_ns, std::vector<HttpExchange>* done);

  // Where the body being read in each direction ends, when it is known and ahead: the
  // kernel need not copy bytes before it.
  std::optional<uint64_t> RequestBodyEnd() const { return BodyEnd(request_side_); }
  std::optional<uint64_t> ResponseBodyEnd() const { return BodyEnd(response_side_); }

  // A 101 Switching Protocols response: the rest of the connection is not HTTP/1.
  bool upgraded() const { return upgraded_; }
  const Http1Stats& stats() const { return stats_; }
  size_t pending_requests() const { return pending_.size(); }
  uint64_t next_request_index() const { return next_request_index_; }
  // Requests reported as started that have no exchange yet: awaiting a response, or
  // still in their body.
  size_t unfinished_requests() const {
    const bool reading_body = request_side_.stage == Stage::kBody || request_side_.stage == Stage::kChunked;
    return pending_.size() + (reading_body ? 1 : 0);
  }
  // Between messages on both sides with nothing awaited: only the request numbering and
  // the stats would be lost by starting again.
  bool idle() const {
    return request_side_.stage == Stage::kSeek && response_side_.stage == Stage::kSeek && pending_.empty() &&
           expired_awaiting_response_ == 0 && !upgraded_;
  }

 private:
  enum class Stage { kSeek, kHead, kBody, kChunked, kUntilClose };
  struct Side {
    explicit Side(protocols::MessageType message_type) : type(message_type) {}
    protocols::MessageType type;
    Stage stage = Stage::kSeek;
    HttpMessageRecord message;
    uint64_t body_end = 0;  // kBody: stream offset just past the body; kUntilClose: its start
    http1::ChunkedBodyDecoder chunked;
  };
  static std::optional<uint64_t> BodyEnd(const Side& side) {
    if (side.stage == Stage::kBody) return side.body_end;
    return std::nullopt;
  }

  // Advances one side by at most one parsing step; false when it must wait for bytes.
  bool Step(Side& side, ByteStream& stream, std::vector<HttpExchange>* done, const RequestStarted* started);
  // The message on `side` ends just before `end_position`.
  void Finish(Side& side, ByteStream& stream, uint64_t end_position, std::vector<HttpExchange>* done);
  void Resync(Side& side, ByteStream& stream);

  Side request_side_{protocols::MessageType::kRequest};
  Side response_side_{protocols::MessageType::kResponse};
  // Requests awaiting their response, oldest first (a vector: an empty deque holds ~600
  // bytes, and most connections have none or one pending).
  std::vector<HttpMessageRecord> pending_;
  bool upgraded_ = false;
  uint64_t next_request_index_ = 0;
  uint64_t expired_awaiting_response_ = 0;  // timed-out requests whose responses may still come
  Http1Stats stats_;
};

}  // namespace flowtracer::conntrack
