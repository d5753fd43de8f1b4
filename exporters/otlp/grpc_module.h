// The boundary between the agent and the OTLP/gRPC module (flowtracer-otlp-grpc.so):
// the agent validates the endpoint and loads the module when OTLP/gRPC is chosen; the
// module builds the channel. Both sides are built from this tree by the same compiler.
#pragma once

#include <string>

#include "exporters/otlp/transport.h"

namespace flowtracer::exporters::otlp {

struct GrpcChannelSpec {
  TransportOptions options;
  std::string target;  // "host:port"
  bool tls = false;
  std::string method;  // GrpcMethod(options.signal)
};

// The module's file name, looked for beside the flowtracer executable and then in
// ../lib/flowtracer relative to it.
inline constexpr const char* kGrpcModuleFileName = "flowtracer-otlp-grpc.so";
inline constexpr const char* kGrpcModuleFactory = "flowtracer_create_grpc_transport";
using GrpcTransportFactory = Transport* (*)(const GrpcChannelSpec* spec);

}  // namespace flowtracer::exporters::otlp
