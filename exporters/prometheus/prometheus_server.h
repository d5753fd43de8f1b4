// The Prometheus scrape endpoint: GET /metrics renders a fresh snapshot on every scrape,
// served by cpp-httplib on its own thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "agent/metrics/metric_data.h"

namespace httplib {
class Server;
}

namespace flowtracer::exporters {

class PrometheusServer {
 public:
  // Called on the server's thread for every scrape; must be thread-safe.
  using SnapshotSource = std::function<metrics::MetricsSnapshot()>;

  explicit PrometheusServer(SnapshotSource source);
  ~PrometheusServer();

  // Binds and starts serving; false with `error` set when the address cannot be bound.
  bool Start(const std::string& address, uint16_t port, std::string* error);
  void Stop();

  uint64_t scrapes() const;

 private:
  SnapshotSource source_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<uint64_t> scrapes_{0};
};

}  // namespace flowtracer::exporters
