// The kernel -> agent ring buffer's default size. It is the agent's largest fixed cost in
// memory (resident from the start), and what it must absorb grows with the CPUs producing
// into it: 2 MiB per online CPU, a power of two (the kernel requires one), 4 to 64 MiB. On
// 2 CPUs with both ends traced and the reader woken every 64 KiB, at most 200 KiB waited at
// once at 20 000 requests/s and 1.1 MiB at saturation (docs/performance.md, seventh round);
// read every 10 ms instead, 20 000 requests/s queue about 10 ms of records between reads.
#pragma once

#include <cstdint>

namespace flowtracer::loader {

inline constexpr uint32_t kMinDefaultRingBufferBytes = 4u << 20;
inline constexpr uint32_t kMaxDefaultRingBufferBytes = 64u << 20;

constexpr uint32_t DefaultRingBufferBytes(long online_cpus) {
  const uint64_t wanted = (online_cpus > 0 ? static_cast<uint64_t>(online_cpus) : 1) * (2u << 20);
  uint64_t bytes = kMinDefaultRingBufferBytes;
  while (bytes < wanted && bytes < kMaxDefaultRingBufferBytes) bytes <<= 1;
  return static_cast<uint32_t>(bytes);
}

// A size the kernel takes: a power of two of at least a page, here at least 1 MiB so a
// burst wakes the reader (at an eighth of the ring) with room left, and at most 1 GiB.
constexpr bool ValidRingBufferBytes(uint64_t bytes) {
  return bytes >= (1u << 20) && bytes <= (1ull << 30) && (bytes & (bytes - 1)) == 0;
}

// --ring-buffer-mb and trace.ring_buffer_mb: 0 (the default size) or a valid size in MiB.
constexpr bool ValidRingBufferMb(uint64_t mb) {
  return mb == 0 || (mb <= 1024 && ValidRingBufferBytes(mb << 20));
}

}  // namespace flowtracer::loader
