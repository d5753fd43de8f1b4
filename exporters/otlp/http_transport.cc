// OTLP/HTTP: POST of the protobuf request (Content-Type application/x-protobuf), gzip when
// asked. One curl handle, reused, so the connection stays open between exports. Built as a
// module of its own (flowtracer-otlp-http.so), loaded by transport_loader.cc only when
// OTLP/HTTP is chosen: libcurl and the libraries it brings (OpenSSL, GnuTLS, Kerberos,
// LDAP, ...) add resident memory to a process that merely links them (with cpp-httplib,
// 8 MB to `flowtracer capture`).
#include <curl/curl.h>
#include <zlib.h>

#include <cstring>
#include <mutex>

#include "exporters/otlp/transport_modules.h"

namespace flowtracer::exporters::otlp {
namespace {

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

// The request body as curl reads it: the pieces in order, copied straight into curl's
// upload buffer.
struct BodyReader {
  RequestPieces pieces;
  size_t piece = 0;   // the next piece to read
  size_t offset = 0;  // within it

  static size_t Read(char* buffer, size_t size, size_t count, void* user) {
    auto* self = static_cast<BodyReader*>(user);
    size_t room = size * count, written = 0;
    while (room > 0 && self->piece < self->pieces.size()) {
      std::string_view piece = self->pieces[self->piece];
      const size_t n = std::min(room, piece.size() - self->offset);
      memcpy(buffer + written, piece.data() + self->offset, n);
      written += n;
      room -= n;
      self->offset += n;
      if (self->offset == piece.size()) {
        ++self->piece;
        self->offset = 0;
      }
    }
    return written;
  }

