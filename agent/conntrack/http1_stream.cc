#include "agent/conntrack/http1_stream.h"

namespace flowtracer::conntrack {
namespace {
using protocols::MessageType;
using protocols::ParseState;

// Bytes kept when no message start is found: a method token may be split across calls.
constexpr size_t kSeekKeepBytes = 16;
// Bounds the work of one Process() call (each step consumes bytes or changes stage).
constexpr int kMaxStepsPerProcess = 4096;
}  // namespace

void Http1Conversation::Resync(Side& side, ByteStream& stream) {
  ++stats_.resyncs;
  side.stage = Stage::kSeek;
  side.message = {};
  // Step past the current position so the same bad start is not found again.
  if (!stream.empty()) stream.Consume(1);
}

void Http1Conversation::Finish(Side& side, ByteStream& stream, uint64_t end_position,
                               std::vector<HttpExchange>* done) {
  side.message.end_ns = stream.TimestampAt(end_position - 1);
  stream.SkipTo(end_position);
  side.stage = Stage::kSeek;
  // side.message is moved from below and left so: the next head resets it.

  if (side.type == MessageType::kRequest) {
    if (pending_.size() >= kMaxPendingRequests) {
      pending_.erase(pending_.begin());
      ++stats_.pending_overflow;
    }
    pending_.push_back(std::move(side.message));
    return;
  }
  int status = side.message.head.status_code;
  if (status >= 100 && status < 200 && status != 101) return;  // interim (100 Continue)
  if (expired_awaiting_response_ > 0) {
    // HTTP/1 answers in order: this answers a request already ended by the timeout, and
    // pairing it with the next request would give that request the wrong response.
    --expired_awaiting_response_;
    ++stats_.late_responses;
    return;
  }
  if (pending_.empty()) {
    ++stats_.orphan_responses;
    return;
  }
  // Built in place: an exchange is two large records, and each move of one costs.
  HttpExchange& exchange = done->emplace_back();
  exchange.request = std::move(pending_.front());
  // Its storage stays for the next request: a connection gone quiet gives back its whole
  // HTTP state (ConnectionTracker::ReleaseIdleMemory), this included.
  pending_.erase(pending_.begin());
  exchange.response = std::move(side.message);
  if (status == 101) upgraded_ = true;
}

bool Http1Conversation::Step(Side& side, ByteStream& stream, std::vector<HttpExchange>* done,
                             const RequestStarted* started) {
  if (stream.empty()) return false;
  switch (side.stage) {
    case Stage::kSeek:
    case Stage::kHead: {
      std::string_view data = stream.Contiguous();
      if (data.empty()) {
        // A hole (bytes not captured) at the read position: nothing to parse until it ends.
        if (side.stage == Stage::kHead) ++stats_.resyncs;
        side.stage = Stage::kSeek;
        uint64_t before = stream.read_position();
        stream.SkipHole();
        return stream.read_position() != before;
      }
      if (side.stage == Stage::kSeek) {
        size_t start = http1::FindMessageStart(side.type, data);
        if (start == std::string_view::npos) {
          // Kept bytes can only complete a method token if more bytes follow them; before
          // a hole they never will.
          bool hole_follows = stream.read_position() + data.size() < stream.end_position();
          if (hole_follows) {
            stream.Consume(data.size());
            return true;
          }
          if (data.size() <= kSeekKeepBytes) return false;
          stream.Consume(data.size() - kSeekKeepBytes);
          return true;
        }
        stream.Consume(start);
        side.stage = Stage::kHead;
        return true;
      }
      // Parsed straight into the side's record, reset first (Finish leaves it moved-from);
      // only a complete or ignored head writes into it.
      side.message = {};
      ParseState state = http1::ParseHead(side.type, data, &side.message.head);
      if (state == ParseState::kNeedsMoreData) {
        // The head continues past captured bytes into a hole: it can never complete.
        bool hole_follows = stream.read_position() + data.size() < stream.end_position();
        if (hole_follows) {
          Resync(side, stream);
          return true;
        }
        return false;
      }
      if (state == ParseState::kInvalid) {
        Resync(side, stream);
        return true;
      }
      if (state == ParseState::kIgnored) {
        stream.Consume(side.message.head.head_bytes ? side.message.head.head_bytes : 1);
        return true;
      }
      uint64_t start = stream.read_position();
      side.message.start_ns = stream.TimestampAt(start);
      side.message.tid = stream.TidAt(start);
      side.message.start_seq = stream.SeqAt(start);
      if (side.type == MessageType::kRequest) {
        side.message.request_index = next_request_index_++;
        if (started) (*started)(side.message);
      }
      http1::BodyFraming framing = side.message.head.framing;
      if (side.type == MessageType::kResponse) {
        const std::string_view method =
            pending_.empty() ? std::string_view() : pending_.front().head.method();
        framing = http1::ResponseFraming(side.message.head, method);
      }
      uint64_t head_end = start + side.message.head.head_bytes;
      switch (framing) {
        case http1::BodyFraming::kNone:
          Finish(side, stream, head_end, done);
          break;
        case http1::BodyFraming::kContentLength:
          side.body_end = head_end + side.message.head.content_length;
          side.message.body_bytes = side.message.head.content_length;
          side.stage = Stage::kBody;
          stream.SkipTo(head_end);
          if (side.message.head.content_length == 0) Finish(side, stream, head_end, done);
          break;
        case http1::BodyFraming::kChunked:
          side.chunked = http1::ChunkedBodyDecoder();
          side.stage = Stage::kChunked;
          stream.SkipTo(head_end);
          break;
        case http1::BodyFraming::kUntilClose:
          side.stage = Stage::kUntilClose;
          side.body_end = head_end;  // here: where the body starts
          stream.SkipTo(head_end);
          break;
      }
      return true;
    }
    case Stage::kBody: {
      if (stream.end_position() >= side.body_end) {
        Finish(side, stream, side.body_end, done);
        return true;
      }
      // Body bytes are not needed: drop them as they come (their times stay known for
      // the segment that will hold the last byte).
      stream.SkipAll();
      return false;
    }
    case Stage::kChunked: {
      std::string_view data = stream.Contiguous();
      if (data.empty()) {
        // A hole inside a chunked body: its end cannot be found from here.
        side.message.body_bytes = side.chunked.body_bytes();
        side.message.body_complete = false;
        ++stats_.resyncs;
        Finish(side, stream, stream.read_position() + 1, done);
        return true;
      }
      size_t consumed = 0;
      ParseState state = side.chunked.Feed(data, &consumed);
      side.message.body_bytes = side.chunked.body_bytes();
      if (state == ParseState::kSuccess) {
        Finish(side, stream, stream.read_position() + consumed, done);
        return true;
      }
      if (state == ParseState::kInvalid) {
        side.message.body_complete = false;
        Finish(side, stream, stream.read_position() + (consumed ? consumed : 1), done);
        return true;
      }
      stream.Consume(consumed);
      return consumed > 0 && stream.Contiguous().size() > 0;
    }
    case Stage::kUntilClose:
      stream.SkipAll();
      return false;
  }
  return false;
}

void Http1Conversation::Process(ByteStream& requests, ByteStream& responses,
                                std::vector<HttpExchange>* done,
                                const RequestStarted* started) {
  if (upgraded_) {
    requests.SkipAll();
    responses.SkipAll();
    return;
  }
  // Requests first: a response is framed by the request it answers (HEAD).
  for (int steps = 0; steps < kMaxStepsPerProcess; ++steps) {
    bool progressed = Step(request_side_, requests, done, started);
    progressed |= Step(response_side_, responses, done, started);
    if (!progressed || upgraded_) break;
  }
}

void Http1Conversation::Close(ByteStream& requests, ByteStream& responses,
                              std::vector<HttpExchange>* done,
                              const RequestStarted* started) {
  Process(requests, responses, done, started);
  if (request_side_.stage == Stage::kBody || request_side_.stage == Stage::kChunked) {
    // The close cut a request body short: the request still gets its span.
    if (request_side_.stage == Stage::kChunked) request_side_.message.body_bytes = request_side_.chunked.body_bytes();
    request_side_.message.body_complete = false;
    uint64_t end = requests.end_position();
    Finish(request_side_, requests, end > 0 ? end : 1, done);
  }
  if (response_side_.stage == Stage::kUntilClose || response_side_.stage == Stage::kChunked ||
      response_side_.stage == Stage::kBody) {
    // The close ends the body; a length-delimited one that stopped short is incomplete.
    response_side_.message.body_complete = response_side_.stage == Stage::kUntilClose;
    if (response_side_.stage == Stage::kUntilClose) {
      response_side_.message.body_bytes = responses.end_position() - response_side_.body_end;
    }
    uint64_t end = responses.end_position();
    if (end > 0) Finish(response_side_, responses, end, done);
  }
  while (!pending_.empty()) {
    HttpExchange exchange;
    exchange.request = std::move(pending_.front());
    pending_.erase(pending_.begin());
    exchange.error_type = "connection_closed";
    done->push_back(std::move(exchange));
  }
}

void Http1Conversation::ExpireOlderThan(uint64_t deadline_ns, std::vector<HttpExchange>* done) {
  while (!pending_.empty() && pending_.front().start_ns < deadline_ns) {
    HttpExchange exchange;
    exchange.request = std::move(pending_.front());
    pending_.erase(pending_.begin());
    exchange.error_type = "timeout";
    done->push_back(std::move(exchange));
    ++expired_awaiting_response_;
  }
}

}  // namespace flowtracer::conntrack
