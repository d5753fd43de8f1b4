// NATS client protocol (https://docs.nats.io/reference/reference-protocols/nats-protocol):
// the messages both sides of a client connection send, as the parser reports them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flowtracer::nats {

// Append-only: values are reported in capture output through their names only.
enum class Verb {
  kInfo,     // server -> client greeting (JSON)
  kConnect,  // client -> server hello (JSON)
  kPub,      // publish
  kHpub,     // publish with a NATS/1.0 header block
  kSub,
  kUnsub,
  kMsg,      // delivery to a subscriber
  kHmsg,     // delivery with a header block
  kPing,
  kPong,
  kOk,       // +OK (verbose mode)
  kErr,      // -ERR 'reason'
};

// "PUB", "HMSG", "+OK", ...
std::string_view VerbName(Verb verb);

// Messages that carry a payload after their control line.
inline bool CarriesPayload(Verb verb) {
  return verb == Verb::kPub || verb == Verb::kHpub || verb == Verb::kMsg || verb == Verb::kHmsg;
}
inline bool CarriesHeaders(Verb verb) { return verb == Verb::kHpub || verb == Verb::kHmsg; }

struct Message {
  Verb verb = Verb::kPing;
  std::string subject;   // PUB, HPUB, MSG, HMSG, SUB
  std::string reply_to;  // PUB, HPUB, MSG, HMSG: "" when absent
  std::string sid;       // MSG, HMSG, SUB, UNSUB: the subscription id
  std::string queue_group;  // SUB
  std::string argument;  // INFO/CONNECT JSON, -ERR text (without the quotes' trimming)

  size_t control_bytes = 0;  // control line including its line ending
  uint64_t header_bytes = 0;  // HPUB/HMSG: the header block's length (within total_bytes)
  uint64_t total_bytes = 0;   // headers + body, as the control line says
  // Bytes of the whole frame: control line, headers and body, and the CRLF after them.
  uint64_t frame_bytes() const { return control_bytes + (CarriesPayload(verb) ? total_bytes + 2 : 0); }
  uint64_t body_bytes() const { return total_bytes - header_bytes; }

  // The header block's status line ("NATS/1.0 503 No Responders") and fields in order.
  int status_code = 0;  // 0 when the status line has no code
  std::string status_description;
  std::vector<std::pair<std::string, std::string>> headers;

  // Case-insensitive lookup of the first header with this name; empty when absent.
  std::string_view Header(std::string_view name) const;
};

struct ParseLimits {
  // nats-server refuses control lines past 4 KiB from clients, but INFO from a server in a
  // cluster can be longer: this only bounds what is buffered while looking for the end.
  size_t max_control_line_bytes = 16 * 1024;
  uint64_t max_total_bytes = 64ull * 1024 * 1024;  // nats-server's upper bound for max_payload
  size_t max_headers = 256;
};

}  // namespace flowtracer::nats