  // curl rewinds when it sends the request again (a kept-alive connection the receiver
  // had closed).
  static int Seek(void* user, curl_off_t position, int origin) {
    auto* self = static_cast<BodyReader*>(user);
    if (origin != SEEK_SET || position < 0) return CURL_SEEKFUNC_CANTSEEK;
    size_t left = static_cast<size_t>(position);
    self->piece = 0;
    while (self->piece < self->pieces.size() && left >= self->pieces[self->piece].size())
      left -= self->pieces[self->piece++].size();
    if (self->piece == self->pieces.size() && left > 0) return CURL_SEEKFUNC_FAIL;
    self->offset = left;
    return CURL_SEEKFUNC_OK;
  }
};

size_t AppendBody(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

size_t ReadHeader(char* data, size_t size, size_t count, void* user) {
  std::string_view line(data, size * count);
  constexpr std::string_view kName = "retry-after:";
  if (line.size() > kName.size() && strncasecmp(line.data(), kName.data(), kName.size()) == 0) {
    std::string value(line.substr(kName.size()));
    while (!value.empty() && isspace(static_cast<unsigned char>(value.back()))) value.pop_back();
    size_t first = value.find_first_not_of(' ');
    *static_cast<std::string*>(user) = first == std::string::npos ? "" : value.substr(first);
  }
  return size * count;
}

// Retry-After is either seconds or an HTTP date (RFC 9110 section 10.2.3).
std::optional<uint64_t> ParseRetryAfterMs(const std::string& value) {
  if (value.empty()) return std::nullopt;
  char* end = nullptr;
  unsigned long long seconds = strtoull(value.c_str(), &end, 10);
  if (end && *end == '\0') return seconds * 1000;
  time_t when = curl_getdate(value.c_str(), nullptr);
  if (when < 0) return std::nullopt;
  time_t now = time(nullptr);
  return when > now ? static_cast<uint64_t>(when - now) * 1000 : 0;
}

class HttpTransport : public Transport {
  // libcurl calls this often during a transfer; non-zero aborts it (shutdown deadline).
  static int CheckDeadline(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    return std::chrono::steady_clock::now() >= static_cast<HttpTransport*>(self)->Deadline() ? 1 : 0;
  }

 public:
  HttpTransport(TransportOptions options, CURL* curl) : options_(std::move(options)), curl_(curl) {
    headers_ = curl_slist_append(headers_, "Content-Type: application/x-protobuf");
    if (options_.gzip) headers_ = curl_slist_append(headers_, "Content-Encoding: gzip");
    headers_ = curl_slist_append(headers_, "User-Agent: flowtracer/" FLOWTRACER_VERSION);
    headers_ = curl_slist_append(headers_, "Expect:");  // no 100-continue round trip
    for (const auto& [key, value] : options_.headers)
      headers_ = curl_slist_append(headers_, (key + ": " + value).c_str());
    // Set once: only the body, its size and the timeouts change between requests.
    curl_easy_setopt(curl_, CURLOPT_URL, options_.endpoint.c_str());
    curl_easy_setopt(curl_, CURLOPT_POST, 1L);
    curl_easy_setopt(curl_, CURLOPT_READFUNCTION, BodyReader::Read);
    curl_easy_setopt(curl_, CURLOPT_READDATA, &body_);
    curl_easy_setopt(curl_, CURLOPT_SEEKFUNCTION, BodyReader::Seek);
    curl_easy_setopt(curl_, CURLOPT_SEEKDATA, &body_);
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers_);
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);  // curl's timeouts must not raise SIGALRM
    curl_easy_setopt(curl_, CURLOPT_ACCEPT_ENCODING, "");  // any encoding curl can decode
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, AppendBody);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &response_);
    curl_easy_setopt(curl_, CURLOPT_HEADERFUNCTION, ReadHeader);
    curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &retry_after_);
    curl_easy_setopt(curl_, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl_, CURLOPT_XFERINFOFUNCTION, CheckDeadline);
    curl_easy_setopt(curl_, CURLOPT_XFERINFODATA, this);
  }
  ~HttpTransport() override {
    curl_slist_free_all(headers_);
    curl_easy_cleanup(curl_);
  }

  SendResult Send(RequestPieces request, uint64_t timeout_ms) override {
    std::string compressed;
    std::string_view compressed_piece;
    body_ = BodyReader{request};
    if (options_.gzip) {
      if (!Gzip(request, &compressed)) return {SendResult::Outcome::kFailed, "gzip failed", {}, {}};
      compressed_piece = compressed;
      body_ = BodyReader{{&compressed_piece, 1}};
    }
    response_.clear();
    retry_after_.clear();
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(TotalSize(body_.pieces)));
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_ms));
    curl_easy_setopt(curl_, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::min<uint64_t>(timeout_ms, 5000)));
    CURLcode code = curl_easy_perform(curl_);
    SendResult result;
    if (code != CURLE_OK) {
      // No answer at all (refused, reset, timed out): the receiver may come back.
      result.outcome = SendResult::Outcome::kRetryable;
      result.error = curl_easy_strerror(code);
      return result;
    }
    long status = 0;
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300) {
      result.outcome = SendResult::Outcome::kSuccess;
      result.response = std::move(response_);
      return result;
    }
    result.error = "HTTP " + std::to_string(status);
    bool retryable = status == 429 || status == 502 || status == 503 || status == 504;
    result.outcome = retryable ? SendResult::Outcome::kRetryable : SendResult::Outcome::kFailed;
    if (retryable) result.retry_after_ms = ParseRetryAfterMs(retry_after_);
    return result;
  }

  std::string Describe() const override {
    return options_.endpoint + " (http/protobuf" + (options_.gzip ? ", gzip)" : ")");
  }

 private:
  TransportOptions options_;
  CURL* curl_;
  curl_slist* headers_ = nullptr;
  BodyReader body_;  // the current request's body, read by curl
  // The current request's answer, written by curl's callbacks.
  std::string response_;
  std::string retry_after_;
};

}  // namespace

}  // namespace flowtracer::exporters::otlp

extern "C" flowtracer::exporters::otlp::Transport* flowtracer_create_http_transport(
    const flowtracer::exporters::otlp::TransportOptions* options, std::string* error) {
  using namespace flowtracer::exporters::otlp;
  static std::once_flag global_init;
  std::call_once(global_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  CURL* curl = curl_easy_init();
  if (!curl) {
    *error = "libcurl could not start";
    return nullptr;
  }
  return new HttpTransport(*options, curl);
}
