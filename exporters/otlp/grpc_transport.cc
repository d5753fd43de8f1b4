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

// Walks the fields of a serialized protobuf message: calls on_field(number, varint, bytes)
// for varint and length-delimited fields; false when the bytes are malformed.
template <typename OnField>
bool ForEachField(std::string_view message, OnField on_field) {
  auto varint = [&](uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64 && !message.empty(); shift += 7) {
      uint8_t byte = static_cast<uint8_t>(message[0]);
      message.remove_prefix(1);
      *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return true;
    }
    return false;
  };
  while (!message.empty()) {
    uint64_t key = 0, value = 0;
    if (!varint(&key)) return false;
    switch (key & 7) {
      case 0:
        if (!varint(&value)) return false;
        on_field(key >> 3, value, std::string_view());
        break;
      case 2:
        if (!varint(&value) || value > message.size()) return false;
        on_field(key >> 3, 0, message.substr(0, value));
        message.remove_prefix(value);
        break;
      case 1:
        if (message.size() < 8) return false;
        message.remove_prefix(8);
        break;
      case 5:
        if (message.size() < 4) return false;
        message.remove_prefix(4);
        break;
      default:
        return false;
    }
  }
  return true;
}

}  // namespace

// The receiver's RetryInfo, the gRPC form of Retry-After: google.rpc.Status (details = 3)
// holding a google.protobuf.Any (type_url = 1, value = 2) of google.rpc.RetryInfo
// (retry_delay = 1), a google.protobuf.Duration (seconds = 1, nanos = 2).
std::optional<uint64_t> GrpcRetryDelayMs(const std::string& status_details) {
  std::optional<uint64_t> delay_ms;
  ForEachField(status_details, [&](uint64_t number, uint64_t, std::string_view any) {
    if (number != 3) return;
    std::string_view type_url, value;
    ForEachField(any, [&](uint64_t n, uint64_t, std::string_view bytes) {
      if (n == 1) type_url = bytes;
      if (n == 2) value = bytes;
    });
    if (type_url != "type.googleapis.com/google.rpc.RetryInfo") return;
    ForEachField(value, [&](uint64_t n, uint64_t, std::string_view duration) {
      if (n != 1) return;
      uint64_t seconds = 0, nanos = 0;
      ForEachField(duration, [&](uint64_t field, uint64_t v, std::string_view) {
        if (field == 1) seconds = v;
        if (field == 2) nanos = v;
      });
      delay_ms = seconds * 1000 + nanos / 1000000;
    });
  });
  return delay_ms;
}

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
    // Wait (until the deadline) for the channel to connect rather than fail at once while it
    // is backing off from an earlier failure: a receiver that just came back gets the batch.
    context.set_wait_for_ready(true);
    if (options_.gzip) context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    for (const auto& [key, value] : options_.headers) {
      std::string lower = key;
      for (char& c : lower) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
      context.AddMetadata(lower, value);
    }
    std::promise<grpc::Status> done;
    stub_.UnaryCall(&context, method_, grpc::StubOptions(), &request_buffer, &response_buffer,
                    [&done](grpc::Status status) { done.set_value(std::move(status)); });
    std::future<grpc::Status> result_future = done.get_future();
    // The call's own deadline bounds this wait; a shutdown deadline may come sooner.
    while (result_future.wait_for(std::chrono::milliseconds(50)) == std::future_status::timeout) {
      if (std::chrono::steady_clock::now() >= Deadline()) {
        context.TryCancel();
        break;
      }
    }
    grpc::Status status = result_future.get();
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
    if (result.outcome == SendResult::Outcome::kRetryable) result.retry_after_ms = GrpcRetryDelayMs(status.error_details());
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
  // Reconnect within a second once the receiver is back (gRPC's default backs off up to 2
  // minutes): a batch waiting for the connection then still fits in its timeout.
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  return std::make_unique<GrpcTransport>(options, grpc::CreateCustomChannel(target, credentials, arguments));
}

}  // namespace flowtracer::exporters::otlp
