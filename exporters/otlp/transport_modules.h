// The boundary between the agent and the OTLP transport modules: flowtracer-otlp-http.so
// (cpp-httplib) and flowtracer-otlp-grpc.so (grpc++). The agent parses the endpoint URL and
// loads a module when its protocol is chosen (transport_loader.cc); the module builds the
// transport from the parts it is handed. Both sides are built from this tree by the same
// compiler, so C++ types cross.
#pragma once

#include <string>

#include "exporters/otlp/transport.h"

namespace flowtracer::exporters::otlp {

inline constexpr const char* kHttpModuleFileName = "flowtracer-otlp-http.so";
inline constexpr const char* kHttpModuleFactory = "flowtracer_create_http_transport";
// nullptr with `error` set when the module's library cannot start.
using HttpTransportFactory = Transport* (*)(const TransportOptions* options, const EndpointUrl* url,
                                            std::string* error);

struct GrpcChannelSpec {
  TransportOptions options;
  std::string target;  // "host:port" (EndpointUrl::Authority)
  bool tls = false;
  std::string method;  // GrpcMethod(options.signal)
};

inline constexpr const char* kGrpcModuleFileName = "flowtracer-otlp-grpc.so";
inline constexpr const char* kGrpcModuleFactory = "flowtracer_create_grpc_transport";
using GrpcTransportFactory = Transport* (*)(const GrpcChannelSpec* spec);

}  // namespace flowtracer::exporters::otlp
