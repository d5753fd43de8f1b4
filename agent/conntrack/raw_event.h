// Typed views of the records the kernel writes to the ring buffer, validated before use:
// a record the agent cannot trust is counted, never parsed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <variant>

#include "flowtracer/events.h"

namespace flowtracer::conntrack {

// The layout is a contract with the kernel programs (bpf/include/flowtracer/events.h):
// these pin it so a change on one side alone fails to compile.
static_assert(sizeof(ft_tuple) == 40);
static_assert(sizeof(ft_event_header) == 32);
static_assert(offsetof(ft_event_header, timestamp_ns) == 16);
static_assert(offsetof(ft_event_header, conn_id) == 24);
static_assert(sizeof(ft_conn_event) == 32 + 40 + 16 + 8 + FT_COMM_LEN);
static_assert(sizeof(ft_data_event) == 64);
static_assert(offsetof(ft_data_event, position) == 32);
static_assert(offsetof(ft_data_event, direction) == 56);
static_assert(offsetof(ft_data_event, seq_start) == 60);
static_assert(sizeof(ft_conn_control) == 24);

struct DataEvent {
  ft_data_event header;       // copied: ring buffer memory is not aligned for the agent's use
  std::string_view payload;   // points into the ring buffer record; valid during the callback
};

struct MalformedEvent {
  std::string_view reason;
};

using RawEvent = std::variant<ft_conn_event, DataEvent, MalformedEvent>;

inline RawEvent DecodeRawEvent(const void* data, size_t size) {
  if (size < sizeof(ft_event_header)) return MalformedEvent{"record shorter than an event header"};
  ft_event_header header;
  std::memcpy(&header, data, sizeof(header));
  switch (header.type) {
    case FT_EVENT_CONN_OPEN:
    case FT_EVENT_CONN_CLOSE: {
      if (size < sizeof(ft_conn_event)) return MalformedEvent{"connection event too short"};
      ft_conn_event event;
      std::memcpy(&event, data, sizeof(event));
      return event;
    }
    case FT_EVENT_DATA: {
      if (size < sizeof(ft_data_event)) return MalformedEvent{"data event too short"};
      DataEvent event;
      std::memcpy(&event.header, data, sizeof(event.header));
      if (event.header.payload_bytes > FT_MAX_PAYLOAD ||
          sizeof(ft_data_event) + event.header.payload_bytes > size ||
          event.header.payload_offset > event.header.length ||
          event.header.payload_bytes > event.header.length - event.header.payload_offset ||
          event.header.direction > FT_DIR_INGRESS)
        return MalformedEvent{"data event payload bounds are inconsistent"};
      event.payload = std::string_view(static_cast<const char*>(data) + sizeof(ft_data_event),
                                       event.header.payload_bytes);
      return event;
    }
    default:
      return MalformedEvent{"unknown event type"};
  }
}

}  // namespace flowtracer::conntrack
