#include "exporters/http_endpoint.h"

#include "exporters/module_loader.h"

namespace flowtracer::exporters {

std::unique_ptr<HttpEndpoint> ServeHttp(const std::string& host, uint16_t port, std::vector<HttpRoute> routes,
                                        const char* purpose, const char* remedy, std::string* error) {
  auto factory = reinterpret_cast<HttpEndpointFactory>(
      LoadModuleSymbol(kHttpEndpointModuleFileName, kHttpEndpointFactory, purpose, error));
  if (!factory) return nullptr;
  std::string reason;
  std::unique_ptr<HttpEndpoint> endpoint(factory(&host, port, &routes, &reason));
  if (!endpoint) {
    *error = "cannot listen on " + host + ":" + std::to_string(port) + " for " + purpose + ": " + reason + " (" +
             remedy + ")";
  }
  return endpoint;
}

}  // namespace flowtracer::exporters
