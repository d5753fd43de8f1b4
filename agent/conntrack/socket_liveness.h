// Whether a tracked connection's socket still exists, asked of the kernel's socket tables.
// A close event lost to a full ring buffer would otherwise leave the connection (and the
// span state of its open requests) in the agent until the idle timeout: under connection
// churn at saturation that is thousands of connections no longer open.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "flowtracer/events.h"

namespace flowtracer::conntrack {

class SocketLiveness {
 public:
  virtual ~SocketLiveness() = default;
  // A new round of questions: tables read for the previous round are stale.
  virtual void BeginSweep() {}
  // False only when the socket is known to be gone; true when open or when unknown.
  virtual bool MayBeOpen(uint32_t pid, const ft_tuple& tuple) = 0;
};

// Reads /proc/PID/net/tcp and tcp6 (the process's own network namespace), once per
// namespace per sweep. A socket in TIME_WAIT or CLOSE counts as gone: the kernel's
// connection state ended at TCP_CLOSE, which is where the close event is sent.
class ProcSocketLiveness : public SocketLiveness {
 public:
  explicit ProcSocketLiveness(std::string proc_root = "/proc") : proc_root_(std::move(proc_root)) {}

  void BeginSweep() override;
  bool MayBeOpen(uint32_t pid, const ft_tuple& tuple) override;

 private:
  struct Table {
    bool readable = false;
    // local address (16) + remote address (16) + local port + remote port, as in ft_tuple
    std::unordered_set<std::string> open;
  };
  const Table& TableOf(uint32_t pid, bool* process_gone);

  std::string proc_root_;
  std::unordered_map<std::string, Table> tables_by_netns_;
};

// The key ProcSocketLiveness uses for a tuple (exposed for tests).
std::string SocketKey(const ft_tuple& tuple);

}  // namespace flowtracer::conntrack
