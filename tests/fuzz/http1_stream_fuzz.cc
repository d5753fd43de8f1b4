// libFuzzer target for the HTTP/1 stream driver over byte streams: no crash on any input,
// and parsing each call's bytes in place (borrowed, as the agent does with ring records)
// reports exactly what copying them first reports. Each borrowed call lives in its own
// heap buffer, freed once the call is processed, so a view kept past KeepBorrowed() is a
// use after free that AddressSanitizer reports.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "agent/conntrack/byte_stream.h"
#include "agent/conntrack/http1_stream.h"

namespace {

using flowtracer::conntrack::ByteStream;
using flowtracer::conntrack::Http1Conversation;
using flowtracer::conntrack::HttpExchange;
using flowtracer::conntrack::HttpMessageRecord;

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

struct Call {
  int direction;  // 0: request bytes (client to server), 1: response bytes
  std::string_view bytes;
};

// Input: a sequence of [direction << 7 | (length - 1)] [length bytes] calls.
std::vector<Call> SplitIntoCalls(std::string_view input) {
  std::vector<Call> calls;
  while (!input.empty()) {
    const auto header = static_cast<unsigned char>(input[0]);
    input.remove_prefix(1);
    const size_t length = std::min<size_t>((header & 0x7f) + 1, input.size());
    if (length == 0) break;
    calls.push_back({header >> 7, input.substr(0, length)});
    input.remove_prefix(length);
  }
  return calls;
}

struct Outcome {
  std::vector<HttpExchange> exchanges;
  std::vector<uint64_t> started;  // request_index of each request reported as started
};

Outcome Drive(const std::vector<Call>& calls, bool borrow) {
  ByteStream streams[2];
  Http1Conversation conversation;
  Outcome outcome;
  const flowtracer::conntrack::RequestStarted started = [&](const HttpMessageRecord& request) {
    outcome.started.push_back(request.request_index);
  };
  uint64_t positions[2] = {0, 0};
  uint64_t now_ns = 1;
  for (const Call& call : calls) {
    ByteStream& stream = streams[call.direction];
    if (borrow) {
      auto buffer = std::make_unique<char[]>(call.bytes.size());
      std::memcpy(buffer.get(), call.bytes.data(), call.bytes.size());
      stream.AddBorrowed(positions[call.direction], call.bytes.size(), 0,
                         std::string_view(buffer.get(), call.bytes.size()), now_ns, 7);
      conversation.Process(streams[0], streams[1], &outcome.exchanges, &started);
      stream.KeepBorrowed();
    } else {
      stream.Add(positions[call.direction], call.bytes.size(), 0, call.bytes, now_ns, 7);
      conversation.Process(streams[0], streams[1], &outcome.exchanges, &started);
    }
    positions[call.direction] += call.bytes.size();
    ++now_ns;
  }
  conversation.Close(streams[0], streams[1], &outcome.exchanges, &started);
  return outcome;
}

bool SameRecord(const HttpMessageRecord& a, const HttpMessageRecord& b) {
  return a.head.method() == b.head.method() && a.head.target() == b.head.target() &&
         a.head.status_code == b.head.status_code && a.head.reason() == b.head.reason() &&
         a.head.headers() == b.head.headers() && a.head.head_bytes == b.head.head_bytes &&
         a.start_ns == b.start_ns && a.end_ns == b.end_ns && a.body_bytes == b.body_bytes &&
         a.body_complete == b.body_complete && a.request_index == b.request_index;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<Call> calls = SplitIntoCalls(std::string_view(reinterpret_cast<const char*>(data), size));
  const Outcome copied = Drive(calls, /*borrow=*/false);
  const Outcome borrowed = Drive(calls, /*borrow=*/true);
  Check(copied.started == borrowed.started);
  Check(copied.exchanges.size() == borrowed.exchanges.size());
  for (size_t i = 0; i < copied.exchanges.size(); ++i) {
    const HttpExchange& a = copied.exchanges[i];
    const HttpExchange& b = borrowed.exchanges[i];
    Check(a.error_type == b.error_type);
    Check(SameRecord(a.request, b.request));
    Check(a.response.has_value() == b.response.has_value());
    if (a.response) Check(SameRecord(*a.response, *b.response));
  }
  return 0;
}
