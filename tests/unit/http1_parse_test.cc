#include "agent/protocols/http1/parse.h"

#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <string_view>
#include <vector>

namespace flowtracer::http1 {
namespace {

constexpr MessageType kRequest = MessageType::kRequest;
constexpr MessageType kResponse = MessageType::kResponse;

ParseState Parse(MessageType type, std::string_view buf, const ParseLimits& limits = {}) {
  Message message;
  return ParseHead(type, buf, &message, limits);
}

// Feeds `body` to a fresh decoder in pieces of `piece_bytes`; stops at the first result
// other than kNeedsMoreData. Returns that result, the total consumed and the payload size.
struct ChunkedResult {
  ParseState state;
  size_t consumed_bytes;
  uint64_t body_bytes;
};

ChunkedResult DecodeChunked(std::string_view body, size_t piece_bytes) {
  ChunkedBodyDecoder decoder;
  size_t total_consumed = 0;
  ParseState state = ParseState::kNeedsMoreData;
  while (total_consumed < body.size()) {
    const std::string_view piece = body.substr(total_consumed, piece_bytes);
    size_t consumed = 0;
    state = decoder.Feed(piece, &consumed);
    total_consumed += consumed;
    if (state != ParseState::kNeedsMoreData) break;
    EXPECT_EQ(consumed, piece.size());
  }
  return {state, total_consumed, decoder.body_bytes()};
}

// --- Start lines -------------------------------------------------------------------

TEST(Http1Parse, SimpleGetRequest) {
  const std::string_view buf =
      "GET /users/42?x=1 HTTP/1.1\r\nHost: api.local\r\nAccept: */*\r\n\r\n";
  Message m;
  ASSERT_EQ(ParseHead(kRequest, buf, &m), ParseState::kSuccess);
  EXPECT_EQ(m.type, kRequest);
  EXPECT_EQ(m.method(), "GET");
  EXPECT_EQ(m.target(), "/users/42?x=1");
  EXPECT_EQ(m.minor_version, 1);
  EXPECT_EQ(m.status_code, 0);
  EXPECT_EQ(m.field_count, 2u);
  ASSERT_EQ(m.headers().size(), 1u);  // Accept is validated, not kept
  EXPECT_EQ(m.headers()[0].name, "Host");
  EXPECT_EQ(m.headers()[0].value, "api.local");
  EXPECT_EQ(m.Header("accept"), "");
  EXPECT_EQ(m.framing, BodyFraming::kNone);
  EXPECT_EQ(m.content_length, 0u);
  EXPECT_EQ(m.head_bytes, buf.size());
}

TEST(Http1Parse, RequestWithoutHeaders) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest, "DELETE /items/7 HTTP/1.0\r\n\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.method(), "DELETE");
  EXPECT_EQ(m.target(), "/items/7");
  EXPECT_EQ(m.minor_version, 0);
  EXPECT_TRUE(m.headers().empty());
  EXPECT_EQ(m.field_count, 0u);
  EXPECT_EQ(m.head_bytes, 28u);
}

TEST(Http1Parse, EveryKnownMethodParses) {
  for (std::string_view method :
       {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}) {
    const std::string buf = std::string(method) + " / HTTP/1.1\r\n\r\n";
    Message m;
    ASSERT_EQ(ParseHead(kRequest, buf, &m), ParseState::kSuccess) << method;
    EXPECT_EQ(m.method(), method);
    EXPECT_EQ(m.head_bytes, buf.size());
  }
}

TEST(Http1Parse, UnknownOrLowercaseMethodIsInvalid) {
  EXPECT_EQ(Parse(kRequest, "BREW /pot HTTP/1.1\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "get / HTTP/1.1\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GETS / HTTP/1.1\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), ParseState::kInvalid);
  // A known method must be followed by SP, whether or not 8 bytes are at hand.
  EXPECT_EQ(Parse(kRequest, "CONNECTS h:1 HTTP/1.1\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "OPTIONS\t* HTTP/1.1\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "DELETE/x HTTP/1.1\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "PATCH\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "OPTIONS"), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kRequest, "OPTIONS "), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kRequest, "TRACE /"), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kRequest, "TRACE /abc"), ParseState::kNeedsMoreData);
}

