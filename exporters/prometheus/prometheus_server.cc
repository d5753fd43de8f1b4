#include "exporters/prometheus/prometheus_server.h"

#include "exporters/prometheus/prometheus_text.h"

namespace flowtracer::exporters {

PrometheusServer::PrometheusServer(SnapshotSource source) : source_(std::move(source)) {}

PrometheusServer::~PrometheusServer() { Stop(); }

bool PrometheusServer::Start(const std::string& address, uint16_t port, std::string* error) {
  HttpRoute metrics{"/metrics", [this] {
                      ++scrapes_;
                      return HttpReply{200, PrometheusText(source_()), "text/plain; version=0.0.4; charset=utf-8"};
                    }};
  endpoint_ = ServeHttp(address, port, {std::move(metrics)}, "Prometheus", "choose another port with --prometheus-port",
                        error);
  return endpoint_ != nullptr;
}

void PrometheusServer::Stop() { endpoint_.reset(); }

uint64_t PrometheusServer::scrapes() const { return scrapes_; }

}  // namespace flowtracer::exporters
