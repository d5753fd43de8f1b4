// Records as the kernel writes them into the ring buffer, for tests that replay traffic.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "flowtracer/events.h"

namespace flowtracer::records {

// 127.0.0.1:8080 (local) and 127.0.0.1:40000, as IPv4-mapped addresses.
inline ft_tuple LoopbackTuple() {
  ft_tuple tuple{};
  tuple.local_addr[10] = 0xff;
  tuple.local_addr[11] = 0xff;
  tuple.local_addr[12] = 127;
  tuple.local_addr[15] = 1;
  std::memcpy(tuple.remote_addr, tuple.local_addr, 16);
  tuple.local_port = 8080;
  tuple.remote_port = 40000;
  tuple.family = 2;
  return tuple;
}

inline ft_conn_event ConnEvent(uint32_t type, uint64_t conn_id, uint64_t timestamp_ns, ft_role role, uint32_t pid,
                               std::string_view comm, const ft_tuple& tuple) {
  ft_conn_event event{};
  event.header.type = type;
  event.header.pid = pid;
  event.header.tid = pid;
  event.header.timestamp_ns = timestamp_ns;
  event.header.conn_id = conn_id;
  event.tuple = tuple;
  event.role = static_cast<uint8_t>(role);
  std::memcpy(event.comm, comm.data(), std::min(comm.size(), sizeof(event.comm)));
  return event;
}

inline std::string ConnRecord(uint32_t type, uint64_t conn_id, uint64_t timestamp_ns, ft_role role,
                              uint32_t pid = 4242, std::string_view comm = "svc", uint64_t bytes_sent = 0,
                              uint64_t bytes_received = 0) {
  ft_conn_event event = ConnEvent(type, conn_id, timestamp_ns, role, pid, comm, LoopbackTuple());
  event.bytes_sent = bytes_sent;
  event.bytes_received = bytes_received;
  return std::string(reinterpret_cast<const char*>(&event), sizeof(event));
}

inline std::string DataRecord(uint64_t conn_id, ft_direction direction, uint64_t position,
                              std::string_view payload, uint64_t timestamp_ns, uint32_t tid,
                              uint32_t length, uint32_t payload_offset = 0, uint32_t seq_start = 0) {
  ft_data_event event{};
  event.header.type = FT_EVENT_DATA;
  event.header.pid = 4242;
  event.header.tid = tid;
  event.header.timestamp_ns = timestamp_ns;
  event.header.conn_id = conn_id;
  event.position = position;
  event.length = length;
  event.payload_offset = payload_offset;
  event.payload_bytes = static_cast<uint32_t>(payload.size());
  event.fd = 5;
  event.direction = static_cast<uint8_t>(direction);
  event.seq_start = seq_start;
  std::string record(reinterpret_cast<const char*>(&event), sizeof(event));
  record.append(payload);
  return record;
}

// Replays a conversation record by record into `deliver` (a ConnectionTracker's OnRecord),
// keeping each direction's stream position so tests write bytes, not offsets.
class RecordFeeder {
 public:
  using Deliver = std::function<void(const void* data, size_t size)>;
  explicit RecordFeeder(Deliver deliver) : deliver_(std::move(deliver)) {}

  void Open(uint64_t conn_id, ft_role role, uint32_t pid, std::string_view comm, const ft_tuple& tuple,
            uint64_t timestamp_ns = 1) {
    const ft_conn_event event = ConnEvent(FT_EVENT_CONN_OPEN, conn_id, timestamp_ns, role, pid, comm, tuple);
    deliver_(&event, sizeof(event));
  }

  void Close(uint64_t conn_id, uint64_t timestamp_ns) {
    const ft_conn_event event = ConnEvent(FT_EVENT_CONN_CLOSE, conn_id, timestamp_ns, FT_ROLE_UNKNOWN, 0, "", {});
    deliver_(&event, sizeof(event));
  }

  // One call that moved `length` bytes (default: all of `captured`), of which the kernel
  // copied `captured` (less when the payload cap cut it).
  void Data(uint64_t conn_id, ft_direction direction, uint32_t tid, std::string_view captured,
            uint64_t timestamp_ns, uint32_t length = UINT32_MAX) {
    if (length == UINT32_MAX) length = static_cast<uint32_t>(captured.size());
    uint64_t& position = positions_[{conn_id, direction}];
    // Both ends of a test connection start their sequence numbers at 0.
    const std::string record = DataRecord(conn_id, direction, position, captured, timestamp_ns, tid, length,
                                          /*payload_offset=*/0, /*seq_start=*/static_cast<uint32_t>(position));
    deliver_(record.data(), record.size());
    position += length;
  }
  void Write(uint64_t conn_id, uint32_t tid, std::string_view bytes, uint64_t timestamp_ns) {
    Data(conn_id, FT_DIR_EGRESS, tid, bytes, timestamp_ns);
  }
  void Read(uint64_t conn_id, uint32_t tid, std::string_view bytes, uint64_t timestamp_ns) {
    Data(conn_id, FT_DIR_INGRESS, tid, bytes, timestamp_ns);
  }

 private:
  Deliver deliver_;
  std::map<std::pair<uint64_t, int>, uint64_t> positions_;
};

}  // namespace flowtracer::records