TEST(Http1Parse, RequestTargetForms) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest, "OPTIONS * HTTP/1.1\r\n\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.target(), "*");
  ASSERT_EQ(ParseHead(kRequest, "GET http://a.example/x HTTP/1.1\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.target(), "http://a.example/x");
  ASSERT_EQ(ParseHead(kRequest, "CONNECT db.internal:5432 HTTP/1.1\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.target(), "db.internal:5432");
  ASSERT_EQ(ParseHead(kRequest, "CONNECT [::1]:443 HTTP/1.1\r\n\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.target(), "[::1]:443");
  // Raw UTF-8 in a path is sent by some clients.
  ASSERT_EQ(ParseHead(kRequest, "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.target(), "/caf\xc3\xa9");
}

TEST(Http1Parse, MalformedRequestLinesAreInvalid) {
  EXPECT_EQ(Parse(kRequest, "GET users HTTP/1.1\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET  / HTTP/1.1\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET /a\tb HTTP/1.1\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, std::string_view("GET /a\0b HTTP/1.1\r\n\r\n", 22)),
            ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.2\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.3\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1/1\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1"), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/2.0\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / http/1.1\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1 \r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET /\r\n\r\n"), ParseState::kInvalid);
}

TEST(Http1Parse, StatusLine) {
  const std::string_view buf =
      "HTTP/1.1 404 Not Found Here\r\nContent-Length: 9\r\nContent-Type: text/plain\r\n\r\n";
  Message m;
  ASSERT_EQ(ParseHead(kResponse, buf, &m), ParseState::kSuccess);
  EXPECT_EQ(m.type, kResponse);
  EXPECT_EQ(m.minor_version, 1);
  EXPECT_EQ(m.status_code, 404);
  EXPECT_EQ(m.reason(), "Not Found Here");
  EXPECT_EQ(m.method(), "");
  EXPECT_EQ(m.target(), "");
  EXPECT_EQ(m.framing, BodyFraming::kContentLength);
  EXPECT_EQ(m.content_length, 9u);
  EXPECT_EQ(m.head_bytes, buf.size());
}

TEST(Http1Parse, StatusLineWithEmptyReason) {
  Message m;
  ASSERT_EQ(ParseHead(kResponse, "HTTP/1.0 200 \r\n\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.minor_version, 0);
  EXPECT_EQ(m.status_code, 200);
  EXPECT_EQ(m.reason(), "");
  ASSERT_EQ(ParseHead(kResponse, "HTTP/1.1 503\r\n\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.status_code, 503);
  EXPECT_EQ(m.reason(), "");
  EXPECT_EQ(m.head_bytes, 16u);
}

TEST(Http1Parse, MalformedStatusLinesAreInvalid) {
  EXPECT_EQ(Parse(kResponse, "HTTP/1.1 099 Low\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, "HTTP/1.1 20 OK\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, "HTTP/1.1 2000 OK\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, "HTTP/1.1  200 OK\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, "HTTP/2 200 OK\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, "HTTP/1.3 200 OK\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, "HTTQ/1.1 200 OK\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, "HTTP/1.1 200 O\x01K\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, "ICY 200 OK\r\n\r\n"), ParseState::kInvalid);
}

TEST(Http1Parse, WrongMessageTypeIsInvalid) {
  EXPECT_EQ(Parse(kRequest, "HTTP/1.1 200 OK\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, "GET / HTTP/1.1\r\n\r\n"), ParseState::kInvalid);
}

// --- Prefixes and splits -----------------------------------------------------------

TEST(Http1Parse, PrefixesNeedMoreDataAndJunkIsInvalid) {
  EXPECT_EQ(Parse(kRequest, ""), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kRequest, "G"), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kRequest, "GE"), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kRequest, "GET"), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kRequest, "GET "), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kRequest, "GET /x HTTP/1"), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kRequest, "GET /x HTTP/1.1\r"), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kRequest, "XYZ"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GEX"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET /x HTTP/1.1\rX"), ParseState::kInvalid);

  EXPECT_EQ(Parse(kResponse, ""), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kResponse, "HTTP/1."), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kResponse, "HTTP/1.1 2"), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kResponse, "HTTP/1.1 200"), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kResponse, "HTTP/1.1 200 OK\r\nServer: x"), ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kResponse, "HTTP/1.2"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, "HTTP/1.1 2x"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, "HTTX"), ParseState::kInvalid);
}

TEST(Http1Parse, EveryByteSplitOfRequestHead) {
  const std::string head =
      "POST /api/v1/orders?dry_run=true HTTP/1.1\r\n"
      "Host: orders.internal:8080\r\n"
      "User-Agent: curl/8.5.0\r\n"
      "Content-Type: application/json\r\n"
      "Content-Length: 27\r\n"
      "X-Request-Id: 7f3c2a\r\n"
      "\r\n";
  for (size_t split = 0; split < head.size(); ++split) {
    Message m;
    ASSERT_EQ(ParseHead(kRequest, std::string_view(head).substr(0, split), &m),
              ParseState::kNeedsMoreData)
        << "prefix of " << split << " bytes";
  }
  Message m;
  ASSERT_EQ(ParseHead(kRequest, head, &m), ParseState::kSuccess);
  EXPECT_EQ(m.method(), "POST");
  EXPECT_EQ(m.target(), "/api/v1/orders?dry_run=true");
  EXPECT_EQ(m.field_count, 5u);
  EXPECT_EQ(m.headers().size(), 3u);  // Host, User-Agent, Content-Length
  EXPECT_EQ(m.framing, BodyFraming::kContentLength);
  EXPECT_EQ(m.content_length, 27u);
  EXPECT_EQ(m.head_bytes, head.size());

  // The body bytes after the head do not change the result.
  Message with_body;
  ASSERT_EQ(ParseHead(kRequest, head + R"({"item":"book","qty":2}...)", &with_body),
            ParseState::kSuccess);
  EXPECT_EQ(with_body.head_bytes, head.size());
}

TEST(Http1Parse, EveryByteSplitOfResponseHead) {
  const std::string head =
      "HTTP/1.1 200 OK\r\n"
      "Date: Mon, 27 Jul 2009 12:28:53 GMT\r\n"
      "Transfer-Encoding: chunked\r\n"
      "Content-Type: text/html; charset=utf-8\r\n"
      "\r\n";
  for (size_t split = 0; split < head.size(); ++split) {
    ASSERT_EQ(Parse(kResponse, std::string_view(head).substr(0, split)),
              ParseState::kNeedsMoreData)
        << "prefix of " << split << " bytes";
  }
  Message m;
  ASSERT_EQ(ParseHead(kResponse, head, &m), ParseState::kSuccess);
  EXPECT_EQ(m.status_code, 200);
  EXPECT_EQ(m.reason(), "OK");
  EXPECT_EQ(m.framing, BodyFraming::kChunked);
  EXPECT_EQ(m.head_bytes, head.size());
}

TEST(Http1Parse, BareLfLineEndings) {
  const std::string_view buf = "GET /lf HTTP/1.1\nHost: a\r\nUser-Agent: b\n\n";
  for (size_t split = 0; split < buf.size(); ++split) {
    ASSERT_EQ(Parse(kRequest, buf.substr(0, split)), ParseState::kNeedsMoreData) << split;
  }
  Message m;
  ASSERT_EQ(ParseHead(kRequest, buf, &m), ParseState::kSuccess);
  EXPECT_EQ(m.target(), "/lf");
  EXPECT_EQ(m.Header("Host"), "a");
  EXPECT_EQ(m.Header("User-Agent"), "b");
  EXPECT_EQ(m.head_bytes, buf.size());
}

// --- Header fields -----------------------------------------------------------------

TEST(Http1Parse, HeaderValueWhitespaceIsTrimmed) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest,
                      "GET / HTTP/1.1\r\nHost:   a.b  \t\r\ntracestate:\r\nUser-Agent: a  b\r\n"
                      "Connection: \t \r\ntraceparent: caf\xc3\xa9\r\n\r\n",
                      &m),
            ParseState::kSuccess);
  ASSERT_EQ(m.headers().size(), 5u);
  EXPECT_EQ(m.headers()[0].value, "a.b");
  EXPECT_EQ(m.headers()[1].value, "");
  EXPECT_EQ(m.headers()[2].value, "a  b");
  EXPECT_EQ(m.headers()[3].value, "");
  EXPECT_EQ(m.headers()[4].value, "caf\xc3\xa9");
}

TEST(Http1Parse, MalformedHeaderLinesAreInvalid) {
  // Whitespace between the name and the colon is a smuggling vector (RFC 9112 5.1).
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\nHost : a\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\n: a\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\nNoColon\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\nX-A: 1\x7f\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\nX-A: 1\r2\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\nX(A): 1\r\n\r\n"), ParseState::kInvalid);
  // obs-fold continuation lines and whitespace before the first header are rejected.
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\nX-A: 1\r\n 2\r\n\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\n\tX-A: 1\r\n\r\n"), ParseState::kInvalid);
}

TEST(Http1Parse, EveryByteAnywhereInALongFieldName) {
  // RFC 9110 5.6.2, spelled out here rather than taken from the parser's table.
  const std::string_view tchar_punctuation = "!#$%&'*+-.^_`|~";
  const auto is_tchar = [&](unsigned char c) {
    return std::isalnum(c) || tchar_punctuation.find(static_cast<char>(c)) != std::string_view::npos;
  };
  // Longer than a block, so names are scanned both a block and a byte at a time, and
  // with the byte under test at every offset of both.
  const std::string name(40, 'n');
  for (int byte = 0; byte < 256; ++byte) {
    for (size_t offset = 0; offset < name.size(); ++offset) {
      std::string odd = name;
      odd[offset] = static_cast<char>(byte);
      Message m;
      const ParseState state =
          ParseHead(kRequest, "GET / HTTP/1.1\r\n" + odd + ": v\r\n\r\n", &m);
      if (byte == '\n' && offset == 0) {  // a bare LF blank line: the head ends there
        EXPECT_EQ(state, ParseState::kSuccess);
        EXPECT_EQ(m.field_count, 0u);
        continue;
      }
      // A colon ends the name early, and the rest of the line is the value.
      const bool valid = is_tchar(static_cast<unsigned char>(byte)) || (byte == ':' && offset > 0);
      EXPECT_EQ(state, valid ? ParseState::kSuccess : ParseState::kInvalid)
          << "byte " << byte << " at " << offset;
      if (valid) {
        EXPECT_EQ(m.field_count, 1u) << "byte " << byte << " at " << offset;
      }
    }
  }
  // A name that runs to the end of the buffer needs more data, however long.
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\n" + name + name), ParseState::kNeedsMoreData);
}

