#include "agent/conntrack/byte_stream.h"

#include <algorithm>
#include <vector>

namespace flowtracer::conntrack {
namespace {

// Buffers of consumed segments, reused for new ones: most calls are consumed as soon as
// they arrive, so steady traffic copies payloads without allocating. Shared by the
// thread's streams and bounded (64 x 32 KiB at most), so idle connections hold none.
constexpr size_t kMaxSpareBuffers = 64;
constexpr size_t kIdleSegmentCapacity = 2;
constexpr size_t kMaxSpareBufferBytes = 32 * 1024;
thread_local std::vector<std::string> spare_buffers;

std::string TakeSpareBuffer() {
  if (spare_buffers.empty()) return {};
  std::string buffer = std::move(spare_buffers.back());
  spare_buffers.pop_back();
  return buffer;
}

void GiveSpareBuffer(std::string&& buffer) {
  // Short strings live inside the object: nothing to reuse.
  if (buffer.capacity() <= 15 || buffer.capacity() > kMaxSpareBufferBytes ||
      spare_buffers.size() >= kMaxSpareBuffers)
    return;
  spare_buffers.push_back(std::move(buffer));
}

// `to` becomes a copy of `bytes`, in a reused buffer when there are bytes to hold.
void CopyIntoSpareBuffer(std::string& to, std::string_view bytes) {
  if (!bytes.empty()) to = TakeSpareBuffer();
  to.assign(bytes);
}

}  // namespace

void ByteStream::Add(uint64_t position, uint64_t length, uint64_t payload_offset,
                     std::string_view payload, uint64_t timestamp_ns, uint32_t tid,
                     uint32_t seq_start) {
  AddSegment(position, length, payload_offset, payload, timestamp_ns, tid, seq_start, false);
}

void ByteStream::AddBorrowed(uint64_t position, uint64_t length, uint64_t payload_offset,
                             std::string_view payload, uint64_t timestamp_ns, uint32_t tid,
                             uint32_t seq_start) {
  AddSegment(position, length, payload_offset, payload, timestamp_ns, tid, seq_start, true);
}

void ByteStream::KeepBorrowed() {
  for (Segment& s : segments_) {
    if (s.borrowed.empty()) continue;
    std::string_view keep = s.borrowed;
    // Only what the parser has not consumed yet (the start of a call's next message).
    if (s.data_start < read_position_) {
      const uint64_t consumed = std::min<uint64_t>(read_position_ - s.data_start, keep.size());
      keep.remove_prefix(consumed);
      s.data_start += consumed;
      buffered_bytes_ -= static_cast<uint32_t>(consumed);
    }
    CopyIntoSpareBuffer(s.data, keep);
    s.borrowed = {};
  }
}

void ByteStream::AddSegment(uint64_t position, uint64_t length, uint64_t payload_offset,
                            std::string_view payload, uint64_t timestamp_ns, uint32_t tid,
                            uint32_t seq_start, bool borrow) {
  if (length == 0) return;
  if (!started_) {
    // The first call seen fixes where the stream starts (the agent may join mid-connection).
    read_position_ = position;
    started_ = true;
  }
  uint64_t end = position + length;
  uint64_t known_end = end_position();
  if (end <= known_end) return;  // a duplicate or a reordered call already covered
  if (position > known_end) gap_bytes_ += position - known_end;
  uint64_t segment_start = std::max(position, known_end);
  Segment segment{segment_start, end, position + payload_offset, {}, {}, timestamp_ns, tid,
                  seq_start + static_cast<uint32_t>(segment_start - position)};
  // Keep only captured bytes at or after the segment's start.
  if (segment.data_start < segment.start) {
    uint64_t cut = segment.start - segment.data_start;
    payload = cut < payload.size() ? payload.substr(cut) : std::string_view();
    segment.data_start = segment.start;
  }
  if (buffered_bytes_ + payload.size() > max_buffered_bytes_) {
    // The reader is stuck (e.g. a head that never completes): keep offsets and times but
    // not the bytes, so the bound holds and the parser resynchronises after the hole.
    ++overflow_drops_;
    payload = {};
  }
  if (borrow) {
    segment.borrowed = payload;
  } else {
    CopyIntoSpareBuffer(segment.data, payload);
  }
  buffered_bytes_ += static_cast<uint32_t>(payload.size());
  segments_.push_back(std::move(segment));
}

std::string_view ByteStream::Contiguous() {
  auto it = std::find_if(segments_.begin(), segments_.end(),
                         [&](const Segment& s) { return s.end > read_position_; });
  if (it == segments_.end() || it->start > read_position_) return {};
  auto data_from = [&](const Segment& s, uint64_t from) -> std::string_view {
    const std::string_view bytes = s.Bytes();
    if (from < s.data_start || from >= s.data_start + bytes.size()) return {};
    return bytes.substr(from - s.data_start);
  };
  std::string_view first = data_from(*it, read_position_);
  if (first.empty()) return {};
  uint64_t next = read_position_ + first.size();
  if (next < it->end || std::next(it) == segments_.end() || std::next(it)->data_start != next ||
      std::next(it)->start != next) {
    return first;
  }
  if (!joined_) joined_ = std::make_unique<std::string>();
  std::string& joined = *joined_;
  joined.assign(first);
  for (auto seg = std::next(it); seg != segments_.end(); ++seg) {
    const std::string_view bytes = seg->Bytes();
    if (seg->start != next || seg->data_start != next || bytes.empty()) break;
    joined.append(bytes);
    next += bytes.size();
    if (next < seg->end) break;  // the rest of this call was not captured
  }
  return joined;
}

void ByteStream::Consume(uint64_t bytes) { SkipTo(read_position_ + bytes); }

void ByteStream::SkipTo(uint64_t position) {
  if (position <= read_position_) return;
  read_position_ = position;
  DropConsumedSegments();
}

void ByteStream::SkipHole() {
  for (const Segment& s : segments_) {
    if (s.end <= read_position_) continue;
    uint64_t from = std::max({read_position_, s.start, s.data_start});
    if (from < s.data_start + s.Bytes().size()) {
      SkipTo(from);
      return;
    }
  }
  SkipAll();
}

void ByteStream::DropConsumedSegments() {
  auto consumed = segments_.begin();
  for (; consumed != segments_.end() && consumed->end <= read_position_; ++consumed) {
    buffered_bytes_ -= static_cast<uint32_t>(consumed->Bytes().size());
    last_timestamp_ns_ = consumed->timestamp_ns;
    GiveSpareBuffer(std::move(consumed->data));
  }
  segments_.erase(segments_.begin(), consumed);
  // An idle stream keeps room for a couple of calls, not for the largest burst it saw.
  if (segments_.empty() && segments_.capacity() > kIdleSegmentCapacity) std::vector<Segment>().swap(segments_);
}

void ByteStream::ReleaseIdleMemory() {
  if (!segments_.empty()) return;
  std::vector<Segment>().swap(segments_);
  joined_.reset();
}

const ByteStream::Segment* ByteStream::SegmentAt(uint64_t position) const {
  for (const Segment& s : segments_) {
    if (position >= s.start && position < s.end) return &s;
  }
  return nullptr;
}

uint64_t ByteStream::TimestampAt(uint64_t position) const {
  const Segment* segment = SegmentAt(position);
  return segment ? segment->timestamp_ns : last_timestamp_ns();
}

uint32_t ByteStream::TidAt(uint64_t position) const {
  const Segment* segment = SegmentAt(position);
  return segment ? segment->tid : 0;
}

std::optional<uint32_t> ByteStream::SeqAt(uint64_t position) const {
  const Segment* segment = SegmentAt(position);
  if (!segment) return std::nullopt;
  return segment->seq_start + static_cast<uint32_t>(position - segment->start);
}

}  // namespace flowtracer::conntrack
