// MakeHttpTransport / MakeGrpcTransport: validate the endpoint here, then build the
// transport in its module, loaded on first use (exporters/module_loader.h says why).
#include "exporters/module_loader.h"
#include "exporters/otlp/otlp_options.h"
#include "exporters/otlp/transport_modules.h"

namespace flowtracer::exporters::otlp {
namespace {

bool EndpointUsable(const TransportOptions& options, std::string* error) {
  std::string reason;
  if (ValidateEndpointUrl(options.endpoint, &reason)) return true;
  *error = "OTLP endpoint " + reason;
  return false;
}

}  // namespace

std::unique_ptr<Transport> MakeHttpTransport(const TransportOptions& options, std::string* error) {
  if (!EndpointUsable(options, error)) return nullptr;
  auto factory = reinterpret_cast<HttpTransportFactory>(
      LoadModuleSymbol(kHttpModuleFileName, kHttpModuleFactory, "OTLP/HTTP", error));
  if (!factory) return nullptr;
  return std::unique_ptr<Transport>(factory(&options, error));
}

std::unique_ptr<Transport> MakeGrpcTransport(const TransportOptions& options, std::string* error) {
  if (!EndpointUsable(options, error)) return nullptr;
  auto factory = reinterpret_cast<GrpcTransportFactory>(
      LoadModuleSymbol(kGrpcModuleFileName, kGrpcModuleFactory, "OTLP/gRPC", error));
  if (!factory) return nullptr;
  GrpcChannelSpec spec;
  spec.options = options;
  spec.tls = options.endpoint.rfind("https://", 0) == 0;
  spec.target = options.endpoint.substr(options.endpoint.find("://") + 3);
  if (size_t slash = spec.target.find('/'); slash != std::string::npos) spec.target.resize(slash);
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
