// NATS over one client connection: frames the messages of both directions out of the
// two byte streams (payloads split across reads, many messages per read, gaps). Reports
// every message with its timing; bodies are skipped by length after the first bytes that
// make their fingerprint.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/conntrack/byte_stream.h"
#include "agent/protocols/nats/parse.h"

namespace flowtracer::conntrack {

struct NatsMessageRecord {
  nats::Message message;        // control line fields, and headers for HPUB/HMSG
  bool from_client = true;      // client -> server (PUB, SUB...) or server -> client (MSG...)
  uint64_t start_ns = 0;        // the call that moved the control line's first byte
  uint64_t end_ns = 0;          // the call that moved the frame's last byte
  uint32_t tid = 0;             // thread that moved the first byte
  bool headers_complete = true;  // false when the header block was not captured whole
  std::string queue_group;       // deliveries: the queue group of their subscription (SUB), if any
  // Subject, body size and the first kFingerprintBodyBytes of the body, hashed: equal for
  // a publish and its deliveries. nullopt when those bytes were not all captured.
  std::optional<uint64_t> fingerprint;
};

struct NatsStats {
  uint64_t resyncs = 0;                  // parse errors or gaps that forced a search for the next message
  uint64_t messages_without_fingerprint = 0;  // publishes/deliveries whose body start was not captured
  // Bytes the kernel did not copy where a message could start (e.g. past the first
  // max_payload_bytes of a large read): the messages in them are lost.
  uint64_t uncaptured_bytes = 0;
};

// Subject, body size and body prefix (at most kFingerprintBodyBytes are read) -> 64-bit hash.
inline constexpr size_t kFingerprintBodyBytes = 1024;
uint64_t NatsFingerprint(std::string_view subject, uint64_t body_bytes, std::string_view body_prefix);

class NatsConversation {
 public:
  // Parses what both streams hold and appends each whole message to `done`, in order
  // within each direction.
  void Process(ByteStream& client_to_server, ByteStream& server_to_client,
               std::vector<NatsMessageRecord>* done);

  // Where the frame being skipped in each direction ends, while its body is skipped:
  // the kernel need not copy bytes before it.
  std::optional<uint64_t> ClientFrameEnd() const { return FrameEnd(client_side_); }
  std::optional<uint64_t> ServerFrameEnd() const { return FrameEnd(server_side_); }

  const NatsStats& stats() const { return stats_; }

 private:
  enum class Stage { kSeek, kControl, kPayload };
  struct Side {
    explicit Side(bool client) : from_client(client) {}
    bool from_client;
    Stage stage = Stage::kSeek;
    // Whether the read position follows a line feed (or starts a call after a hole): only
    // there can a message start, so a resync never takes a verb from mid-line.
    bool at_line_start = true;
    NatsMessageRecord record;
    uint64_t frame_end = 0;  // kPayload: stream offset just past the frame
  };

  static std::optional<uint64_t> FrameEnd(const Side& side) {
    if (side.stage == Stage::kPayload) return side.frame_end;
    return std::nullopt;
  }
  bool Step(Side& side, ByteStream& stream, std::vector<NatsMessageRecord>* done);
  void Resync(Side& side, ByteStream& stream);
  void Finish(Side& side, ByteStream& stream, std::vector<NatsMessageRecord>* done);

  // Subscriptions' queue groups by sid, from SUB (bounded: a client with more queue
  // subscriptions than this gets no group on the rest).
  static constexpr size_t kMaxQueueSubscriptions = 1024;
  std::unordered_map<std::string, std::string> queue_group_by_sid_;

  Side client_side_{true};
  Side server_side_{false};
  NatsStats stats_;
};

}  // namespace flowtracer::conntrack
