#include "agent/loader/ring_size.h"

#include <gtest/gtest.h>

namespace flowtracer::loader {
namespace {

TEST(RingSizeTest, DefaultGrowsWithCpusBetweenBounds) {
  EXPECT_EQ(DefaultRingBufferBytes(1), 4u << 20);
  EXPECT_EQ(DefaultRingBufferBytes(2), 4u << 20);
  EXPECT_EQ(DefaultRingBufferBytes(3), 8u << 20);  // 6 MiB, rounded up to a power of two
  EXPECT_EQ(DefaultRingBufferBytes(16), 32u << 20);
  EXPECT_EQ(DefaultRingBufferBytes(32), 64u << 20);
  EXPECT_EQ(DefaultRingBufferBytes(256), 64u << 20);
  EXPECT_EQ(DefaultRingBufferBytes(-1), 4u << 20);  // sysconf failed
  for (long cpus : {1L, 5L, 7L, 12L, 100L}) EXPECT_TRUE(ValidRingBufferBytes(DefaultRingBufferBytes(cpus)));
}

TEST(RingSizeTest, OnlyPowersOfTwoFromOneMiBToOneGiB) {
  EXPECT_TRUE(ValidRingBufferBytes(1u << 20));
  EXPECT_TRUE(ValidRingBufferBytes(1ull << 30));
  EXPECT_FALSE(ValidRingBufferBytes(512u << 10));
  EXPECT_FALSE(ValidRingBufferBytes(3u << 20));
  EXPECT_FALSE(ValidRingBufferBytes(2ull << 30));
  EXPECT_FALSE(ValidRingBufferBytes(0));
}

TEST(RingSizeTest, MebibytesAreZeroForTheDefaultOrAValidSize) {
  EXPECT_TRUE(ValidRingBufferMb(0));
  EXPECT_TRUE(ValidRingBufferMb(1));
  EXPECT_TRUE(ValidRingBufferMb(1024));
  EXPECT_FALSE(ValidRingBufferMb(3));
  EXPECT_FALSE(ValidRingBufferMb(2048));
  EXPECT_FALSE(ValidRingBufferMb(uint64_t{1} << 44));  // would wrap when shifted to bytes
}

}  // namespace
}  // namespace flowtracer::loader
