// Small HTTP endpoints served on their own thread: Prometheus' /metrics, the agent's
// /healthz and /readyz. The server (cpp-httplib) lives in the module flowtracer-http.so,
// loaded by the first ServeHttp: cpp-httplib sets up OpenSSL as soon as it is loaded,
// 4 MB resident (with OpenSSL) that `flowtracer capture` without --prometheus-port does not need
// (exporters/module_loader.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace flowtracer::exporters {

struct HttpReply {
  int status = 200;
  std::string body;
  std::string content_type = "text/plain";
};

// A GET route; `handle` runs on the server's thread, so it must be thread-safe.
struct HttpRoute {
  std::string path;
  std::function<HttpReply()> handle;
};

// Serving until destroyed.
class HttpEndpoint {
 public:
  virtual ~HttpEndpoint() = default;
};

// Binds host:port and serves `routes`; nullptr with `error` set: why the module did not
// load, or "cannot listen on 127.0.0.1:9464 for Prometheus: Address already in use (`remedy`)".
std::unique_ptr<HttpEndpoint> ServeHttp(const std::string& host, uint16_t port, std::vector<HttpRoute> routes,
                                        const char* purpose, const char* remedy, std::string* error);

// The module's side of the boundary. Both sides are built from this tree by the same
// compiler, so C++ types cross. The factory sets `error` to the bind failure's reason.
inline constexpr const char* kHttpEndpointModuleFileName = "flowtracer-http.so";
inline constexpr const char* kHttpEndpointFactory = "flowtracer_create_http_endpoint";
using HttpEndpointFactory = HttpEndpoint* (*)(const std::string* host, uint16_t port,
                                               std::vector<HttpRoute>* routes, std::string* error);

}  // namespace flowtracer::exporters
