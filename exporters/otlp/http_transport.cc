// OTLP/HTTP: POST of the protobuf request (Content-Type application/x-protobuf), gzip when
// asked, through the proxy the environment names. One client, reused, so the connection
// stays open between exports. Built as a module of its own (flowtracer-otlp-http.so),
// loaded by transport_loader.cc only when OTLP/HTTP is chosen. It uses cpp-httplib, which
// the agent loads anyway to serve /healthz, so OTLP/HTTP brings no library of its own
// (libcurl would add GnuTLS, Kerberos, LDAP and SSH libraries: 4 MB resident).
#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <condition_variable>
#include <cstring>
#include <ctime>
#include <functional>
#include <mutex>
#include <thread>

#include "exporters/otlp/transport_modules.h"

namespace flowtracer::exporters::otlp {
namespace {

using Clock = std::chrono::steady_clock;

bool Gzip(RequestPieces input, std::string* output) {
  z_stream stream{};
  // windowBits 15 + 16: a gzip header and trailer, not zlib's.
  if (deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return false;
  output->resize(deflateBound(&stream, TotalSize(input)) + 32);
  stream.next_out = reinterpret_cast<Bytef*>(output->data());
  stream.avail_out = static_cast<uInt>(output->size());
  int status = Z_OK;
  for (size_t i = 0; i < input.size() && status == Z_OK; ++i) {
    if (input[i].empty()) continue;  // deflate would answer Z_BUF_ERROR: nothing to do
    stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(input[i].data()));
    stream.avail_in = static_cast<uInt>(input[i].size());
    status = deflate(&stream, Z_NO_FLUSH);
  }
  if (status == Z_OK) status = deflate(&stream, Z_FINISH);
  output->resize(stream.total_out);
  deflateEnd(&stream);
  return status == Z_STREAM_END;
}

// The request body as cpp-httplib asks for it: from an offset (it may ask again from the
// start when it resends on a new connection). cpp-httplib writes what it is given straight
// to the socket (through TLS, one record per write), and a request is mostly spans of a
// few hundred bytes each, so small pieces are gathered into blocks: one write per block
// rather than one per span. A large piece (a gzipped body) goes as it is.
class BodyWriter {
 public:
  static constexpr size_t kBlockBytes = 64 * 1024;

  BodyWriter(RequestPieces pieces, std::string* block) : pieces_(pieces), block_(block) {}

  bool Write(size_t offset, size_t length, httplib::DataSink& sink) {
    if (offset < piece_start_) piece_ = piece_start_ = 0;
    while (piece_ < pieces_.size() && offset >= piece_start_ + pieces_[piece_].size())
      piece_start_ += pieces_[piece_++].size();
    if (piece_ == pieces_.size()) return false;
    size_t within = offset - piece_start_;
    if (pieces_[piece_].size() - within >= kBlockBytes)
      return sink.write(pieces_[piece_].data() + within, std::min(length, pieces_[piece_].size() - within));
    const size_t limit = std::min(length, kBlockBytes);
    block_->clear();
    for (size_t piece = piece_; piece < pieces_.size() && block_->size() < limit; ++piece, within = 0) {
      std::string_view rest = pieces_[piece].substr(within);
      block_->append(rest.substr(0, limit - block_->size()));
    }
    return sink.write(block_->data(), block_->size());
  }

 private:
  RequestPieces pieces_;
  std::string* block_;      // reused from request to request
  size_t piece_ = 0;        // the piece that holds the last offset asked for
  size_t piece_start_ = 0;  // its offset in the body
};

// Retry-After is either seconds or an HTTP date in one of three formats (RFC 9110 section
// 5.6.7: recipients accept all three).
std::optional<uint64_t> ParseRetryAfterMs(const std::string& value) {
  if (value.empty()) return std::nullopt;
  char* end = nullptr;
  unsigned long long seconds = strtoull(value.c_str(), &end, 10);
  if (end && *end == '\0' && isdigit(static_cast<unsigned char>(value[0]))) return seconds * 1000;
  for (const char* format : {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"}) {
    tm parts{};
    const char* rest = strptime(value.c_str(), format, &parts);
    if (!rest || *rest != '\0') continue;
    time_t when = timegm(&parts), now = time(nullptr);
    return when > now ? static_cast<uint64_t>(when - now) * 1000 : 0;
  }
  return std::nullopt;
}

// cpp-httplib names its errors by their enum (httplib::to_string): say what happened.
std::string ErrorText(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection: return "could not connect";
    case httplib::Error::ConnectionTimeout: return "timed out connecting";
    case httplib::Error::Read: return "the connection failed while reading the answer";
    case httplib::Error::Write: return "the connection failed while sending";
    case httplib::Error::SSLConnection: return "the TLS handshake failed";
    case httplib::Error::SSLLoadingCerts: return "the trusted certificates could not be loaded";
    case httplib::Error::SSLServerVerification:
      return "the collector's certificate could not be verified (not trusted, expired, or for another name; "
             "SSL_CERT_FILE can name a file of trusted CA certificates)";
    case httplib::Error::Compression: return "the answer could not be decompressed";
    default: return "request failed (" + httplib::to_string(error) + ")";
  }
}

// The socket of the connection in use, duplicated as cpp-httplib creates it, so that it can
// be shut down whatever the client is doing: connecting, waiting for the proxy or the TLS
// handshake, reading. The client's own stop() waits until the connection is set up. Name
// resolution comes before the socket and is not interrupted.
class ConnectionHandle {
 public:
  ~ConnectionHandle() { Release(); }
  void Replace(int socket) {
    std::lock_guard lock(mutex_);
    if (fd_ >= 0) close(fd_);
    fd_ = fcntl(socket, F_DUPFD_CLOEXEC, 0);
  }
  void Shutdown() {
    std::lock_guard lock(mutex_);
    if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);  // also abandons a connect still waiting
  }
  // Once the client is done with the connection: the duplicate would keep it open.
  void Release() {
    std::lock_guard lock(mutex_);
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  std::mutex mutex_;
  int fd_ = -1;
};

// cpp-httplib bounds each wait on the socket, not a whole request. This thread stops the
// request in flight once its time is up or the shutdown deadline has passed. It sleeps
// until the earlier of the two and is woken only when that moves earlier: requests sent
// back to back re-arm it without a wake-up (a request's deadline is later than the last's).
class RequestWatchdog {
 public:
  enum class Fired { kNo, kTimeout, kShutdown };