TEST(Http1Parse, KeptFieldsMatchTheirNamesInAnyCaseAndNothingElse) {
  // Names of a kept name's length that differ in one byte, in its first, middle or last
  // word, or by a token character that case folding would map onto a letter or '-'.
  Message m;
  ASSERT_EQ(ParseHead(kRequest,
                      "GET / HTTP/1.1\r\nhosT: a\r\nhost_: b\r\nHosu: c\r\nCONTENT-LENGTH: 0\r\n"
                      "content_length: 9\r\ncontent-lengtH: 0\r\ncontent-lenGTX: 1\r\n"
                      "tRaNsFeR-eNcOdInG: chunked\r\ntransfer-encodinh: x\r\nTraceparent: t\r\n"
                      "traceparenu: u\r\ntracesTATE: s\r\nuser~agent: z\r\n\r\n",
                      &m),
            ParseState::kSuccess);
  std::vector<std::string> kept;
  for (const auto& [name, value] : m.headers()) kept.emplace_back(name);
  EXPECT_EQ(kept, (std::vector<std::string>{"hosT", "CONTENT-LENGTH", "content-lengtH",
                                            "tRaNsFeR-eNcOdInG", "Traceparent", "tracesTATE"}));
  EXPECT_EQ(m.framing, BodyFraming::kChunked);
  EXPECT_EQ(m.field_count, 13u);
}

TEST(Http1Parse, HeaderLookupIsCaseInsensitive) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest,
                      "GET / HTTP/1.1\r\nuser-AGENT: curl\r\nHOST: first\r\n"
                      "host: second\r\n\r\n",
                      &m),
            ParseState::kSuccess);
  ASSERT_EQ(m.headers().size(), 3u);
  EXPECT_EQ(m.headers()[0].name, "user-AGENT");  // original case is kept
  EXPECT_EQ(m.Header("User-Agent"), "curl");
  EXPECT_EQ(m.Header("USER-AGENT"), "curl");
  EXPECT_TRUE(m.HasHeader("user-agent"));
  EXPECT_EQ(m.Header("Host"), "first");
  EXPECT_EQ(m.Header("User-Agen"), "");
  EXPECT_FALSE(m.HasHeader("User-Agen"));
  EXPECT_FALSE(m.HasHeader("User-Agents"));
}

TEST(Http1Parse, HasHeaderDistinguishesEmptyValueFromAbsent) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest, "GET / HTTP/1.1\r\nUser-Agent:\r\n\r\n", &m), ParseState::kSuccess);
  EXPECT_TRUE(m.HasHeader("user-agent"));
  EXPECT_EQ(m.Header("user-agent"), "");
  EXPECT_FALSE(m.HasHeader("host"));
}

TEST(Http1Parse, ExpectContinueIsJustAHeader) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest,
                      "PUT /upload HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4096\r\n"
                      "\r\n",
                      &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.field_count, 2u);
  EXPECT_EQ(m.framing, BodyFraming::kContentLength);
  EXPECT_EQ(m.content_length, 4096u);
}

TEST(Http1Parse, EightKibCookieHeader) {
  const std::string cookie(8 * 1024, 'c');
  const std::string buf = "GET / HTTP/1.1\r\nCookie: session=" + cookie + "\r\n\r\n";
  Message m;
  ASSERT_EQ(ParseHead(kRequest, buf, &m), ParseState::kSuccess);
  EXPECT_EQ(m.field_count, 1u);
  EXPECT_TRUE(m.headers().empty());
  EXPECT_EQ(m.head_bytes, buf.size());
  EXPECT_EQ(Parse(kRequest, std::string_view(buf).substr(0, buf.size() - 1)),
            ParseState::kNeedsMoreData);
  std::string bad = buf;
  bad[bad.size() - 100] = '\x01';  // an unkept field's value is validated all the same
  EXPECT_EQ(Parse(kRequest, bad), ParseState::kInvalid);
}

TEST(Http1Parse, EightKibKeptHeader) {
  const std::string agent(8 * 1024, 'a');
  const std::string buf = "GET / HTTP/1.1\r\nUser-Agent: " + agent + "\r\n\r\n";
  Message m;
  ASSERT_EQ(ParseHead(kRequest, buf, &m), ParseState::kSuccess);
  EXPECT_EQ(m.Header("user-agent"), agent);
  EXPECT_EQ(m.head_bytes, buf.size());
}

