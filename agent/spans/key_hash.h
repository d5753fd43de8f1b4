// Hashing of the fixed-size binary keys that pair requests (connection endpoints).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace flowtracer::spans {

// A hash of a fixed-size binary key (connection endpoints, at least 8 bytes), 8 bytes at
// a time: std::hash of the bytes as a string cost ~70 instructions for 36 bytes, and
// these keys are hashed several times per span.
inline size_t HashKeyBytes(const uint8_t* bytes, size_t size) {
  auto mix = [](uint64_t hash, uint64_t word) {
    hash = (hash ^ word) * 0xbf58476d1ce4e5b9ull;
    return hash ^ (hash >> 31);
  };
  uint64_t hash = size * 0x9e3779b97f4a7c15ull;
  uint64_t word;
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    std::memcpy(&word, bytes + i, sizeof(word));
    hash = mix(hash, word);
  }
  if (i < size) {  // the last bytes, in a word overlapping the one before
    std::memcpy(&word, bytes + size - 8, sizeof(word));
    hash = mix(hash, word);
  }
  return hash;
}

}  // namespace flowtracer::spans
