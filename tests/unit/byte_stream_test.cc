#include "agent/conntrack/byte_stream.h"

#include <gtest/gtest.h>

#include <string>

namespace flowtracer::conntrack {
namespace {

TEST(ByteStreamTest, StartsEmpty) {
  ByteStream stream;
  EXPECT_TRUE(stream.empty());
  EXPECT_EQ(stream.read_position(), 0u);
  EXPECT_EQ(stream.end_position(), 0u);
  EXPECT_EQ(stream.Contiguous(), "");
  EXPECT_EQ(stream.TimestampAt(0), 0u);
  EXPECT_EQ(stream.TidAt(0), 0u);
  EXPECT_EQ(stream.buffered_bytes(), 0u);
}

TEST(ByteStreamTest, ContiguousAppendsJoin) {
  ByteStream stream;
  stream.Add(0, 5, 0, "hello", 100, 7);
  stream.Add(5, 6, 0, " world", 200, 8);
  EXPECT_FALSE(stream.empty());
  EXPECT_EQ(stream.read_position(), 0u);
  EXPECT_EQ(stream.end_position(), 11u);
  EXPECT_EQ(stream.Contiguous(), "hello world");
  EXPECT_EQ(stream.buffered_bytes(), 11u);
  EXPECT_EQ(stream.gap_bytes(), 0u);
  EXPECT_EQ(stream.overflow_drops(), 0u);
  EXPECT_EQ(stream.last_timestamp_ns(), 200u);
}

TEST(ByteStreamTest, SequenceNumbersFollowOffsetsAcrossWrapAndOverlap) {
  ByteStream stream;
  EXPECT_FALSE(stream.SeqAt(0).has_value());
  stream.Add(100, 10, 0, "0123456789", 1, 7, 0xfffffffa);  // wraps inside the call
  EXPECT_EQ(stream.SeqAt(100), 0xfffffffau);
  EXPECT_EQ(stream.SeqAt(105), 0xffffffffu);
  EXPECT_EQ(stream.SeqAt(106), 0u);
  // A call overlapping what is known keeps only its new part, with its own numbers.
  stream.Add(105, 10, 0, "56789abcde", 2, 7, 0xffffffff);
  EXPECT_EQ(stream.SeqAt(110), 4u);
  EXPECT_EQ(stream.SeqAt(114), 8u);
  EXPECT_FALSE(stream.SeqAt(115).has_value());
}

TEST(ByteStreamTest, ZeroLengthCallsAreIgnored) {
  ByteStream stream;
  stream.Add(0, 0, 0, "", 5, 1);
  EXPECT_TRUE(stream.empty());
  // A zero-length call must not fix where the stream starts.
  stream.Add(100, 3, 0, "abc", 6, 2);
  EXPECT_EQ(stream.read_position(), 100u);
  EXPECT_EQ(stream.end_position(), 103u);
  EXPECT_EQ(stream.gap_bytes(), 0u);
  EXPECT_EQ(stream.Contiguous(), "abc");
}

TEST(ByteStreamTest, FirstCallFixesStartMidConnection) {
  ByteStream stream;
  stream.Add(1000, 3, 0, "abc", 1, 1);
  EXPECT_EQ(stream.read_position(), 1000u);
  EXPECT_EQ(stream.end_position(), 1003u);
  EXPECT_EQ(stream.gap_bytes(), 0u);
  EXPECT_EQ(stream.Contiguous(), "abc");
  EXPECT_EQ(stream.TimestampAt(1002), 1u);
}

TEST(ByteStreamTest, PayloadShorterThanLengthLeavesHole) {
  ByteStream stream;
  stream.Add(0, 10, 0, "abcd", 1, 1);  // 6 bytes moved but not copied
  stream.Add(10, 3, 0, "xyz", 2, 2);
  EXPECT_EQ(stream.end_position(), 13u);
  EXPECT_EQ(stream.Contiguous(), "abcd");  // stops at the hole, does not join "xyz"
  stream.Consume(4);
  EXPECT_EQ(stream.read_position(), 4u);
  EXPECT_EQ(stream.Contiguous(), "");  // a hole starts here
  EXPECT_FALSE(stream.empty());
  // The hole's offsets and times are still known.
  EXPECT_EQ(stream.TimestampAt(9), 1u);
  EXPECT_EQ(stream.TidAt(9), 1u);
  stream.SkipTo(10);
  EXPECT_EQ(stream.Contiguous(), "xyz");
  EXPECT_EQ(stream.buffered_bytes(), 3u);
  EXPECT_EQ(stream.gap_bytes(), 0u);  // a hole inside a call is not a gap
}

TEST(ByteStreamTest, PayloadOffsetSkipsLeadingBytes) {
  ByteStream stream;
  stream.Add(0, 10, 6, "ghij", 1, 1);  // bytes 0..5 skipped, 6..9 copied
  EXPECT_EQ(stream.Contiguous(), "");
  EXPECT_EQ(stream.buffered_bytes(), 4u);
  stream.Add(10, 2, 0, "kl", 2, 2);
  stream.Consume(5);
  EXPECT_EQ(stream.Contiguous(), "");  // position 5 is still inside the skipped part
  stream.Consume(1);
  EXPECT_EQ(stream.read_position(), 6u);
  EXPECT_EQ(stream.Contiguous(), "ghijkl");  // the copied tail joins the next call
  EXPECT_EQ(stream.TimestampAt(0), 1u);
  EXPECT_EQ(stream.TimestampAt(11), 2u);
}

TEST(ByteStreamTest, GapBetweenCallsIsCounted) {
  ByteStream stream;
  stream.Add(0, 4, 0, "abcd", 1, 1);
  stream.Add(10, 2, 0, "xy", 2, 2);  // offsets 4..9 never seen
  EXPECT_EQ(stream.gap_bytes(), 6u);
  EXPECT_EQ(stream.end_position(), 12u);
  EXPECT_EQ(stream.Contiguous(), "abcd");
  stream.Consume(4);
  EXPECT_EQ(stream.Contiguous(), "");
  EXPECT_EQ(stream.TidAt(5), 0u);  // nobody moved these bytes (that we saw)
  stream.Consume(1);
  EXPECT_EQ(stream.read_position(), 5u);
  EXPECT_EQ(stream.Contiguous(), "");
  stream.SkipTo(10);
  EXPECT_EQ(stream.Contiguous(), "xy");
  stream.Add(20, 1, 0, "z", 3, 3);
  EXPECT_EQ(stream.gap_bytes(), 14u);
}

TEST(ByteStreamTest, DuplicateCallIsDropped) {
  ByteStream stream;
  stream.Add(0, 5, 0, "hello", 1, 1);
  stream.Add(0, 5, 0, "HELLO", 2, 2);
  stream.Add(1, 3, 0, "ELL", 3, 3);  // reordered, entirely known
  EXPECT_EQ(stream.end_position(), 5u);
  EXPECT_EQ(stream.buffered_bytes(), 5u);
  EXPECT_EQ(stream.Contiguous(), "hello");
  EXPECT_EQ(stream.TimestampAt(0), 1u);
  EXPECT_EQ(stream.TidAt(2), 1u);
  EXPECT_EQ(stream.gap_bytes(), 0u);
}

TEST(ByteStreamTest, OverlapIsTrimmed) {
  ByteStream stream;
  stream.Add(0, 5, 0, "hello", 1, 1);
  stream.Add(3, 5, 0, "LOxyz", 2, 2);  // [3,5) already known: only "xyz" is new
  EXPECT_EQ(stream.end_position(), 8u);
  EXPECT_EQ(stream.buffered_bytes(), 8u);
  EXPECT_EQ(stream.Contiguous(), "helloxyz");
  EXPECT_EQ(stream.TimestampAt(4), 1u);
  EXPECT_EQ(stream.TimestampAt(5), 2u);
  EXPECT_EQ(stream.TidAt(4), 1u);
  EXPECT_EQ(stream.TidAt(7), 2u);

  // Overlap with a payload offset: the call covers [6,12), its bytes start at 7.
  stream.Add(6, 6, 1, "Zabcd", 3, 3);
  EXPECT_EQ(stream.end_position(), 12u);
  EXPECT_EQ(stream.Contiguous(), "helloxyzabcd");
  EXPECT_EQ(stream.buffered_bytes(), 12u);

  // Overlap whose captured bytes all fall in the known part: a hole remains.
  stream.Add(10, 6, 0, "cd", 4, 4);  // covers [10,16), bytes only for [10,12)
  EXPECT_EQ(stream.end_position(), 16u);
  EXPECT_EQ(stream.buffered_bytes(), 12u);
  EXPECT_EQ(stream.Contiguous(), "helloxyzabcd");
  EXPECT_EQ(stream.TimestampAt(15), 4u);
  EXPECT_EQ(stream.gap_bytes(), 0u);
}

TEST(ByteStreamTest, ContiguousStopsAtPartialCallAndOffsetPayload) {
  ByteStream stream;
  stream.Add(0, 3, 0, "abc", 1, 1);
  stream.Add(3, 5, 0, "de", 2, 2);   // [5,8) not copied
  stream.Add(8, 2, 0, "gh", 3, 3);
  EXPECT_EQ(stream.Contiguous(), "abcde");

  ByteStream offset;
  offset.Add(0, 3, 0, "abc", 1, 1);
  offset.Add(3, 4, 2, "fg", 2, 2);  // bytes for [5,7) only
  EXPECT_EQ(offset.Contiguous(), "abc");

  ByteStream empty_middle;
  empty_middle.Add(0, 2, 0, "ab", 1, 1);
  empty_middle.Add(2, 2, 0, "", 2, 2);
  empty_middle.Add(4, 2, 0, "ef", 3, 3);
  EXPECT_EQ(empty_middle.Contiguous(), "ab");
}

TEST(ByteStreamTest, ContiguousFromMiddleOfSegment) {
  ByteStream stream;
  stream.Add(0, 4, 0, "abcd", 1, 1);
  stream.Add(4, 4, 0, "efgh", 2, 2);
  stream.Add(8, 4, 0, "ijkl", 3, 3);
  stream.Consume(2);
  EXPECT_EQ(stream.Contiguous(), "cdefghijkl");
  stream.Consume(3);
  EXPECT_EQ(stream.Contiguous(), "fghijkl");
  stream.Consume(6);
  EXPECT_EQ(stream.Contiguous(), "l");
}

TEST(ByteStreamTest, ConsumeAndSkipDropMemory) {
  ByteStream stream;
  stream.Add(0, 4, 0, "abcd", 10, 1);
  stream.Add(4, 4, 0, "efgh", 20, 2);
  stream.Add(8, 4, 0, "ijkl", 30, 3);
  EXPECT_EQ(stream.buffered_bytes(), 12u);
  stream.Consume(5);  // the first call is done; the second is still needed
  EXPECT_EQ(stream.read_position(), 5u);
  EXPECT_EQ(stream.buffered_bytes(), 8u);
  EXPECT_EQ(stream.Contiguous(), "fghijkl");
  stream.SkipTo(3);  // backwards: no effect
  EXPECT_EQ(stream.read_position(), 5u);
  EXPECT_EQ(stream.Contiguous(), "fghijkl");
  stream.SkipTo(8);
  EXPECT_EQ(stream.buffered_bytes(), 4u);
  EXPECT_EQ(stream.Contiguous(), "ijkl");
  stream.SkipAll();
  EXPECT_EQ(stream.read_position(), 12u);
  EXPECT_EQ(stream.end_position(), 12u);
  EXPECT_EQ(stream.buffered_bytes(), 0u);
  EXPECT_TRUE(stream.empty());
  EXPECT_EQ(stream.Contiguous(), "");
  // The time of the last dropped call is kept.
  EXPECT_EQ(stream.last_timestamp_ns(), 30u);
  EXPECT_EQ(stream.TimestampAt(11), 30u);
  EXPECT_EQ(stream.TidAt(11), 0u);
}

TEST(ByteStreamTest, SkipPastEndTrimsLaterCalls) {
  ByteStream stream;
  stream.Add(0, 4, 0, "abcd", 1, 1);
  stream.SkipTo(20);  // e.g. a body known to end at 20
  EXPECT_EQ(stream.read_position(), 20u);
  EXPECT_EQ(stream.end_position(), 20u);
  EXPECT_TRUE(stream.empty());
  EXPECT_EQ(stream.buffered_bytes(), 0u);
  stream.Add(4, 10, 0, "0123456789", 2, 2);  // entirely before 20
  EXPECT_TRUE(stream.empty());
  EXPECT_EQ(stream.buffered_bytes(), 0u);
  stream.Add(14, 10, 0, "0123456789", 3, 3);  // covers [14,24): only [20,24) is new
  EXPECT_EQ(stream.end_position(), 24u);
  EXPECT_EQ(stream.Contiguous(), "6789");
  EXPECT_EQ(stream.buffered_bytes(), 4u);
  EXPECT_EQ(stream.gap_bytes(), 0u);
  EXPECT_EQ(stream.TimestampAt(20), 3u);
}

TEST(ByteStreamTest, TimestampAndTidPerCall) {
  ByteStream stream;
  stream.Add(0, 2, 0, "ab", 111, 7);
  stream.Add(2, 3, 0, "cde", 222, 8);
  stream.Add(5, 1, 0, "f", 333, 9);
  const uint64_t expected_ts[] = {111, 111, 222, 222, 222, 333};
  const uint32_t expected_tid[] = {7, 7, 8, 8, 8, 9};
  for (uint64_t position = 0; position < 6; ++position) {
    SCOPED_TRACE(position);
    EXPECT_EQ(stream.TimestampAt(position), expected_ts[position]);
    EXPECT_EQ(stream.TidAt(position), expected_tid[position]);
  }
  // Beyond what is known: the latest call's time, no thread.
  EXPECT_EQ(stream.TimestampAt(6), 333u);
  EXPECT_EQ(stream.TidAt(6), 0u);
}

TEST(ByteStreamTest, BufferBoundDropsBytesButKeepsOffsets) {
  ByteStream stream(8);
  stream.Add(0, 5, 0, "abcde", 1, 1);
  stream.Add(5, 3, 0, "fgh", 2, 2);  // exactly at the bound: kept
  EXPECT_EQ(stream.overflow_drops(), 0u);
  EXPECT_EQ(stream.buffered_bytes(), 8u);
  stream.Add(8, 4, 0, "ijkl", 3, 3);  // over the bound: offsets kept, bytes not
  EXPECT_EQ(stream.overflow_drops(), 1u);
  EXPECT_EQ(stream.buffered_bytes(), 8u);
  EXPECT_EQ(stream.end_position(), 12u);
  EXPECT_EQ(stream.Contiguous(), "abcdefgh");
  EXPECT_EQ(stream.TimestampAt(10), 3u);
  EXPECT_EQ(stream.TidAt(10), 3u);
  stream.Consume(8);
  EXPECT_EQ(stream.buffered_bytes(), 0u);
  EXPECT_EQ(stream.Contiguous(), "");  // the dropped bytes are a hole
  stream.SkipTo(12);
  stream.Add(12, 3, 0, "xyz", 4, 4);  // room again once the reader moved on
  EXPECT_EQ(stream.overflow_drops(), 1u);
  EXPECT_EQ(stream.Contiguous(), "xyz");
  EXPECT_EQ(stream.gap_bytes(), 0u);
}

TEST(ByteStreamTest, BufferBoundHoldsUnderManyCalls) {
  ByteStream stream(1024);
  for (uint64_t i = 0; i < 1000; ++i) stream.Add(i * 100, 100, 0, std::string(100, 'a'), i, 1);
  EXPECT_EQ(stream.buffered_bytes(), 1000u);  // ten calls fit, then nothing more
  EXPECT_EQ(stream.overflow_drops(), 990u);
  EXPECT_EQ(stream.end_position(), 100000u);
  EXPECT_EQ(stream.Contiguous().size(), 1000u);
}

TEST(ByteStreamTest, SkipHoleJumpsToNextCapturedByte) {
  ByteStream stream;
  stream.Add(0, 4, 0, "abcd", 1, 1);
  stream.Add(4, 1000, 0, "", 2, 2);      // nothing copied
  stream.Add(1004, 10, 6, "wxyz", 3, 3);  // bytes only from 1010
  stream.Add(1014, 2, 0, "!!", 4, 4);
  stream.SkipHole();  // bytes were captured here: no effect
  EXPECT_EQ(stream.read_position(), 0u);
  stream.Consume(4);
  stream.SkipHole();
  EXPECT_EQ(stream.read_position(), 1010u);
  EXPECT_EQ(stream.Contiguous(), "wxyz!!");
  EXPECT_EQ(stream.buffered_bytes(), 6u);

  // A gap (offsets never seen) is a hole too; with nothing captured after it, the
  // stream is skipped to its end.
  ByteStream gap;
  gap.Add(0, 2, 0, "ab", 1, 1);
  gap.Add(50, 3, 0, "xyz", 2, 2);
  gap.Consume(2);
  gap.SkipHole();
  EXPECT_EQ(gap.read_position(), 50u);
  EXPECT_EQ(gap.Contiguous(), "xyz");
  gap.Add(60, 5, 0, "", 3, 3);
  gap.Consume(3);
  gap.SkipHole();
  EXPECT_EQ(gap.read_position(), 65u);
  EXPECT_TRUE(gap.empty());
}

TEST(ByteStreamTest, BorrowedBytesConsumedWholeAreNeverCopied) {
  ByteStream stream;
  std::string record = "GET / HTTP/1.1\r\n\r\n";
  stream.AddBorrowed(0, record.size(), 0, record, 100, 7);
  // Read in place: the view points into the caller's buffer.
  EXPECT_EQ(stream.Contiguous().data(), record.data());
  EXPECT_EQ(stream.buffered_bytes(), record.size());
  stream.Consume(record.size());
  stream.KeepBorrowed();
  EXPECT_TRUE(stream.empty());
  EXPECT_EQ(stream.buffered_bytes(), 0u);
  EXPECT_EQ(stream.last_timestamp_ns(), 100u);
}

TEST(ByteStreamTest, BorrowedBytesLeftOverAreKeptPastTheCallersBuffer) {
  ByteStream stream;
  std::string record = "first|second-half";
  stream.AddBorrowed(0, record.size(), 0, record, 100, 7, 1000);
  stream.Consume(6);  // "first|"
  stream.KeepBorrowed();
  record.assign(record.size(), 'x');  // the ring buffer reuses the record's memory
  EXPECT_EQ(stream.Contiguous(), "second-half");
  EXPECT_EQ(stream.buffered_bytes(), 11u);
  // Offsets, times and sequence numbers still cover the whole call.
  EXPECT_EQ(stream.read_position(), 6u);
  EXPECT_EQ(stream.end_position(), 17u);
  EXPECT_EQ(stream.TimestampAt(6), 100u);
  EXPECT_EQ(stream.SeqAt(6), 1006u);

  // The next call, borrowed too, joins what was kept.
  std::string next = "+more";
  stream.AddBorrowed(17, next.size(), 0, next, 200, 7);
  EXPECT_EQ(stream.Contiguous(), "second-half+more");
  stream.Consume(16);
  stream.KeepBorrowed();
  EXPECT_TRUE(stream.empty());
  EXPECT_EQ(stream.buffered_bytes(), 0u);
}

TEST(ByteStreamTest, BorrowedBytesCountTowardsTheBound) {
  ByteStream stream(/*max_buffered_bytes=*/10);
  std::string record(8, 'a');
  stream.AddBorrowed(0, record.size(), 0, record, 1);
  stream.KeepBorrowed();
  std::string more(8, 'b');
  stream.AddBorrowed(8, more.size(), 0, more, 2);  // over the bound: offsets only
  stream.KeepBorrowed();
  EXPECT_EQ(stream.overflow_drops(), 1u);
  EXPECT_EQ(stream.buffered_bytes(), 8u);
  EXPECT_EQ(stream.Contiguous(), std::string(8, 'a'));
}

}  // namespace
}  // namespace flowtracer::conntrack
