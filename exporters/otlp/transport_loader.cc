// MakeHttpTransport / MakeGrpcTransport: validate the endpoint here, then build the
// transport in its module, loaded on first use (exporters/module_loader.h says why).
#include "exporters/module_loader.h"
#include "exporters/otlp/otlp_options.h"
#include "exporters/otlp/transport_modules.h"

namespace flowtracer::exporters::otlp {
namespace {

std::optional<EndpointUrl> UsableEndpoint(const TransportOptions& options, std::string* error) {
  std::string reason;
  std::optional<EndpointUrl> url = ParseEndpointUrl(options.endpoint, &reason);
  if (!url) *error = "OTLP endpoint " + reason;
  return url;
}

}  // namespace

std::unique_ptr<Transport> MakeHttpTransport(const TransportOptions& options, std::string* error) {
  std::optional<EndpointUrl> url = UsableEndpoint(options, error);
  if (!url) return nullptr;
  auto factory = reinterpret_cast<HttpTransportFactory>(
      LoadModuleSymbol(kHttpModuleFileName, kHttpModuleFactory, "OTLP/HTTP", error));
  if (!factory) return nullptr;
  return std::unique_ptr<Transport>(factory(&options, &*url, error));
}

std::unique_ptr<Transport> MakeGrpcTransport(const TransportOptions& options, std::string* error) {
  std::optional<EndpointUrl> url = UsableEndpoint(options, error);
  if (!url) return nullptr;
  auto factory = reinterpret_cast<GrpcTransportFactory>(
      LoadModuleSymbol(kGrpcModuleFileName, kGrpcModuleFactory, "OTLP/gRPC", error));
  if (!factory) return nullptr;
  GrpcChannelSpec spec;
  spec.options = options;
  spec.tls = url->tls;
  spec.target = url->Authority();  // a path in the URL means nothing to gRPC
  spec.method = GrpcMethod(options.signal);
  return std::unique_ptr<Transport>(factory(&spec));
}

std::unique_ptr<Transport> MakeTransport(const TransportOptions& options, std::string* error) {
  return options.protocol == Protocol::kGrpc ? MakeGrpcTransport(options, error)
                                             : MakeHttpTransport(options, error);
}

std::string GrpcMethod(Signal signal) {
  return signal == Signal::kTraces ? "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                                   : "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
}

}  // namespace flowtracer::exporters::otlp
