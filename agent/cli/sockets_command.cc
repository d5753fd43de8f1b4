// `flowtracer sockets`: the raw capture layer, one JSON line per TCP connection when it
// closes (or when the run ends): tuple, role, byte counts, the calls that moved them.
// What the capture layer sees, before any protocol parsing.
#include <cstdio>
#include <map>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "agent/cli/commands.h"
#include "agent/cli/tracer_session.h"
#include "agent/conntrack/byte_stream.h"
#include "agent/conntrack/raw_event.h"
#include "agent/spans/span_assembler.h"

namespace flowtracer::cli {
namespace {

constexpr size_t kPrefixBytes = 4096;  // reassembled bytes shown per direction

const char* IoCallName(int call) {
  switch (call) {
    case FT_IO_WRITE: return "write";
    case FT_IO_WRITEV: return "writev";
    case FT_IO_SENDTO: return "sendto";
    case FT_IO_SENDMSG: return "sendmsg";
    case FT_IO_READ: return "read";
    case FT_IO_READV: return "readv";
    case FT_IO_RECVFROM: return "recvfrom";
    case FT_IO_RECVMSG: return "recvmsg";
  }
  return "other";
}

const char* RoleName(int role) {
  return role == FT_ROLE_CLIENT ? "client" : role == FT_ROLE_SERVER ? "server" : "unknown";
}

struct SocketRecord {
  ft_conn_event open{};
  uint64_t bytes[2] = {0, 0};
  uint64_t data_events = 0;
  std::map<std::string, uint64_t> calls;
  std::string hooks;
  std::string prefix[2];  // reassembled captured bytes, up to kPrefixBytes
  uint64_t prefix_end[2] = {0, 0};
  bool prefix_gap[2] = {false, false};
};

nlohmann::json ToJson(const SocketRecord& record, const ft_conn_event* close) {
  const ft_tuple& tuple = record.open.tuple;
  nlohmann::json out = {
      {"conn_id", record.open.header.conn_id},
      {"pid", record.open.header.pid},
      {"comm", std::string(record.open.comm, strnlen(record.open.comm, FT_COMM_LEN))},
      {"role", RoleName(record.open.role)},
      {"family", tuple.family == 10 ? "ipv6" : "ipv4"},
      {"local_address", spans::FormatAddress(tuple.local_addr)},
      {"local_port", tuple.local_port},
      {"remote_address", spans::FormatAddress(tuple.remote_addr)},
      {"remote_port", tuple.remote_port},
      {"bytes_sent", record.bytes[FT_DIR_EGRESS]},
      {"bytes_received", record.bytes[FT_DIR_INGRESS]},
      {"data_events", record.data_events},
      {"calls", record.calls},
      {"hooks", record.hooks},
      {"closed", close != nullptr},
      {"sent_prefix", record.prefix[FT_DIR_EGRESS]},
      {"received_prefix", record.prefix[FT_DIR_INGRESS]},
  };
  if (close) {
    // The kernel's own totals, from TCP sequence numbers: they include bytes moved by
    // calls the hooks cannot decode.
    out["kernel_bytes_sent"] = close->bytes_sent;
    out["kernel_bytes_received"] = close->bytes_received;
  }
  return out;
}

}  // namespace

Runner AddSocketsCommand(CLI::App& app) {
  CLI::App* command = app.add_subcommand(
      "sockets", "Print each traced TCP connection as a JSON line: tuple, role, bytes, calls");
  auto options = std::make_shared<SessionOptions>();
  auto output_path = std::make_shared<std::string>();
  AddSessionFlags(command, options.get());
  command->add_option("-o,--output", *output_path, "Write to this file instead of stdout");

  return [options, output_path] {
    FILE* out = stdout;
    if (!output_path->empty()) {
      out = fopen(output_path->c_str(), "w");
      if (!out) {
        fprintf(stderr, "error: cannot write %s: %s\n", output_path->c_str(), strerror(errno));
        return 1;
      }
    }
    std::unordered_map<uint64_t, SocketRecord> open;
    auto print = [&](const SocketRecord& record, const ft_conn_event* close) {
      // Prefixes are raw bytes (TLS, binary protocols): what is not UTF-8 becomes U+FFFD.
      fprintf(out, "%s\n",
              ToJson(record, close).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      fflush(out);
    };
    SessionCallbacks callbacks;
    callbacks.on_record = [&](const void* data, size_t size) {
      conntrack::RawEvent event = conntrack::DecodeRawEvent(data, size);
      if (auto* conn = std::get_if<ft_conn_event>(&event)) {
        if (conn->header.type == FT_EVENT_CONN_OPEN) {
          open[conn->header.conn_id].open = *conn;
        } else if (auto it = open.find(conn->header.conn_id); it != open.end()) {
          print(it->second, conn);
          open.erase(it);
        }
      } else if (auto* io = std::get_if<conntrack::DataEvent>(&event)) {
        auto it = open.find(io->header.header.conn_id);
        if (it == open.end()) return;
        SocketRecord& record = it->second;
        const ft_data_event& h = io->header;
        int dir = h.direction & 1;
        record.bytes[dir] += h.length;
        ++record.data_events;
        ++record.calls[IoCallName(h.io_call)];
        std::string hook = h.hook == FT_HOOK_SOCKET_TRACEPOINTS ? "socket" : "syscall";
        if (record.hooks.find(hook) == std::string::npos)
          record.hooks += (record.hooks.empty() ? "" : ",") + hook;
        // Keep the stream's start, reassembled by offset, while it has no holes.
        if (record.prefix[dir].size() < kPrefixBytes && !record.prefix_gap[dir]) {
          if (!record.prefix[dir].empty() && h.position != record.prefix_end[dir])
            record.prefix_gap[dir] = true;
          else if (h.payload_offset == 0)
            record.prefix[dir].append(io->payload.substr(0, kPrefixBytes - record.prefix[dir].size()));
          if (h.payload_bytes < h.length) record.prefix_gap[dir] = true;
          record.prefix_end[dir] = h.position + h.length;
        }
      }
    };
    int status = RunSession(*options, callbacks);
    for (auto& [id, record] : open) print(record, nullptr);
    if (out != stdout) fclose(out);
    return status;
  };
}

}  // namespace flowtracer::cli