  RequestWatchdog(std::function<void()> stop, std::function<Clock::time_point()> shutdown_deadline)
      : stop_(std::move(stop)), shutdown_deadline_(std::move(shutdown_deadline)), thread_([this] { Run(); }) {}
  ~RequestWatchdog() {
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  void Arm(Clock::time_point until) {
    bool sooner;
    {
      std::lock_guard lock(mutex_);
      until_ = until;
      armed_ = true;
      fired_ = Fired::kNo;
      sooner = until < sleeping_until_;
    }
    if (sooner) wake_.notify_one();
  }

  Fired Disarm() {
    std::lock_guard lock(mutex_);
    armed_ = false;
    return fired_;
  }

  // The shutdown deadline changed.
  void DeadlineMoved() {
    { std::lock_guard lock(mutex_); }  // orders this with the thread reading the deadline
    wake_.notify_one();
  }

 private:
  void Run() {
    std::unique_lock lock(mutex_);
    while (!closing_) {
      if (!armed_) {
        sleeping_until_ = Clock::time_point::max();
        wake_.wait(lock);
        continue;
      }
      Clock::time_point now = Clock::now(), shutdown = shutdown_deadline_();
      if (now >= until_ || now >= shutdown) {
        fired_ = now >= shutdown ? Fired::kShutdown : Fired::kTimeout;
        // Again until disarmed: the client may be about to create the socket.
        stop_();
        sleeping_until_ = now + kRepeat;
        wake_.wait_until(lock, sleeping_until_);
        continue;
      }
      // Also after a disarm: waking at a deadline no request has any more only costs a
      // look, and the next Arm, with a later deadline, then needs no wake-up.
      sleeping_until_ = std::min(until_, shutdown);
      wake_.wait_until(lock, sleeping_until_);
    }
  }

  static constexpr std::chrono::milliseconds kRepeat{50};
  std::function<void()> stop_;
  std::function<Clock::time_point()> shutdown_deadline_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool closing_ = false, armed_ = false;
  Clock::time_point until_;
  Clock::time_point sleeping_until_ = Clock::time_point::max();  // when the thread wakes by itself
  Fired fired_ = Fired::kNo;
  std::thread thread_;  // last: it starts once the members it reads exist
};

class HttpTransport : public Transport {
 public:
  HttpTransport(TransportOptions options, std::string target, std::unique_ptr<httplib::ClientImpl> client)
      : options_(std::move(options)),
        target_(std::move(target)),
        client_(std::move(client)),
        watchdog_([this] { connection_.Shutdown(); }, [this] { return Deadline(); }) {
    client_->set_keep_alive(true);
    client_->set_socket_options([this](int socket) { connection_.Replace(socket); });
    if (options_.proxy) {
      client_->set_proxy(options_.proxy->host, options_.proxy->port);
      if (!options_.proxy->user.empty()) client_->set_proxy_basic_auth(options_.proxy->user, options_.proxy->password);
    }
    headers_.emplace("User-Agent", "flowtracer/" FLOWTRACER_VERSION);
    if (options_.gzip) headers_.emplace("Content-Encoding", "gzip");
    for (const auto& [key, value] : options_.headers) headers_.emplace(key, value);
  }

