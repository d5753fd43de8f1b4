// The module flowtracer-http.so: HttpEndpoint served by cpp-httplib (http_endpoint.h says
// why it is a module).
#include <httplib.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "exporters/http_endpoint.h"

namespace flowtracer::exporters {
namespace {

class HttplibEndpoint : public HttpEndpoint {
 public:
  explicit HttplibEndpoint(std::vector<HttpRoute> routes) : routes_(std::move(routes)) {
    for (const HttpRoute& route : routes_) {
      server_.Get(route.path, [&route](const httplib::Request&, httplib::Response& response) {
        HttpReply reply = route.handle();
        response.status = reply.status;
        response.set_content(reply.body, reply.content_type);
      });
    }
  }
  ~HttplibEndpoint() override {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  bool Start(const std::string& host, uint16_t port) {
    if (!server_.bind_to_port(host, port)) return false;
    thread_ = std::thread([this] {
      server_.listen_after_bind();
      listen_ended_ = true;
    });
    // Until the thread has entered its loop, cpp-httplib's stop() does nothing and the
    // destructor's join would wait for good (an endpoint closed right after it opened,
    // as when the agent's next start-up step fails).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!server_.is_running() && !listen_ended_ && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return true;
  }

 private:
  std::vector<HttpRoute> routes_;  // the handlers refer to these
  httplib::Server server_;
  std::atomic<bool> listen_ended_{false};
  std::thread thread_;
};

}  // namespace
}  // namespace flowtracer::exporters

extern "C" flowtracer::exporters::HttpEndpoint* flowtracer_create_http_endpoint(
    const std::string* host, uint16_t port, std::vector<flowtracer::exporters::HttpRoute>* routes,
    std::string* error) {
  using namespace flowtracer::exporters;
  auto endpoint = std::make_unique<HttplibEndpoint>(std::move(*routes));
  errno = 0;
  if (!endpoint->Start(*host, port)) {
    *error = errno ? strerror(errno) : "cannot bind";
    return nullptr;
  }
  return endpoint.release();
}
