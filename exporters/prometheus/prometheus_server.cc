#include "exporters/prometheus/prometheus_server.h"

#include <httplib.h>

#include "exporters/prometheus/prometheus_text.h"

namespace flowtracer::exporters {

PrometheusServer::PrometheusServer(SnapshotSource source) : source_(std::move(source)) {}

PrometheusServer::~PrometheusServer() { Stop(); }

bool PrometheusServer::Start(const std::string& address, uint16_t port, std::string* error) {
  server_ = std::make_unique<httplib::Server>();
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    ++scrapes_;
    response.set_content(PrometheusText(source_()), "text/plain; version=0.0.4; charset=utf-8");
  });
  if (!server_->bind_to_port(address, port)) {
    *error = "cannot listen on " + address + ":" + std::to_string(port) +
             " for Prometheus: is the port in use? Choose another with --prometheus-port";
    server_.reset();
    return false;
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return true;
}

void PrometheusServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

uint64_t PrometheusServer::scrapes() const { return scrapes_; }

}  // namespace flowtracer::exporters