  SendResult Send(RequestPieces request, uint64_t timeout_ms) override {
    std::string compressed;
    std::string_view compressed_piece;
    RequestPieces body = request;
    if (options_.gzip) {
      if (!Gzip(request, &compressed)) return {SendResult::Outcome::kFailed, "gzip failed", {}, {}};
      compressed_piece = compressed;
      body = {&compressed_piece, 1};
    }
    timeout_ms = std::min<uint64_t>(timeout_ms, 24 * 3600 * 1000);  // a clock's time_point cannot overflow
    const auto timeout = std::chrono::milliseconds(timeout_ms);
    // The watchdog ends the request at `timeout`; cpp-httplib's own limits on each wait are
    // a second later, a backstop, so that a request out of time always says so.
    const auto backstop = timeout + std::chrono::seconds(1);
    client_->set_connection_timeout(std::min<std::chrono::milliseconds>(backstop, std::chrono::seconds(5)));
    client_->set_read_timeout(backstop);
    client_->set_write_timeout(backstop);
    BodyWriter writer(body, &block_);
    watchdog_.Arm(Clock::now() + timeout);
    httplib::Result answer = client_->Post(
        target_, headers_, TotalSize(body),
        [&writer](size_t offset, size_t length, httplib::DataSink& sink) { return writer.Write(offset, length, sink); },
        "application/x-protobuf");
    RequestWatchdog::Fired fired = watchdog_.Disarm();
    if (!answer || answer->get_header_value("Connection") == "close") connection_.Release();
    SendResult result;
    if (!answer) {
      // No answer at all (refused, reset, timed out): the receiver may come back.
      result.outcome = SendResult::Outcome::kRetryable;
      if (fired == RequestWatchdog::Fired::kShutdown) result.error = "abandoned at the shutdown deadline";
      else if (fired == RequestWatchdog::Fired::kTimeout) result.error = "timed out after " + std::to_string(timeout_ms) + " ms";
      else if (options_.proxy && answer.error() == httplib::Error::SSLConnection)
        result.error = "the proxy refused the tunnel, or the TLS handshake failed";
      else result.error = ErrorText(answer.error());
      return WithProxy(std::move(result));
    }
    const int status = answer->status;
    if (status >= 200 && status < 300) {
      result.outcome = SendResult::Outcome::kSuccess;
      result.response = std::move(answer->body);
      return result;
    }
    result.error = "HTTP " + std::to_string(status);
    if (status == 407 && options_.proxy) result.error += ": the proxy wants other credentials";
    bool retryable = status == 429 || status == 502 || status == 503 || status == 504;
    result.outcome = retryable ? SendResult::Outcome::kRetryable : SendResult::Outcome::kFailed;
    if (retryable) result.retry_after_ms = ParseRetryAfterMs(answer->get_header_value("Retry-After"));
    return WithProxy(std::move(result));
  }

  // Its watchdog thread starts with the transport, on the thread that makes it.
  bool StartsNoThreadsWhenSending() const override { return true; }

  std::string Describe() const override {
    std::string description = options_.endpoint + " (http/protobuf" + (options_.gzip ? ", gzip" : "");
    if (options_.proxy)
      description += ", through proxy " + options_.proxy->host + ":" + std::to_string(options_.proxy->port) +
                     " from " + options_.proxy->variable;
    return description + ")";
  }

 private:
  void DeadlineChanged() override { watchdog_.DeadlineMoved(); }

  // A failure through a proxy names it: the proxy may be what failed.
  SendResult WithProxy(SendResult result) const {
    if (options_.proxy) result.error += " (through proxy " + options_.proxy->host + " from " + options_.proxy->variable + ")";
    return result;
  }

  TransportOptions options_;
  std::string target_;
  httplib::Headers headers_;
  std::string block_;  // BodyWriter's
  std::unique_ptr<httplib::ClientImpl> client_;
  ConnectionHandle connection_;
  RequestWatchdog watchdog_;  // last: its thread shuts down connection_ until it is joined
};

}  // namespace

}  // namespace flowtracer::exporters::otlp

extern "C" flowtracer::exporters::otlp::Transport* flowtracer_create_http_transport(
    const flowtracer::exporters::otlp::TransportOptions* options, const flowtracer::exporters::otlp::EndpointUrl* url,
    std::string* error) {
  using namespace flowtracer::exporters::otlp;
  // A write to a connection the collector (or the watchdog) shut down must fail with EPIPE,
  // not end the agent; OpenSSL writes with write(), which cannot be told not to signal.
  signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<httplib::ClientImpl> client;
  if (url->tls) {
    auto tls = options->client_certificate_file.empty()
                   ? std::make_unique<httplib::SSLClient>(url->host, url->port)
                   : std::make_unique<httplib::SSLClient>(url->host, url->port, options->client_certificate_file,
                                                          options->client_key_file);
    // In place of the system's authorities, as OTEL_EXPORTER_OTLP_CERTIFICATE means.
    if (!options->ca_file.empty()) tls->set_ca_cert_path(options->ca_file.c_str());
    client = std::move(tls);
  } else {
    client = std::make_unique<httplib::ClientImpl>(url->host, url->port);
  }
  if (!client->is_valid()) {
    *error = options->client_certificate_file.empty()
                 ? "the TLS client could not start (OpenSSL)"
                 : "the TLS client could not start: the client certificate '" + options->client_certificate_file +
                       "' and key '" + options->client_key_file + "' could not be loaded, or do not match";
    return nullptr;
  }
  return new HttpTransport(*options, url->target, std::move(client));
}
