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

}  // namespace
}  // namespace flowtracer::text
