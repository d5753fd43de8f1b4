// OTLP/gRPC through a generic stub: the request is already serialized, so one transport
// serves every signal; only the method path differs. Built as a module of its own
// (flowtracer-otlp-grpc.so), loaded by transport_loader.cc only when OTLP/gRPC is chosen:
// gRPC and what it brings (abseil, re2, c-ares, upb) add about 4 MB of resident memory to
// a process that merely links them.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpc/slice.h>
#include <grpcpp/support/byte_buffer.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <iterator>

#include "exporters/otlp/transport_modules.h"
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
  GrpcTransport(TransportOptions options, std::string method, std::shared_ptr<grpc::Channel> channel)
      : options_(std::move(options)), method_(std::move(method)), stub_(std::move(channel)) {}

  SendResult Send(RequestPieces request, uint64_t timeout_ms) override {
    // One slice holding a copy of the pieces, not slices over them: gRPC may still hold the
    // request's slices in its connection's write buffer after the call ends (a cancel at the
    // deadline, or an early error answer), while the exporter reuses the span buffers.
    grpc_slice joined = grpc_slice_malloc(TotalSize(request));
    uint8_t* out = GRPC_SLICE_START_PTR(joined);
    for (std::string_view piece : request) {
      if (piece.empty()) continue;
      memcpy(out, piece.data(), piece.size());
      out += piece.size();
    }
    grpc::Slice slice(joined, grpc::Slice::STEAL_REF);
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

}  // namespace flowtracer::exporters::otlp

extern "C" flowtracer::exporters::otlp::Transport* flowtracer_create_grpc_transport(
    const flowtracer::exporters::otlp::GrpcChannelSpec* spec) {
  using namespace flowtracer::exporters::otlp;
  // The files were checked at start (CertificateError); one gone since fails the handshake.
  auto read = [](const std::string& path) {
    std::ifstream file(path);
    return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  };
  grpc::SslCredentialsOptions tls;
  if (spec->tls && !spec->options.ca_file.empty()) tls.pem_root_certs = read(spec->options.ca_file);
  if (spec->tls && !spec->options.client_certificate_file.empty()) {
    tls.pem_cert_chain = read(spec->options.client_certificate_file);
    tls.pem_private_key = read(spec->options.client_key_file);
  }
  auto credentials = spec->tls ? grpc::SslCredentials(tls) : grpc::InsecureChannelCredentials();
  grpc::ChannelArguments arguments;
  // Reconnect within a second once the receiver is back (gRPC's default backs off up to 2
  // minutes): a batch waiting for the connection then still fits in its timeout.
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  return new GrpcTransport(spec->options, spec->method, grpc::CreateCustomChannel(spec->target, credentials, arguments));
}
