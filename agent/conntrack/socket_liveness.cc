#include "agent/conntrack/socket_liveness.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>

namespace flowtracer::conntrack {
namespace {

constexpr std::string_view kTcpTimeWait = "06";
constexpr std::string_view kTcpClose = "07";

// "0100007F:1F90" (tcp) or 32 hex digits ":1F90" (tcp6): the kernel prints each 32-bit
// word of the address as the host-order value of its bytes, so copying the parsed value
// back into memory restores the bytes.
bool ParseEndpoint(std::string_view text, uint8_t address[16], uint16_t* port) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos) return false;
  std::string_view hex = text.substr(0, colon);
  if (hex.size() != 8 && hex.size() != 32) return false;
  std::memset(address, 0, 16);
  uint8_t* words = address;
  if (hex.size() == 8) {
    address[10] = address[11] = 0xff;  // IPv4-mapped, as ft_tuple stores IPv4
    words = address + 12;
  }
  for (size_t i = 0; i < hex.size() / 8; ++i) {
    std::string word(hex.substr(i * 8, 8));
    char* end = nullptr;
    uint32_t value = static_cast<uint32_t>(std::strtoul(word.c_str(), &end, 16));
    if (end != word.c_str() + 8) return false;
    std::memcpy(words + i * 4, &value, 4);
  }
  std::string port_hex(text.substr(colon + 1));
  char* end = nullptr;
  unsigned long value = std::strtoul(port_hex.c_str(), &end, 16);
  if (port_hex.empty() || *end != '\0' || value > 0xffff) return false;
  *port = static_cast<uint16_t>(value);
  return true;
}

std::string Key(const uint8_t local[16], uint16_t local_port, const uint8_t remote[16], uint16_t remote_port) {
  std::string key(36, '\0');
  std::memcpy(key.data(), local, 16);
  std::memcpy(key.data() + 16, remote, 16);
  std::memcpy(key.data() + 32, &local_port, 2);
  std::memcpy(key.data() + 34, &remote_port, 2);
  return key;
}

// Adds the open sockets listed in one /proc/net/tcp-format file; false when unreadable.
bool ReadTable(const std::string& path, std::unordered_set<std::string>* open) {
  std::ifstream file(path);
  if (!file) return false;
  std::string line;
  std::getline(file, line);  // header
  while (std::getline(file, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    if (!(fields >> slot >> local >> remote >> state)) continue;
    if (state == kTcpTimeWait || state == kTcpClose) continue;
    uint8_t local_addr[16], remote_addr[16];
    uint16_t local_port = 0, remote_port = 0;
    if (!ParseEndpoint(local, local_addr, &local_port) || !ParseEndpoint(remote, remote_addr, &remote_port))
      continue;
    open->insert(Key(local_addr, local_port, remote_addr, remote_port));
  }
  return true;
}

}  // namespace

std::string SocketKey(const ft_tuple& tuple) {
  return Key(tuple.local_addr, tuple.local_port, tuple.remote_addr, tuple.remote_port);
}

void ProcSocketLiveness::BeginSweep() { tables_by_netns_.clear(); }

const ProcSocketLiveness::Table& ProcSocketLiveness::TableOf(uint32_t pid, bool* process_gone) {
  static const Table kUnknown;
  std::string process_dir = proc_root_ + "/" + std::to_string(pid);
  struct stat info;
  if (stat(process_dir.c_str(), &info) != 0) {
    *process_gone = errno == ENOENT;
    return kUnknown;
  }
  // Processes of one namespace share its table: read it once per sweep.
  char link[128];
  ssize_t length = readlink((process_dir + "/ns/net").c_str(), link, sizeof(link));
  std::string netns = length > 0 ? std::string(link, static_cast<size_t>(length)) : "pid " + std::to_string(pid);
  auto [it, inserted] = tables_by_netns_.try_emplace(netns);
  if (inserted) {
    bool v4 = ReadTable(process_dir + "/net/tcp", &it->second.open);
    bool v6 = ReadTable(process_dir + "/net/tcp6", &it->second.open);
    it->second.readable = v4 || v6;
  }
  return it->second;
}

bool ProcSocketLiveness::MayBeOpen(uint32_t pid, const ft_tuple& tuple) {
  if (pid == 0) return true;  // owner unknown: nowhere to look
  bool process_gone = false;
  const Table& table = TableOf(pid, &process_gone);
  if (process_gone) return false;  // its sockets closed with it (unless shared: rare)
  if (!table.readable) return true;
  return table.open.count(SocketKey(tuple)) > 0;
}

}  // namespace flowtracer::conntrack
