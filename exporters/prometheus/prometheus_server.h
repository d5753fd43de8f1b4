// The Prometheus scrape endpoint: GET /metrics renders a fresh snapshot on every scrape,
// served on its own thread (exporters/http_endpoint.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "agent/metrics/metric_data.h"
#include "exporters/http_endpoint.h"

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
  std::atomic<uint64_t> scrapes_{0};
  std::unique_ptr<HttpEndpoint> endpoint_;  // last: its thread uses the fields above
};

}  // namespace flowtracer::exporters
