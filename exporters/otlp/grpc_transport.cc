// OTLP/gRPC through a generic stub: the request is already serialized, so one transport
// serves every signal; only the method path differs.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>

#include <chrono>
#include <future>

#include "exporters/otlp/otlp_options.h"
#include "exporters/otlp/transport.h"

namespace flowtracer::exporters::otlp {
namespace {

bool Retryable(grpc::StatusCode code) {
  // The OTLP specification's retryable codes.
  switch (code) {
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DATA_LOSS:
      return true;
    default:
      return false;
  }
}

class GrpcTransport : public Transport {
 public:
  GrpcTransport(TransportOptions options, std::shared_ptr<grpc::Channel> channel)
      : options_(std::move(options)), method_(GrpcMethod(options_.signal)), stub_(std::move(channel)) {}

  SendResult Send(const std::string& request, uint64_t timeout_ms) override {
    grpc::Slice slice(request.data(), request.size());
    grpc::ByteBuffer request_buffer(&slice, 1), response_buffer;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    if (options_.gzip) context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    for (const auto& [key, value] : options_.headers) {
      std::string lower = key;
      for (char& c : lower) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
      context.AddMetadata(lower, value);
    }
    std::promise<grpc::Status> done;
    stub_.UnaryCall(&context, method_, grpc::StubOptions(), &request_buffer, &response_buffer,
                    [&done](grpc::Status status) { done.set_value(std::move(status)); });
    grpc::Status status = done.get_future().get();  // the deadline bounds this wait
    SendResult result;
    if (status.ok()) {
      result.outcome = SendResult::Outcome::kSuccess;
      std::vector<grpc::Slice> slices;
      if (response_buffer.Dump(&slices).ok())
        for (const grpc::Slice& s : slices) result.response.append(reinterpret_cast<const char*>(s.begin()), s.size());
      return result;
    }
    result.error = "gRPC status " + std::to_string(status.error_code()) + ": " + status.error_message();
    result.outcome = Retryable(status.error_code()) ? SendResult::Outcome::kRetryable : SendResult::Outcome::kFailed;
    return result;
  }

  std::string Describe() const override {
    return options_.endpoint + " (grpc" + (options_.gzip ? ", gzip)" : ")");
  }

 private:
  TransportOptions options_;
  std::string method_;
  grpc::GenericStub stub_;
};

}  // namespace

std::unique_ptr<Transport> MakeGrpcTransport(const TransportOptions& options, std::string* error) {
  std::string reason;
  if (!ValidateEndpointUrl(options.endpoint, &reason)) {
    *error = "OTLP endpoint " + reason;
    return nullptr;
  }
  bool tls = options.endpoint.rfind("https://", 0) == 0;
  std::string target = options.endpoint.substr(options.endpoint.find("://") + 3);
  if (size_t slash = target.find('/'); slash != std::string::npos) target.resize(slash);
  auto credentials = tls ? grpc::SslCredentials(grpc::SslCredentialsOptions()) : grpc::InsecureChannelCredentials();
  grpc::ChannelArguments arguments;
  // Reconnect quickly once the collector is back, rather than gRPC's default of up to 2 minutes.
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 500);
  return std::make_unique<GrpcTransport>(options, grpc::CreateCustomChannel(target, credentials, arguments));
}

}  // namespace flowtracer::exporters::otlp
