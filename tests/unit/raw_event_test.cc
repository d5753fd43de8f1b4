// Records as the kernel writes them: a read or write reserves its ring record at a payload
// size class (bpf/capture.bpf.h), so a data record may be longer than its header and
// payload; the payload is what payload_bytes says, never the record's tail.
#include <gtest/gtest.h>

#include <string>
#include <variant>

#include "agent/conntrack/raw_event.h"
#include "tests/unit/kernel_records.h"

namespace flowtracer::conntrack {
namespace {

TEST(RawEventTest, SizeClassTailIsNotPayload) {
  std::string record = records::DataRecord(7, FT_DIR_EGRESS, 100, "GET / HTTP/1.1\r\n\r\n", 10, 1, 18);
  record.append(30, '\xAA');  // the unused tail of a 48-byte class: stale ring bytes
  RawEvent decoded = DecodeRawEvent(record.data(), record.size());
  ASSERT_TRUE(std::holds_alternative<DataEvent>(decoded));
  const DataEvent& event = std::get<DataEvent>(decoded);
  EXPECT_EQ(event.payload, "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(event.header.header.conn_id, 7u);
  EXPECT_EQ(event.header.position, 100u);
  EXPECT_EQ(event.header.length, 18u);
}

TEST(RawEventTest, HeaderOnlyRecordWithTail) {
  // A call whose bytes are all skipped (payload_bytes 0) in a record with room to spare.
  std::string record = records::DataRecord(7, FT_DIR_INGRESS, 0, "", 10, 1, 500, 500);
  record.append(16, '\0');
  RawEvent decoded = DecodeRawEvent(record.data(), record.size());
  ASSERT_TRUE(std::holds_alternative<DataEvent>(decoded));
  EXPECT_TRUE(std::get<DataEvent>(decoded).payload.empty());
}

}  // namespace
}  // namespace flowtracer::conntrack
