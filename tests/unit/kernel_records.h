// Records as the kernel writes them into the ring buffer, for tests that replay traffic.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>

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

}  // namespace flowtracer::records
