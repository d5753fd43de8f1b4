// google.rpc.RetryInfo from a gRPC error's details, read without the google.rpc protos.
// Compiled into the agent (for its tests) and into the OTLP/gRPC module that uses it.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "exporters/otlp/transport.h"

namespace flowtracer::exporters::otlp {
namespace {

// Walks the fields of a serialized protobuf message: calls on_field(number, varint, bytes)
// for varint and length-delimited fields; false when the bytes are malformed.
template <typename OnField>
bool ForEachField(std::string_view message, OnField on_field) {
  auto varint = [&](uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64 && !message.empty(); shift += 7) {
      uint8_t byte = static_cast<uint8_t>(message[0]);
      message.remove_prefix(1);
      *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return true;
    }
    return false;
  };
  while (!message.empty()) {
    uint64_t key = 0, value = 0;
    if (!varint(&key)) return false;
    switch (key & 7) {
      case 0:
        if (!varint(&value)) return false;
        on_field(key >> 3, value, std::string_view());
        break;
      case 2:
        if (!varint(&value) || value > message.size()) return false;
        on_field(key >> 3, 0, message.substr(0, value));
        message.remove_prefix(value);
        break;
      case 1:
        if (message.size() < 8) return false;
        message.remove_prefix(8);
        break;
      case 5:
        if (message.size() < 4) return false;
        message.remove_prefix(4);
        break;
      default:
        return false;
    }
  }
  return true;
}

}  // namespace

// The receiver's RetryInfo, the gRPC form of Retry-After: google.rpc.Status (details = 3)
// holding a google.protobuf.Any (type_url = 1, value = 2) of google.rpc.RetryInfo
// (retry_delay = 1), a google.protobuf.Duration (seconds = 1, nanos = 2).
std::optional<uint64_t> GrpcRetryDelayMs(const std::string& status_details) {
  std::optional<uint64_t> delay_ms;
  ForEachField(status_details, [&](uint64_t number, uint64_t, std::string_view any) {
    if (number != 3) return;
    std::string_view type_url, value;
    ForEachField(any, [&](uint64_t n, uint64_t, std::string_view bytes) {
      if (n == 1) type_url = bytes;
      if (n == 2) value = bytes;
    });
    if (type_url != "type.googleapis.com/google.rpc.RetryInfo") return;
    ForEachField(value, [&](uint64_t n, uint64_t, std::string_view duration) {
      if (n != 1) return;
      uint64_t seconds = 0, nanos = 0;
      ForEachField(duration, [&](uint64_t field, uint64_t v, std::string_view) {
        if (field == 1) seconds = v;
        if (field == 2) nanos = v;
      });
      delay_ms = seconds * 1000 + nanos / 1000000;
    });
  });
  return delay_ms;
}

}  // namespace flowtracer::exporters::otlp
