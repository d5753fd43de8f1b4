// One direction of a connection, reassembled by stream offset. Calls whose bytes were
// not copied (skipped bodies, truncation, unsupported calls) leave holes: the stream
// still knows their offsets and times, so framing by length and span timing work
// without the bytes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flowtracer::conntrack {

class ByteStream {
 public:
  explicit ByteStream(size_t max_buffered_bytes = 256 * 1024)
      : max_buffered_bytes_(static_cast<uint32_t>(std::min<size_t>(max_buffered_bytes, UINT32_MAX / 2))) {}

  // A call moved [position, position + length); its captured bytes start at
  // position + payload_offset. Overlaps with what is already known are trimmed.
  void Add(uint64_t position, uint64_t length, uint64_t payload_offset, std::string_view payload,
           uint64_t timestamp_ns, uint32_t tid = 0, uint32_t seq_start = 0);
  // The same, but the payload is only referred to, not copied, until KeepBorrowed(): the
  // caller parses straight from its buffer (a ring buffer record) and then calls
  // KeepBorrowed() before that buffer is reused. Most calls are consumed whole by the
  // parser in between, so their bytes are never copied.
  void AddBorrowed(uint64_t position, uint64_t length, uint64_t payload_offset,
                   std::string_view payload, uint64_t timestamp_ns, uint32_t tid = 0,
                   uint32_t seq_start = 0);
  // Copies the borrowed bytes not yet consumed into the stream's own storage.
  void KeepBorrowed();

  uint64_t read_position() const { return read_position_; }
  uint64_t end_position() const { return segments_.empty() ? read_position_ : segments_.back().end; }
  bool empty() const { return read_position_ >= end_position(); }

  // Captured bytes contiguous from read_position() (empty when a hole starts there).
  // Valid until the next non-const call.
  std::string_view Contiguous();

  // Advances the read position (across holes too), dropping what is behind it.
  void Consume(uint64_t bytes);
  void SkipTo(uint64_t position);
  void SkipAll() { SkipTo(end_position()); }
  // When no byte was captured at read_position(): advances to the next captured byte
  // (or the end), so a hole costs one step whatever its size.
  void SkipHole();

  // Time of the call that moved the byte at `position`; for a position no longer held
  // (consumed or never captured), the latest time known on the stream.
  uint64_t TimestampAt(uint64_t position) const;
  // Thread that made that call (0 if unknown).
  uint32_t TidAt(uint64_t position) const;
  // TCP sequence number of the byte at `position` (nullopt if unknown).
  std::optional<uint32_t> SeqAt(uint64_t position) const;
  uint64_t last_timestamp_ns() const { return segments_.empty() ? last_timestamp_ns_ : segments_.back().timestamp_ns; }

  // Bytes lost to gaps (offsets never seen) and to the buffer bound.
  uint64_t gap_bytes() const { return gap_bytes_; }
  uint64_t overflow_drops() const { return overflow_drops_; }
  size_t buffered_bytes() const { return buffered_bytes_; }

  // Gives back storage kept for the next calls (segment slots, the join buffer) when
  // nothing is buffered: for connections gone quiet, which are most of a large table.
  void ReleaseIdleMemory();

 private:
  struct Segment {
    uint64_t start;
    uint64_t end;
    uint64_t data_start;  // Bytes() cover [data_start, data_start + Bytes().size())
    std::string data;
    std::string_view borrowed;  // the caller's bytes until KeepBorrowed(); then in `data`
    uint64_t timestamp_ns;
    uint32_t tid;
    uint32_t seq_start;  // of the byte at `start`
    std::string_view Bytes() const { return borrowed.empty() ? std::string_view(data) : borrowed; }
  };
  void AddSegment(uint64_t position, uint64_t length, uint64_t payload_offset,
                  std::string_view payload, uint64_t timestamp_ns, uint32_t tid,
                  uint32_t seq_start, bool borrow);
  const Segment* SegmentAt(uint64_t position) const;
  void DropConsumedSegments();

  // A vector, not a deque: an empty deque still holds ~600 bytes, and the agent keeps two
  // streams per connection, mostly empty (keep-alive connections between requests).
  std::vector<Segment> segments_;
  uint64_t read_position_ = 0;
  uint64_t gap_bytes_ = 0;
  uint64_t overflow_drops_ = 0;
  uint64_t last_timestamp_ns_ = 0;
  // 32 bits: the bound is far below 2 GiB, and every byte of a stream is multiplied by
  // two per connection and by tens of thousands of connections.
  uint32_t buffered_bytes_ = 0;
  uint32_t max_buffered_bytes_;
  bool started_ = false;
  // Contiguous() across segment boundaries; made on first use (most streams never join).
  std::unique_ptr<std::string> joined_;
};

}  // namespace flowtracer::conntrack