TEST(Http1Parse, OnlyTheKeptFieldsAreCopied) {
  for (std::string_view kept : kKeptFieldNames) {
    std::string upper(kept);
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    Message m;
    ASSERT_EQ(ParseHead(kResponse, "HTTP/1.1 200 OK\r\n" + upper + ": 7\r\n\r\n", &m),
              ParseState::kSuccess)
        << kept;
    EXPECT_EQ(m.Header(kept), "7") << kept;
    ASSERT_EQ(m.headers().size(), 1u) << kept;
    EXPECT_EQ(m.headers()[0].name, upper);

    // A name of the same length and first byte that differs further on is not kept.
    std::string near(kept);
    near.back() = near.back() == 'x' ? 'y' : 'x';
    ASSERT_EQ(ParseHead(kResponse, "HTTP/1.1 200 OK\r\n" + near + ": 7\r\n\r\n", &m),
              ParseState::kSuccess)
        << near;
    EXPECT_TRUE(m.headers().empty()) << near;
    EXPECT_EQ(m.field_count, 1u) << near;
    EXPECT_EQ(m.framing, BodyFraming::kUntilClose) << near;
  }
  // Names that are a kept name's prefix or extension are other fields.
  Message m;
  ASSERT_EQ(ParseHead(kRequest, "GET / HTTP/1.1\r\nHos: a\r\nHosts: b\r\nX-Host: c\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_TRUE(m.headers().empty());
  EXPECT_EQ(m.field_count, 3u);
}

// Values and targets are scanned in 16-byte blocks: the tests below put the byte that
// matters at every offset of a field longer than two blocks, and cut heads at every byte.

TEST(Http1Parse, ControlBytesAnywhereInALongValueAreInvalid) {
  const std::string value(40, 'v');
  for (std::string_view name : {"X-Long", "User-Agent"}) {  // not kept, kept
    for (char control : {'\x00', '\x01', '\x0b', '\x1f', '\x7f', '\r'}) {
      for (size_t offset = 0; offset < value.size(); ++offset) {
        std::string bad = value;
        bad[offset] = control;
        const std::string field = std::string(name) + ": " + bad + "\r\n";
        EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\nHost: a\r\n" + field + "\r\n"),
                  ParseState::kInvalid)
            << name << ": byte " << static_cast<int>(control) << " at " << offset;
        EXPECT_EQ(Parse(kResponse, "HTTP/1.1 200 OK\r\n" + field + "\r\n"), ParseState::kInvalid)
            << name << ": byte " << static_cast<int>(control) << " at " << offset;
      }
    }
  }
}

TEST(Http1Parse, TabsAndObsTextAnywhereInALongValueAreKept) {
  const std::string value(40, 'v');
  for (char allowed : {'\t', ' ', '~', '\x80', '\xa0', '\xff'}) {
    for (size_t offset = 1; offset + 1 < value.size(); ++offset) {
      std::string good = value;
      good[offset] = allowed;
      Message m;
      ASSERT_EQ(ParseHead(kRequest, "GET / HTTP/1.1\r\nUser-Agent: " + good + "\r\n\r\n", &m),
                ParseState::kSuccess)
          << "byte " << static_cast<int>(allowed) << " at " << offset;
      EXPECT_EQ(m.Header("user-agent"), good);
    }
  }
}

TEST(Http1Parse, ControlBytesAnywhereInALongTargetAreInvalid) {
  const std::string target = "/" + std::string(40, 't');
  for (char control : {'\x00', '\t', '\x1f', '\x7f', '\r', '\n'}) {
    for (size_t offset = 1; offset < target.size(); ++offset) {
      std::string bad = target;
      bad[offset] = control;
      EXPECT_EQ(Parse(kRequest, "GET " + bad + " HTTP/1.1\r\n\r\n"), ParseState::kInvalid)
          << "byte " << static_cast<int>(control) << " at " << offset;
    }
  }
  std::string opaque = target;
  opaque[20] = '\xc3';
  Message m;
  ASSERT_EQ(ParseHead(kRequest, "GET " + opaque + " HTTP/1.1\r\n\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.target(), opaque);
}

TEST(Http1Parse, ControlBytesInALongReasonAreInvalid) {
  const std::string reason(40, 'r');
  for (size_t offset = 0; offset < reason.size(); ++offset) {
    std::string bad = reason;
    bad[offset] = '\x01';
    EXPECT_EQ(Parse(kResponse, "HTTP/1.1 200 " + bad + "\r\n\r\n"), ParseState::kInvalid) << offset;
  }
  Message m;
  ASSERT_EQ(ParseHead(kResponse, "HTTP/1.1 200 " + reason + "\r\n\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.reason(), reason);
}

TEST(Http1Parse, EveryByteSplitOfAHeadWithLongFields) {
  const std::string head =
      "GET /a/rather/long/target/path/for/the/block/scanner?with=query HTTP/1.1\r\n"
      "Host: shop.example.com\r\n"
      "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n"
      "tracestate: a\tvalue with a tab in the middle of its second block\r\n"
      "X-Opaque: caf\xc3\xa9 caf\xc3\xa9 caf\xc3\xa9 caf\xc3\xa9 caf\xc3\xa9\r\n"
      "Cookie: session=" + std::string(100, 'c') + "\r\n"
      "Content-Length: 2\r\n"
      "\r\n";
  for (size_t split = 0; split < head.size(); ++split) {
    ASSERT_EQ(Parse(kRequest, std::string_view(head).substr(0, split)), ParseState::kNeedsMoreData)
        << "prefix of " << split << " bytes";
  }
  Message m;
  ASSERT_EQ(ParseHead(kRequest, head + "{}", &m), ParseState::kSuccess);
  EXPECT_EQ(m.head_bytes, head.size());
  EXPECT_EQ(m.field_count, 6u);
  ASSERT_EQ(m.headers().size(), 4u);
  EXPECT_EQ(m.Header("tracestate"), "a\tvalue with a tab in the middle of its second block");
  EXPECT_EQ(m.Header("user-agent"),
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)");
  EXPECT_EQ(m.framing, BodyFraming::kContentLength);
  EXPECT_EQ(m.content_length, 2u);
}

TEST(Http1Parse, ObsFoldAfterALongValueIsInvalid) {
  const std::string value(40, 'v');
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\nX-A: " + value + "\r\n " + value + "\r\n\r\n"),
            ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\nX-A: " + value + "\r\n\t" + value + "\r\n\r\n"),
            ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "GET / HTTP/1.1\r\nX-A: " + value + "\n " + value + "\n\n"),
            ParseState::kInvalid);
}

TEST(Http1Parse, FramingFieldsMatchWholeNamesInAnyCase) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest, "POST / HTTP/1.1\r\nCONTENT-LENGTH: 5\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kContentLength);
  EXPECT_EQ(m.content_length, 5u);
  ASSERT_EQ(ParseHead(kRequest, "POST / HTTP/1.1\r\ntRaNsFeR-eNcOdInG: ChUnKeD\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kChunked);

  // Same length and first byte as a framing field, but another field: no framing, and a
  // value that would be invalid for the framing field is just a value.
  for (std::string_view name : {"Content-Lengtx", "Content-Langth", "content-lengt_", "Cookie-LengthX"}) {
    ASSERT_EQ(ParseHead(kRequest, "POST / HTTP/1.1\r\n" + std::string(name) + ": x\r\n\r\n", &m),
              ParseState::kSuccess)
        << name;
    EXPECT_EQ(m.framing, BodyFraming::kNone) << name;
    EXPECT_EQ(m.field_count, 1u) << name;
  }
  for (std::string_view name : {"Transfer-Encodinx", "Transfer_Encoding", "transfer-encodings",
                                "Xransfer-Encoding", "Transfer-Encodin"}) {
    ASSERT_EQ(ParseHead(kRequest, "POST / HTTP/1.1\r\n" + std::string(name) + ": gzip\r\n\r\n", &m),
              ParseState::kSuccess)
        << name;
    EXPECT_EQ(m.framing, BodyFraming::kNone) << name;
  }
  // The same in a response, where no length means "until close".
  ASSERT_EQ(ParseHead(kResponse, "HTTP/1.1 200 OK\r\nContent-Lengtx: 5\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kUntilClose);
}

TEST(Http1Parse, FramingErrorsWaitForTheWholeHead) {
  // Whether the framing fields are acceptable is decided once the head is complete.
  EXPECT_EQ(Parse(kRequest, "POST / HTTP/1.1\r\nContent-Length: x\r\nHost: a\r\n"),
            ParseState::kNeedsMoreData);
  EXPECT_EQ(Parse(kRequest, "POST / HTTP/1.1\r\nContent-Length: x\r\nHost: a\r\n\r\n"),
            ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n"),
            ParseState::kNeedsMoreData);
  // A later Transfer-Encoding still overrides an earlier bad Content-Length.
  Message m;
  ASSERT_EQ(ParseHead(kRequest,
                      "POST / HTTP/1.1\r\nContent-Length: 1, 2\r\nContent-Length: 3\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n",
                      &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kChunked);
  EXPECT_EQ(m.content_length, 0u);
}

TEST(Http1Parse, ReusedMessageIsOverwritten) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest,
                      "POST /first HTTP/1.1\r\nHost: " + std::string(40, 'h') +
                          "\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n",
                      &m),
            ParseState::kSuccess);
  ASSERT_EQ(ParseHead(kRequest, "GET /2 HTTP/1.0\r\nhost: b\r\n\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.method(), "GET");
  EXPECT_EQ(m.target(), "/2");
  EXPECT_EQ(m.minor_version, 0);
  ASSERT_EQ(m.headers().size(), 1u);
  EXPECT_EQ(m.headers()[0].name, "host");
  EXPECT_EQ(m.headers()[0].value, "b");
  EXPECT_EQ(m.framing, BodyFraming::kNone);
  EXPECT_EQ(m.content_length, 0u);
  EXPECT_EQ(m.head_bytes, 28u);
}

TEST(Http1Parse, ManyKeptHeadersKeepTheirOrder) {
  std::string head = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 70; ++i) {
    head += "tracestate: value " + std::to_string(i) + "\r\nX-H" + std::to_string(i) + ": v\r\n";
  }
  head += "\r\n";
  Message m;
  ASSERT_EQ(ParseHead(kRequest, head, &m), ParseState::kSuccess);
  EXPECT_EQ(m.field_count, 140u);
  ASSERT_EQ(m.headers().size(), 70u);
  for (int i = 0; i < 70; ++i) {
    EXPECT_EQ(m.headers()[i].name, "tracestate");
    EXPECT_EQ(m.headers()[i].value, "value " + std::to_string(i));
  }
}

// The start line's strings and the kept fields share one string in the message: each
// copy or move must view its own, and a reused message must show only the new head.
TEST(Http1Parse, MessagesCopiedMovedAndReusedKeepTheirText) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest,
                      "POST /orders/1234567890/items HTTP/1.1\r\nHost: shop.example.com\r\n"
                      "X-Other: 1\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n\r\n",
                      &m),
            ParseState::kSuccess);
  Message copy = m;
  Message moved = std::move(m);
  for (const Message* message : {&copy, &moved}) {
    EXPECT_EQ(message->method(), "POST");
    EXPECT_EQ(message->target(), "/orders/1234567890/items");
    EXPECT_EQ(message->reason(), "");
    ASSERT_EQ(message->headers().size(), 2u);
    EXPECT_EQ(message->headers()[0], (HeaderField{"Host", "shop.example.com"}));
    EXPECT_EQ(message->headers()[1], (HeaderField{"User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"}));
  }
  EXPECT_NE(copy.target().data(), moved.target().data());

  // Reused for a shorter head with other fields, then for a response.
  ASSERT_EQ(ParseHead(kRequest, "GET /a HTTP/1.1\r\ntraceparent: t\r\n\r\n", &copy), ParseState::kSuccess);
  EXPECT_EQ(copy.method(), "GET");
  EXPECT_EQ(copy.target(), "/a");
  ASSERT_EQ(copy.headers().size(), 1u);
  EXPECT_EQ(copy.headers().front(), (HeaderField{"traceparent", "t"}));
  EXPECT_EQ(copy.Header("host"), "");
  ASSERT_EQ(ParseHead(kResponse, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", &copy),
            ParseState::kSuccess);
  EXPECT_EQ(copy.method(), "");
  EXPECT_EQ(copy.target(), "");
  EXPECT_EQ(copy.reason(), "Not Found");
  EXPECT_EQ(copy.Header("content-length"), "0");
  EXPECT_EQ(copy.headers().size(), 1u);
}

// A destroyed message's text is reused by the next one parsed: the new message shows
// only its own strings and fields, whatever the reused storage held.
TEST(Http1Parse, MessagesParsedAfterOthersWereDestroyed) {
  for (int round = 0; round < 100; ++round) {
    std::vector<Message> messages(3);
    const std::string target = "/round/" + std::to_string(round) + std::string(static_cast<size_t>(round), 'x');
    ASSERT_EQ(ParseHead(kRequest,
                        "GET " + target + " HTTP/1.1\r\nUser-Agent: agent " + std::to_string(round) + "\r\n\r\n",
                        &messages[round % 3]),
              ParseState::kSuccess);
    const Message& m = messages[round % 3];
    EXPECT_EQ(m.target(), target);
    ASSERT_EQ(m.headers().size(), 1u);
    EXPECT_EQ(m.headers()[0], (HeaderField{"User-Agent", "agent " + std::to_string(round)}));
    EXPECT_EQ(m.Header("host"), "");
  }
}

// Names are compared a word at a time: every pair of bytes, at each kind of position
// (8-byte words, overlapping 4-byte words, single bytes), must compare as ASCII
// case-insensitive equality does byte by byte.
TEST(Http1Parse, HeaderLookupIgnoresAsciiCaseOnly) {
  const auto lower = [](int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; };
  for (const std::string& base : {std::string("ab"), std::string("abcde"), std::string("abcdefghijk")}) {
    for (size_t at : {size_t{0}, base.size() / 2, base.size() - 1}) {
      for (int stored = 0; stored < 256; ++stored) {
        std::string name = base;
        name[at] = static_cast<char>(stored);
        Message m;
        m.SetText("GET", "/", "", {{name, "v"}});
        for (int asked = 0; asked < 256; ++asked) {
          std::string query = base;
          query[at] = static_cast<char>(asked);
          const bool expected = lower(stored) == lower(asked);
          ASSERT_EQ(m.HasHeader(query), expected) << base << " at " << at << ": " << stored << " " << asked;
        }
      }
    }
  }
}

TEST(Http1Parse, MessageTextSetByHand) {
  Message m;
  EXPECT_EQ(m.method(), "");
  EXPECT_TRUE(m.headers().empty());
  m.SetText("GET", "/one", "", {{"Host", "a"}, {"traceparent", "00-x"}});
  EXPECT_EQ(m.method(), "GET");
  EXPECT_EQ(m.target(), "/one");
  EXPECT_EQ(m.Header("HOST"), "a");
  EXPECT_EQ(m.Header("traceparent"), "00-x");
  EXPECT_TRUE(m.HasHeader("host"));
  m.SetText("PUT", "/two");
  EXPECT_EQ(m.target(), "/two");
  EXPECT_FALSE(m.HasHeader("host"));
}

// --- Body framing ------------------------------------------------------------------

TEST(Http1Parse, RequestFraming) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest, "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kContentLength);
  EXPECT_EQ(m.content_length, 0u);

  ASSERT_EQ(ParseHead(kRequest, "POST / HTTP/1.1\r\nHost: a\r\n\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kNone);

  ASSERT_EQ(ParseHead(kRequest, "POST / HTTP/1.1\r\ncontent-length:  0012 \r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kContentLength);
  EXPECT_EQ(m.content_length, 12u);
}

TEST(Http1Parse, ContentLengthListsAndDuplicates) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest, "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.content_length, 5u);
  ASSERT_EQ(ParseHead(kRequest,
                      "POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.content_length, 7u);
  ASSERT_EQ(ParseHead(kResponse, "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
                      &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.content_length, UINT64_MAX);
}

TEST(Http1Parse, InvalidContentLengthIsInvalid) {
  for (std::string_view value :
       {"5, 6", "5,", "-1", "+5", "0x10", "abc", "", "1 2", "18446744073709551616",
        "99999999999999999999999"}) {
    const std::string request =
        "POST / HTTP/1.1\r\nContent-Length: " + std::string(value) + "\r\n\r\n";
    EXPECT_EQ(Parse(kRequest, request), ParseState::kInvalid) << value;
    const std::string response =
        "HTTP/1.1 200 OK\r\nContent-Length: " + std::string(value) + "\r\n\r\n";
    EXPECT_EQ(Parse(kResponse, response), ParseState::kInvalid) << value;
  }
  EXPECT_EQ(Parse(kRequest, "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            ParseState::kInvalid);
}

TEST(Http1Parse, ChunkedWinsOverContentLength) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest,
                      "POST / HTTP/1.1\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n"
                      "\r\n",
                      &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kChunked);
  EXPECT_EQ(m.content_length, 0u);

  // Even a malformed Content-Length is overridden.
  ASSERT_EQ(ParseHead(kRequest,
                      "POST / HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\nContent-Length: x\r\n\r\n",
                      &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kChunked);
}

TEST(Http1Parse, TransferEncodingFinalCodingDecides) {
  Message m;
  ASSERT_EQ(ParseHead(kRequest, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kChunked);
  ASSERT_EQ(ParseHead(kRequest,
                      "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
                      "\r\n",
                      &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kChunked);

  // A request body not ending in chunked cannot be delimited.
  EXPECT_EQ(Parse(kRequest, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            ParseState::kInvalid);
  // A response one runs until the connection closes.
  ASSERT_EQ(ParseHead(kResponse,
                      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\nContent-Length: 3\r\n"
                      "\r\n",
                      &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kUntilClose);
}

TEST(Http1Parse, ResponseWithoutLengthRunsUntilClose) {
  Message m;
  ASSERT_EQ(ParseHead(kResponse, "HTTP/1.0 200 OK\r\nServer: old\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kUntilClose);
  EXPECT_EQ(ResponseFraming(m, "GET"), BodyFraming::kUntilClose);
}

TEST(Http1Parse, NoBodyStatusesAndHeadRequests) {
  Message m;
  for (std::string_view head :
       {"HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 304 Not Modified\r\nContent-Length: 120\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\n\r\n",
        "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"}) {
    ASSERT_EQ(ParseHead(kResponse, head, &m), ParseState::kSuccess) << head;
    EXPECT_EQ(m.framing, BodyFraming::kNone) << head;
    EXPECT_EQ(m.content_length, 0u) << head;
    EXPECT_EQ(ResponseFraming(m, "GET"), BodyFraming::kNone) << head;
  }

  ASSERT_EQ(ParseHead(kResponse, "HTTP/1.1 200 OK\r\nContent-Length: 512\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(m.framing, BodyFraming::kContentLength);
  EXPECT_EQ(ResponseFraming(m, "GET"), BodyFraming::kContentLength);
  EXPECT_EQ(ResponseFraming(m, "HEAD"), BodyFraming::kNone);

  ASSERT_EQ(ParseHead(kResponse, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(ResponseFraming(m, "POST"), BodyFraming::kChunked);
  EXPECT_EQ(ResponseFraming(m, "HEAD"), BodyFraming::kNone);

  ASSERT_EQ(ParseHead(kResponse, "HTTP/1.1 200 OK\r\n\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(ResponseFraming(m, "HEAD"), BodyFraming::kNone);
}

TEST(Http1Parse, ConnectSuccessBecomesATunnel) {
  Message m;
  ASSERT_EQ(ParseHead(kResponse, "HTTP/1.1 200 Connection Established\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(ResponseFraming(m, "CONNECT"), BodyFraming::kUntilClose);
  ASSERT_EQ(ParseHead(kResponse, "HTTP/1.1 407 Auth\r\nContent-Length: 3\r\n\r\n", &m),
            ParseState::kSuccess);
  EXPECT_EQ(ResponseFraming(m, "CONNECT"), BodyFraming::kContentLength);
}

// --- Streams of messages -----------------------------------------------------------

TEST(Http1Parse, PipelinedRequests) {
  const std::string_view stream =
      "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
      "DELETE /c HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
  size_t offset = 0;
  std::vector<std::string> targets;
  while (offset < stream.size()) {
    Message m;
    ASSERT_EQ(ParseHead(kRequest, stream.substr(offset), &m), ParseState::kSuccess) << offset;
    targets.emplace_back(m.target());
    offset += m.head_bytes + m.content_length;
  }
  EXPECT_EQ(offset, stream.size());
  EXPECT_EQ(targets, (std::vector<std::string>{"/a", "/b", "/c"}));
}

TEST(Http1Parse, ContinueResponseThenFinalResponse) {
  const std::string_view stream =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
  Message interim;
  ASSERT_EQ(ParseHead(kResponse, stream, &interim), ParseState::kSuccess);
  EXPECT_EQ(interim.status_code, 100);
  EXPECT_EQ(interim.head_bytes, 25u);
  EXPECT_EQ(ResponseFraming(interim, "PUT"), BodyFraming::kNone);

  Message final_response;
  ASSERT_EQ(ParseHead(kResponse, stream.substr(interim.head_bytes), &final_response),
            ParseState::kSuccess);
  EXPECT_EQ(final_response.status_code, 201);
  EXPECT_EQ(final_response.reason(), "Created");
  EXPECT_EQ(ResponseFraming(final_response, "PUT"), BodyFraming::kContentLength);
  EXPECT_EQ(interim.head_bytes + final_response.head_bytes + final_response.content_length,
            stream.size());
}

TEST(Http1Parse, LeadingBlankLinesBeforeRequestAreIgnored) {
  Message m;
  EXPECT_EQ(ParseHead(kRequest, "\r\nGET / HTTP/1.1\r\n\r\n", &m), ParseState::kIgnored);
  EXPECT_EQ(m.head_bytes, 2u);
  EXPECT_EQ(ParseHead(kRequest, "\nGET / HTTP/1.1\r\n\r\n", &m), ParseState::kIgnored);
  EXPECT_EQ(m.head_bytes, 1u);
  EXPECT_EQ(ParseHead(kRequest, "\r", &m), ParseState::kNeedsMoreData);
  EXPECT_EQ(ParseHead(kRequest, "\rGET", &m), ParseState::kInvalid);
  // Only requests may be preceded by blank lines.
  EXPECT_EQ(ParseHead(kResponse, "\r\nHTTP/1.1 200 OK\r\n\r\n", &m), ParseState::kInvalid);

  // The driver skips head_bytes per kIgnored and then parses the request.
  const std::string_view stream = "\r\n\n\r\nGET /after HTTP/1.1\r\n\r\n";
  size_t offset = 0;
  int ignored_count = 0;
  ParseState state;
  while ((state = ParseHead(kRequest, stream.substr(offset), &m)) == ParseState::kIgnored) {
    ++ignored_count;
    offset += m.head_bytes;
  }
  ASSERT_EQ(state, ParseState::kSuccess);
  EXPECT_EQ(ignored_count, 3);
  EXPECT_EQ(offset, 5u);
  EXPECT_EQ(m.target(), "/after");
}

TEST(Http1Parse, ChunkedRequestThenNextRequest) {
  const std::string_view stream =
      "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n0\r\n\r\n"
      "GET /next HTTP/1.1\r\n\r\n";
  Message m;
  ASSERT_EQ(ParseHead(kRequest, stream, &m), ParseState::kSuccess);
  ASSERT_EQ(m.framing, BodyFraming::kChunked);
  ChunkedBodyDecoder decoder;
  size_t consumed = 0;
  ASSERT_EQ(decoder.Feed(stream.substr(m.head_bytes), &consumed), ParseState::kSuccess);
  EXPECT_EQ(consumed, 13u);
  EXPECT_EQ(decoder.body_bytes(), 3u);
  Message next;
  ASSERT_EQ(ParseHead(kRequest, stream.substr(m.head_bytes + consumed), &next),
            ParseState::kSuccess);
  EXPECT_EQ(next.target(), "/next");
}

// --- Garbage and limits ------------------------------------------------------------

TEST(Http1Parse, BinaryGarbageIsInvalid) {
  const std::string_view tls_client_hello("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
  EXPECT_EQ(Parse(kRequest, tls_client_hello), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, tls_client_hello), ParseState::kInvalid);
  const std::string_view nuls("\0\0\0\0", 4);
  EXPECT_EQ(Parse(kRequest, nuls), ParseState::kInvalid);
  EXPECT_EQ(Parse(kResponse, nuls), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, "*2\r\n$3\r\nGET\r\n"), ParseState::kInvalid);  // Redis
  EXPECT_EQ(Parse(kRequest, "GET \x01\x02"), ParseState::kInvalid);
}

TEST(Http1Parse, HeadSizeLimit) {
  const std::string head = "GET / HTTP/1.1\r\nX-Pad: " + std::string(100, 'p') + "\r\n\r\n";
  ParseLimits limits;
  limits.max_head_bytes = head.size();
  Message m;
  ASSERT_EQ(ParseHead(kRequest, head, &m, limits), ParseState::kSuccess);
  EXPECT_EQ(m.head_bytes, head.size());
  // Extra bytes after a head that fits do not matter.
  EXPECT_EQ(Parse(kRequest, head + "body", limits), ParseState::kSuccess);

  limits.max_head_bytes = head.size() - 1;
  EXPECT_EQ(Parse(kRequest, head, limits), ParseState::kInvalid);
  // An incomplete head is kInvalid once the buffer outgrows the limit, not before.
  const std::string_view partial = std::string_view(head).substr(0, head.size() - 2);
  EXPECT_EQ(Parse(kRequest, partial.substr(0, limits.max_head_bytes), limits),
            ParseState::kNeedsMoreData);
  limits.max_head_bytes = partial.size() - 1;
  EXPECT_EQ(Parse(kRequest, partial, limits), ParseState::kInvalid);
}

TEST(Http1Parse, DefaultHeadSizeLimitIs64KiB) {
  const std::string huge = "GET / HTTP/1.1\r\nX-Pad: " + std::string(64 * 1024, 'p');
  EXPECT_EQ(Parse(kRequest, huge), ParseState::kInvalid);
  EXPECT_EQ(Parse(kRequest, std::string_view(huge).substr(0, 60 * 1024)),
            ParseState::kNeedsMoreData);
}

TEST(Http1Parse, HeaderCountLimit) {
  std::string head = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 4; ++i) head += "X-H" + std::to_string(i) + ": v\r\n";
  head += "\r\n";
  ParseLimits limits;
  limits.max_headers = 4;
  Message m;
  ASSERT_EQ(ParseHead(kRequest, head, &m, limits), ParseState::kSuccess);
  EXPECT_EQ(m.field_count, 4u);
  limits.max_headers = 3;
  EXPECT_EQ(Parse(kRequest, head, limits), ParseState::kInvalid);

  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 257; ++i) many += "X: v\r\n";
  many += "\r\n";
  EXPECT_EQ(Parse(kRequest, many), ParseState::kInvalid);  // default max is 256
}

// --- FindMessageStart --------------------------------------------------------------

TEST(Http1Parse, FindRequestStartAfterJunk) {
  constexpr size_t npos = std::string_view::npos;
  EXPECT_EQ(FindMessageStart(kRequest, "GET / HTTP/1.1\r\n"), 0u);
  EXPECT_EQ(FindMessageStart(kRequest, "xx\x01GET /a HTTP/1.1\r\n"), 3u);
  // Method names inside words or not followed by a plausible target are skipped.
  EXPECT_EQ(FindMessageStart(kRequest, "FORGET it; GET x; POST /p"), 18u);
  EXPECT_EQ(FindMessageStart(kRequest, "body... OPTIONS * HTTP/1.1"), 8u);
  EXPECT_EQ(FindMessageStart(kRequest, "..GET http://h/ HTTP/1.1"), 2u);
  EXPECT_EQ(FindMessageStart(kRequest, "..CONNECT h:443 HTTP/1.1"), 2u);
  EXPECT_EQ(FindMessageStart(kRequest, "..GET db:443 HTTP/1.1"), npos);
  EXPECT_EQ(FindMessageStart(kRequest, "get / http/1.1"), npos);
  EXPECT_EQ(FindMessageStart(kRequest, "no request here"), npos);
  EXPECT_EQ(FindMessageStart(kRequest, ""), npos);
  // A candidate cut off by the end of the buffer may still complete.
  EXPECT_EQ(FindMessageStart(kRequest, "junkPO"), 4u);
  EXPECT_EQ(FindMessageStart(kRequest, "junkGET "), 4u);
  // `from` skips earlier candidates; past the end there is nothing.
  EXPECT_EQ(FindMessageStart(kRequest, "GET /a GET /b", 1), 7u);
  EXPECT_EQ(FindMessageStart(kRequest, "GET /a", 7), npos);
}

TEST(Http1Parse, FindResponseStartAfterJunk) {
  constexpr size_t npos = std::string_view::npos;
  EXPECT_EQ(FindMessageStart(kResponse, "garbageHTTP/1.1 200 OK\r\n"), 7u);
  EXPECT_EQ(FindMessageStart(kResponse, "HTTP/1.1 x HTTP/1.0 404"), 11u);
  EXPECT_EQ(FindMessageStart(kResponse, "HTTP/2 200 HTTP/1.1 0"), npos);
  EXPECT_EQ(FindMessageStart(kResponse, "GET / HTTP/1.1\r\n"), npos);
  EXPECT_EQ(FindMessageStart(kResponse, "tail HTTP/1."), 5u);
  EXPECT_EQ(FindMessageStart(kResponse, "HTTP/1.1 200 OK", 1), npos);
  // Versions other than 1.0 and 1.1, however close in bits.
  EXPECT_EQ(FindMessageStart(kResponse, "HTTP/1.3 200 HTTP/1.0 200 "), 13u);
  EXPECT_EQ(FindMessageStart(kResponse, "HTTP/0.1 200 HTTP/1.1 201 "), 13u);
}

TEST(Http1Parse, ResyncThenParse) {
  const std::string_view stream = "\x7f\x45LF junk bytes HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
  Message m;
  ASSERT_EQ(ParseHead(kResponse, stream, &m), ParseState::kInvalid);
  const size_t start = FindMessageStart(kResponse, stream);
  ASSERT_EQ(start, 16u);
  ASSERT_EQ(ParseHead(kResponse, stream.substr(start), &m), ParseState::kSuccess);
  EXPECT_EQ(m.status_code, 200);
  EXPECT_EQ(start + m.head_bytes + m.content_length, stream.size());
}

// --- WantsClose --------------------------------------------------------------------

bool WantsCloseFor(MessageType type, std::string_view head) {
  Message m;
  EXPECT_EQ(ParseHead(type, head, &m), ParseState::kSuccess) << head;
  return WantsClose(m);
}

TEST(Http1Parse, WantsClose) {
  EXPECT_FALSE(WantsCloseFor(kRequest, "GET / HTTP/1.1\r\n\r\n"));
  EXPECT_TRUE(WantsCloseFor(kRequest, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
  EXPECT_TRUE(WantsCloseFor(kRequest, "GET / HTTP/1.1\r\nconnection: Upgrade, CLOSE\r\n\r\n"));
  EXPECT_TRUE(WantsCloseFor(kResponse,
                            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\n"
                            "\r\n"));
  EXPECT_FALSE(WantsCloseFor(kRequest, "GET / HTTP/1.1\r\nConnection: closed\r\n\r\n"));
  EXPECT_FALSE(WantsCloseFor(kRequest, "GET / HTTP/1.1\r\nX-Connection: close\r\n\r\n"));
  EXPECT_TRUE(WantsCloseFor(kRequest, "GET / HTTP/1.0\r\n\r\n"));
  EXPECT_TRUE(WantsCloseFor(kResponse, "HTTP/1.0 200 OK\r\n\r\n"));
  EXPECT_FALSE(WantsCloseFor(kRequest, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
  EXPECT_TRUE(WantsCloseFor(kRequest, "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
}

// --- ChunkedBodyDecoder ------------------------------------------------------------

TEST(Http1Parse, ChunkedInOneGo) {
  const std::string_view body = "4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n";
  ChunkedBodyDecoder decoder;
  size_t consumed = 0;
  ASSERT_EQ(decoder.Feed(body, &consumed), ParseState::kSuccess);
  EXPECT_EQ(consumed, body.size());
  EXPECT_EQ(decoder.body_bytes(), 23u);
  // Once done, further input belongs to the next message.
  EXPECT_EQ(decoder.Feed("GET / HTTP/1.1", &consumed), ParseState::kSuccess);
  EXPECT_EQ(consumed, 0u);
}

TEST(Http1Parse, ChunkedStopsAtEndOfBody) {
  const std::string_view stream = "a\r\n0123456789\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n";
  ChunkedBodyDecoder decoder;
  size_t consumed = 0;
  ASSERT_EQ(decoder.Feed(stream, &consumed), ParseState::kSuccess);
  EXPECT_EQ(consumed, 20u);
  EXPECT_EQ(decoder.body_bytes(), 10u);
}

TEST(Http1Parse, ChunkedOneByteAtATime) {
  const std::string_view body =
      "1a;name=\"v a l\"\r\nabcdefghijklmnopqrstuvwxyz\r\n"
      "3\r\n\r\n\r\n"
      "0\r\nX-Checksum: 99\r\nX-Other: b\r\n\r\n";
  ChunkedBodyDecoder decoder;
  for (size_t i = 0; i + 1 < body.size(); ++i) {
    size_t consumed = 99;
    ASSERT_EQ(decoder.Feed(body.substr(i, 1), &consumed), ParseState::kNeedsMoreData) << i;
    ASSERT_EQ(consumed, 1u);
  }
  size_t consumed = 0;
  ASSERT_EQ(decoder.Feed(body.substr(body.size() - 1), &consumed), ParseState::kSuccess);
  EXPECT_EQ(consumed, 1u);
  EXPECT_EQ(decoder.body_bytes(), 29u);
}

TEST(Http1Parse, ChunkedEveryPieceSizeAgrees) {
  const std::string_view body =
      "5;ext\r\nhello\r\n7 ; a=b\r\n, world\r\n10\r\n0123456789abcdef\r\n"
      "0\r\nTrailer: x\r\n\r\nnext";
  const size_t end = body.size() - 4;
  for (size_t piece = 1; piece <= body.size(); ++piece) {
    const ChunkedResult result = DecodeChunked(body, piece);
    EXPECT_EQ(result.state, ParseState::kSuccess) << piece;
    EXPECT_EQ(result.consumed_bytes, end) << piece;
    EXPECT_EQ(result.body_bytes, 28u) << piece;
  }
}

TEST(Http1Parse, ChunkedWithBareLf) {
  const ChunkedResult result = DecodeChunked("3\nabc\n0\nT: 1\n\n", 1);
  EXPECT_EQ(result.state, ParseState::kSuccess);
  EXPECT_EQ(result.consumed_bytes, 14u);
  EXPECT_EQ(result.body_bytes, 3u);
}

TEST(Http1Parse, ChunkedEmptyBody) {
  const ChunkedResult result = DecodeChunked("0\r\n\r\n", 100);
  EXPECT_EQ(result.state, ParseState::kSuccess);
  EXPECT_EQ(result.consumed_bytes, 5u);
  EXPECT_EQ(result.body_bytes, 0u);
}

TEST(Http1Parse, ChunkedIncompleteNeedsMoreData) {
  ChunkedBodyDecoder decoder;
  size_t consumed = 0;
  EXPECT_EQ(decoder.Feed("", &consumed), ParseState::kNeedsMoreData);
  EXPECT_EQ(consumed, 0u);
  EXPECT_EQ(decoder.Feed("ffff\r\nabc", &consumed), ParseState::kNeedsMoreData);
  EXPECT_EQ(consumed, 9u);
  EXPECT_EQ(decoder.body_bytes(), 3u);
}

TEST(Http1Parse, ChunkSizeDigitLimit) {
  ChunkedBodyDecoder sixteen;
  size_t consumed = 0;
  EXPECT_EQ(sixteen.Feed("ffffffffffffffff\r\nxy", &consumed), ParseState::kNeedsMoreData);
  EXPECT_EQ(sixteen.body_bytes(), 2u);

  ChunkedBodyDecoder seventeen;
  EXPECT_EQ(seventeen.Feed("00000000000000001\r\nx", &consumed), ParseState::kInvalid);
  EXPECT_EQ(consumed, 16u);  // the offending 17th digit
}

TEST(Http1Parse, MalformedChunkedIsInvalid) {
  for (std::string_view body :
       {"\r\n", "g\r\n", ";ext\r\n", "-1\r\n", "3\rx", "3\r\nabcX\r\n", "3\r\nabc\rX",
        "3;\x01\r\n", "0\r\n Folded: x\r\n\r\n", "0\r\nT: a\rb\r\n\r\n", "0\r\n\rX"}) {
    EXPECT_EQ(DecodeChunked(body, body.size()).state, ParseState::kInvalid) << body;
    EXPECT_EQ(DecodeChunked(body, 1).state, ParseState::kInvalid) << body;
  }
}

TEST(Http1Parse, ChunkedTrailerLimit) {
  const std::string trailer_field = "X-Big: " + std::string(1000, 't') + "\r\n";
  std::string fits = "0\r\n";
  while (fits.size() + trailer_field.size() + 2 <= 3 + 64 * 1024) fits += trailer_field;
  fits += "\r\n";
  EXPECT_EQ(DecodeChunked(fits, 4096).state, ParseState::kSuccess);

  std::string too_big = "0\r\n";
  while (too_big.size() <= 3 + 64 * 1024) too_big += trailer_field;
  too_big += "\r\n";
  EXPECT_EQ(DecodeChunked(too_big, 4096).state, ParseState::kInvalid);
}

}  // namespace
}  // namespace flowtracer::http1
