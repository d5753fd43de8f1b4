#include "agent/conntrack/nats_stream.h"

#include <algorithm>
#include <string>

namespace flowtracer::conntrack {
namespace {
using protocols::ParseState;

// Bytes kept when no message start is found: a verb may be split across calls.
constexpr size_t kSeekKeepBytes = 8;
// Header blocks longer than this are not buffered (their headers go unread).
constexpr uint64_t kMaxBufferedHeaderBytes = 32 * 1024;
// Bounds the work of one Process() call (each step consumes bytes or changes stage).
constexpr int kMaxStepsPerProcess = 4096;
}  // namespace

uint64_t NatsFingerprint(std::string_view subject, uint64_t body_bytes, std::string_view body_prefix) {
  // FNV-1a: fast, and collisions only cost a wrong inferred link between equal subjects.
  uint64_t hash = 14695981039346656037ull;
  auto mix = [&](std::string_view bytes) {
    for (unsigned char c : bytes) {
      hash ^= c;
      hash *= 1099511628211ull;
    }
  };
  mix(subject);
  mix(std::string_view("\0", 1));
  mix(std::to_string(body_bytes));
  mix(std::string_view("\0", 1));
  mix(body_prefix.substr(0, kFingerprintBodyBytes));
  return hash;
}

void NatsConversation::Resync(Side& side, ByteStream& stream) {
  ++stats_.resyncs;
  side.stage = Stage::kSeek;
  side.record = {};
  // Step past the current position so the same bad start is not found again.
  if (!stream.empty()) stream.Consume(1);
  side.at_line_start = false;
}

void NatsConversation::Finish(Side& side, ByteStream& stream, std::vector<NatsMessageRecord>* done) {
  side.record.end_ns = stream.TimestampAt(side.frame_end - 1);
  stream.SkipTo(side.frame_end);
  done->push_back(std::move(side.record));
  side.record = {};
  side.stage = Stage::kControl;
  side.at_line_start = true;
}

bool NatsConversation::Step(Side& side, ByteStream& stream, std::vector<NatsMessageRecord>* done) {
  if (stream.empty()) return false;
  if (side.stage == Stage::kPayload) {
    if (stream.end_position() >= side.frame_end) {
      Finish(side, stream, done);
      return true;
    }
    stream.SkipAll();  // body bytes are not needed past the fingerprint
    return false;
  }
  std::string_view data = stream.Contiguous();
  if (data.empty()) {
    // A hole at the read position: nothing to parse until it ends.
    if (side.stage == Stage::kControl) ++stats_.resyncs;
    side.stage = Stage::kSeek;
    side.at_line_start = true;  // the next captured bytes start a call
    uint64_t before = stream.read_position();
    stream.SkipHole();
    stats_.uncaptured_bytes += stream.read_position() - before;
    return stream.read_position() != before;
  }
  bool hole_follows = stream.read_position() + data.size() < stream.end_position();
  if (side.stage == Stage::kSeek) {
    size_t from = 0;
    if (!side.at_line_start) {
      size_t line_feed = data.find('\n');
      from = line_feed == std::string_view::npos ? data.size() : line_feed + 1;
    }
    size_t start = from < data.size() ? nats::FindMessageStart(data, from) : std::string_view::npos;
    if (start == std::string_view::npos) {
      if (hole_follows) {
        stream.Consume(data.size());
        side.at_line_start = true;
        return true;
      }
      if (data.size() <= kSeekKeepBytes) return false;
      size_t skipped = data.size() - kSeekKeepBytes;
      side.at_line_start = data[skipped - 1] == '\n';
      stream.Consume(skipped);
      return true;
    }
    stream.Consume(start);
    side.stage = Stage::kControl;
    return true;
  }

  nats::Message message;
  ParseState state = nats::ParseControlLine(data, &message);
  if (state == ParseState::kNeedsMoreData) {
    // The line continues into a hole: it can never complete.
    if (hole_follows) {
      Resync(side, stream);
      return true;
    }
    return false;
  }
  if (state != ParseState::kSuccess) {
    Resync(side, stream);
    return true;
  }
  uint64_t start = stream.read_position();
  NatsMessageRecord& record = side.record;
  record = {};
  record.from_client = side.from_client;
  record.start_ns = stream.TimestampAt(start);
  record.tid = stream.TidAt(start);
  if (side.from_client && message.verb == nats::Verb::kSub && !message.queue_group.empty() &&
      queue_group_by_sid_.size() < kMaxQueueSubscriptions) {
    queue_group_by_sid_[message.sid] = message.queue_group;
  } else if (side.from_client && message.verb == nats::Verb::kUnsub) {
    // An UNSUB with a message limit may still deliver a few: those lose the group.
    queue_group_by_sid_.erase(message.sid);
  } else if (!side.from_client && !queue_group_by_sid_.empty()) {
    if (auto it = queue_group_by_sid_.find(message.sid); it != queue_group_by_sid_.end())
      record.queue_group = it->second;
  }
  if (!nats::CarriesPayload(message.verb)) {
    record.end_ns = stream.TimestampAt(start + message.control_bytes - 1);
    record.message = std::move(message);
    stream.Consume(record.message.control_bytes);
    done->push_back(std::move(record));
    record = {};
    return true;
  }
  // The header block and the body's first bytes must be read before they are skipped.
  uint64_t headers_wanted = message.header_bytes <= kMaxBufferedHeaderBytes ? message.header_bytes : 0;
  uint64_t wanted = message.control_bytes +
                    std::min<uint64_t>(message.total_bytes, headers_wanted + kFingerprintBodyBytes);
  if (data.size() < wanted && !hole_follows) return false;  // more bytes are on their way
  std::string_view payload = data.substr(message.control_bytes);
  if (message.header_bytes > 0) {
    record.headers_complete = message.header_bytes <= payload.size() &&
        nats::ParseHeaderBlock(payload.substr(0, message.header_bytes), &message) == ParseState::kSuccess;
  }
  uint64_t body_bytes = message.body_bytes();
  if (payload.size() >= message.header_bytes + std::min<uint64_t>(body_bytes, kFingerprintBodyBytes)) {
    record.fingerprint = NatsFingerprint(
        message.subject, body_bytes,
        payload.substr(message.header_bytes, std::min<uint64_t>(body_bytes, kFingerprintBodyBytes)));
  } else {
    ++stats_.messages_without_fingerprint;
  }
  side.frame_end = start + message.frame_bytes();
  record.message = std::move(message);
  side.stage = Stage::kPayload;
  return true;
}

void NatsConversation::Process(ByteStream& client_to_server, ByteStream& server_to_client,
                               std::vector<NatsMessageRecord>* done) {
  for (int steps = 0; steps < kMaxStepsPerProcess; ++steps) {
    bool progressed = Step(client_side_, client_to_server, done);
    progressed |= Step(server_side_, server_to_client, done);
    if (!progressed) break;
  }
}

}  // namespace flowtracer::conntrack
