// The contract every protocol parser implements (see docs/adding-a-protocol.md).
// Parsers are pure functions over bytes: no kernel, clock or global state, so they
// are unit-tested and fuzzed without root.
#pragma once

namespace flowtracer::protocols {

enum class ParseState {
  kSuccess,        // one whole unit was parsed; `consumed` says how many bytes it took
  kNeedsMoreData,  // the bytes so far are a valid prefix; call again with more
  kInvalid,        // not this protocol at this position; the driver resynchronises
  kIgnored,        // valid but not interesting (e.g. a keep-alive blank line); skip `consumed`
};

enum class MessageType { kRequest, kResponse };

}  // namespace flowtracer::protocols
