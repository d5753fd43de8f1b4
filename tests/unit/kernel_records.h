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

inline std::string ConnRecord(uint32_t type, uint64_t conn_id, uint64_t timestamp_ns, ft_role role,
                       uint32_t pid = 4242, std::string_view comm = "svc", uint64_t bytes_sent = 0,
                       uint64_t bytes_received = 0) {
  ft_conn_event event{};
  event.header.type = type;
  event.header.pid = pid;
  event.header.tid = pid;
  event.header.timestamp_ns = timestamp_ns;
  event.header.conn_id = conn_id;
  event.tuple.local_addr[10] = 0xff;
  event.tuple.local_addr[11] = 0xff;
  event.tuple.local_addr[12] = 127;
  event.tuple.local_addr[15] = 1;
  std::memcpy(event.tuple.remote_addr, event.tuple.local_addr, 16);
  event.tuple.local_port = 8080;
  event.tuple.remote_port = 40000;
  event.tuple.family = 2;
  event.bytes_sent = bytes_sent;
  event.bytes_received = bytes_received;
  event.role = static_cast<uint8_t>(role);
  std::memcpy(event.comm, comm.data(), std::min(comm.size(), sizeof(event.comm)));
  return std::string(reinterpret_cast<const char*>(&event), sizeof(event));
}

inline std::string DataRecord(uint64_t conn_id, ft_direction direction, uint64_t position,
                       std::string_view payload, uint64_t timestamp_ns, uint32_t tid,
                       uint32_t length, uint32_t payload_offset = 0) {
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
    ft_conn_event event{};
    event.header.type = FT_EVENT_CONN_OPEN;
    event.header.pid = pid;
    event.header.tid = pid;
    event.header.timestamp_ns = timestamp_ns;
    event.header.conn_id = conn_id;
    event.tuple = tuple;
    event.role = static_cast<uint8_t>(role);
    std::memcpy(event.comm, comm.data(), std::min(comm.size(), sizeof(event.comm)));
    deliver_(&event, sizeof(event));
  }

  void Close(uint64_t conn_id, uint64_t timestamp_ns) {
    ft_conn_event event{};
    event.header.type = FT_EVENT_CONN_CLOSE;
    event.header.timestamp_ns = timestamp_ns;
    event.header.conn_id = conn_id;
    deliver_(&event, sizeof(event));
  }

  // One call that moved `length` bytes (default: all of `captured`), of which the kernel
  // copied `captured` (less when the payload cap cut it).
  void Data(uint64_t conn_id, ft_direction direction, uint32_t tid, std::string_view captured,
            uint64_t timestamp_ns, uint32_t length = UINT32_MAX) {
    if (length == UINT32_MAX) length = static_cast<uint32_t>(captured.size());
    ft_data_event event{};
    event.header.type = FT_EVENT_DATA;
    event.header.tid = tid;
    event.header.timestamp_ns = timestamp_ns;
    event.header.conn_id = conn_id;
    uint64_t& position = positions_[{conn_id, direction}];
    event.position = position;
    // Both ends of a test connection start their sequence numbers at 0.
    event.seq_start = static_cast<uint32_t>(position);
    event.length = length;
    event.payload_bytes = static_cast<uint32_t>(captured.size());
    event.direction = static_cast<uint8_t>(direction);
    std::string record(reinterpret_cast<const char*>(&event), sizeof(event));
    record.append(captured);
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
