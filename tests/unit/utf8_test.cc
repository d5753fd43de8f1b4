#include "agent/text/utf8.h"

#include <gtest/gtest.h>

#include <string>

namespace flowtracer::text {
namespace {

const std::string kR = "\xef\xbf\xbd";  // U+FFFD

TEST(Utf8Test, InvalidBytesBecomeReplacementCharactersAndCharactersAreNotCut) {
  EXPECT_EQ(ValidUtf8("/caf\xc3\xa9/ok", 256), "/caf\xc3\xa9/ok");
  EXPECT_EQ(ValidUtf8("/a\xff\xfe/b", 256), "/a" + kR + kR + "/b");
  EXPECT_EQ(ValidUtf8("\xc3", 256), kR);  // truncated sequence
  EXPECT_EQ(ValidUtf8("\xc0\xaf", 256), kR + kR);  // overlong '/'
  EXPECT_EQ(ValidUtf8("\xed\xa0\x80", 256), kR + kR + kR);  // a surrogate
  EXPECT_EQ(ValidUtf8("\xf0\x9f\x98\x80x", 256), "\xf0\x9f\x98\x80x");
  EXPECT_EQ(ValidUtf8("ab\xc3\xa9", 3), "ab");            // é would not fit whole
  EXPECT_EQ(ValidUtf8(std::string(300, 'x'), 256), std::string(256, 'x'));
}

TEST(Utf8Test, ValidityCheckAgreesWithRepair) {
  for (std::string value : {"/plain", "/caf\xc3\xa9", "/a\xff", "\xc3", "\xed\xa0\x80", ""}) {
    SCOPED_TRACE(value);
    EXPECT_EQ(IsValidUtf8(value), ValidUtf8(value) == value);
  }
}

TEST(Utf8Test, InvalidByteFoundAtEveryPositionAndLength) {
  // ASCII is tested several bytes at a time, with overlapping reads at the end.
  for (size_t length = 0; length <= 20; ++length) {
    EXPECT_TRUE(IsValidUtf8(std::string(length, 'a'))) << length;
    for (size_t at = 0; at < length; ++at) {
      std::string value(length, 'a');
      value[at] = '\xff';
      EXPECT_FALSE(IsValidUtf8(value)) << length << " " << at;
      if (at + 1 < length) {
        value[at] = '\xc3';
        value[at + 1] = '\xa9';  // é
        EXPECT_TRUE(IsValidUtf8(value)) << length << " " << at;
      }
    }
  }
}

}  // namespace
}  // namespace flowtracer::text
