// The module flowtracer-http.so: HttpEndpoint served by cpp-httplib (http_endpoint.h says
// why it is a module).
#include <httplib.h>

#include <cerrno>
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
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    return true;
  }

 private:
  std::vector<HttpRoute> routes_;  // the handlers refer to these
  httplib::Server server_;
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
