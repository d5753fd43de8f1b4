// MakeGrpcTransport: validates the endpoint here, then builds the transport in the
// OTLP/gRPC module, loaded on first use (see grpc_transport.cc for why it is a module).
#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>

#include "exporters/otlp/grpc_module.h"
#include "exporters/otlp/otlp_options.h"

namespace flowtracer::exporters::otlp {
namespace {

// The factory, or nullptr with `error` saying where the module was looked for.
GrpcTransportFactory LoadFactory(std::string* error) {
  static std::once_flag once;
  static GrpcTransportFactory factory = nullptr;
  static std::string load_error;
  std::call_once(once, [] {
    std::error_code ec;
    const std::filesystem::path executable = std::filesystem::read_symlink("/proc/self/exe", ec);
    const std::filesystem::path directory = executable.parent_path();
    std::string tried;
    for (const std::filesystem::path& candidate :
         {directory / kGrpcModuleFileName, directory / ".." / "lib" / "flowtracer" / kGrpcModuleFileName}) {
      // Never unloaded: transports built by it live until the agent exits.
      void* module = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!module) {
        tried += std::string(tried.empty() ? "" : "; ") + dlerror();
        continue;
      }
      factory = reinterpret_cast<GrpcTransportFactory>(dlsym(module, kGrpcModuleFactory));
      if (factory) return;
      tried += "; " + candidate.string() + " has no " + kGrpcModuleFactory;
    }
    load_error = std::string("OTLP/gRPC needs ") + kGrpcModuleFileName +
                 " beside the flowtracer executable or in ../lib/flowtracer (" + tried +
                 "); OTLP/HTTP (--protocol http/protobuf) does not";
  });
  if (!factory) *error = load_error;
  return factory;
}

}  // namespace

std::unique_ptr<Transport> MakeGrpcTransport(const TransportOptions& options, std::string* error) {
  std::string reason;
  if (!ValidateEndpointUrl(options.endpoint, &reason)) {
    *error = "OTLP endpoint " + reason;
    return nullptr;
  }
  GrpcTransportFactory factory = LoadFactory(error);
  if (!factory) return nullptr;
  GrpcChannelSpec spec;
  spec.options = options;
  spec.tls = options.endpoint.rfind("https://", 0) == 0;
  spec.target = options.endpoint.substr(options.endpoint.find("://") + 3);
  if (size_t slash = spec.target.find('/'); slash != std::string::npos) spec.target.resize(slash);
  spec.method = GrpcMethod(options.signal);
  return std::unique_ptr<Transport>(factory(&spec));
}

}  // namespace flowtracer::exporters::otlp
