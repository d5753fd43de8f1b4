#include "agent/protocols/nats/parse.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace flowtracer::nats {
namespace {

std::string ReadFixture(const std::string& name) {
  std::ifstream file(std::string(FLOWTRACER_FIXTURES_DIR) + "/nats/" + name, std::ios::binary);
  EXPECT_TRUE(file.good()) << name;
  return std::string(std::istreambuf_iterator<char>(file), {});
}

ParseState Control(std::string_view buf, Message* out = nullptr) {
  Message message;
  return ParseControlLine(buf, out ? out : &message);
}

// Every frame of `bytes` in order, parsed whole; fails the test on anything else.
std::vector<Message> Frames(std::string_view bytes, std::vector<std::string>* bodies = nullptr) {
  std::vector<Message> frames;
  while (!bytes.empty()) {
    Message message;
    std::string_view body;
    ParseState state = ParseFrame(bytes, &message, &body);
    EXPECT_EQ(state, ParseState::kSuccess) << bytes.substr(0, 80);
    if (state != ParseState::kSuccess) break;
    if (bodies) bodies->emplace_back(body);
    bytes.remove_prefix(message.frame_bytes());
    frames.push_back(std::move(message));
  }
  return frames;
}

TEST(NatsParse, Pub) {
  Message m;
  ASSERT_EQ(Control("PUB orders.created 12\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.verb, Verb::kPub);
  EXPECT_EQ(m.subject, "orders.created");
  EXPECT_EQ(m.reply_to, "");
  EXPECT_EQ(m.total_bytes, 12u);
  EXPECT_EQ(m.header_bytes, 0u);
  EXPECT_EQ(m.control_bytes, 23u);
  EXPECT_EQ(m.frame_bytes(), 23u + 12 + 2);
}

TEST(NatsParse, PubWithReplyAndTabs) {
  Message m;
  ASSERT_EQ(Control("PUB\tfoo \t _INBOX.1\t5\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.subject, "foo");
  EXPECT_EQ(m.reply_to, "_INBOX.1");
  EXPECT_EQ(m.total_bytes, 5u);
}

TEST(NatsParse, VerbsAreCaseInsensitive) {
  Message m;
  ASSERT_EQ(Control("pub foo 1\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.verb, Verb::kPub);
  ASSERT_EQ(Control("hMsG foo 9 12 20\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.verb, Verb::kHmsg);
  ASSERT_EQ(Control("ping\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.verb, Verb::kPing);
  ASSERT_EQ(Control("+ok\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.verb, Verb::kOk);
}

TEST(NatsParse, HpubAndHmsgSizes) {
  Message m;
  ASSERT_EQ(Control("HPUB foo reply 22 33\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.verb, Verb::kHpub);
  EXPECT_EQ(m.reply_to, "reply");
  EXPECT_EQ(m.header_bytes, 22u);
  EXPECT_EQ(m.total_bytes, 33u);
  EXPECT_EQ(m.body_bytes(), 11u);
  ASSERT_EQ(Control("HMSG foo 7 22 33\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.sid, "7");
  EXPECT_EQ(m.reply_to, "");
  ASSERT_EQ(Control("HMSG foo 7 _INBOX.x 22 33\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.reply_to, "_INBOX.x");
  // Headers larger than the total, or shorter than "NATS/1.0\r\n\r\n".
  EXPECT_EQ(Control("HPUB foo 40 33\r\n"), ParseState::kInvalid);
  EXPECT_EQ(Control("HPUB foo 11 33\r\n"), ParseState::kInvalid);
}

TEST(NatsParse, MsgSubUnsubAndTheRest) {
  Message m;
  ASSERT_EQ(Control("MSG foo.bar 9 11\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.verb, Verb::kMsg);
  EXPECT_EQ(m.sid, "9");
  EXPECT_EQ(m.total_bytes, 11u);
  ASSERT_EQ(Control("SUB foo workers 3\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.queue_group, "workers");
  EXPECT_EQ(m.sid, "3");
  ASSERT_EQ(Control("UNSUB 3 10\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.sid, "3");
  ASSERT_EQ(Control("-ERR 'Unknown Protocol Operation'\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.verb, Verb::kErr);
  EXPECT_EQ(m.argument, "'Unknown Protocol Operation'");
  ASSERT_EQ(Control("CONNECT {\"verbose\":false}\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.argument, "{\"verbose\":false}");
  EXPECT_EQ(m.control_bytes, 26u);  // a bare LF ends a line too
  ASSERT_EQ(Control("PONG\r\n", &m), ParseState::kSuccess);
  EXPECT_EQ(m.frame_bytes(), 6u);
}

TEST(NatsParse, MalformedControlLinesAreInvalid) {
  for (std::string_view line : {"PUB foo\r\n", "PUB foo bar baz 1\r\n", "PUB foo -1\r\n", "PUB foo 1x\r\n",
                                "PUBLISH foo 1\r\n", "MSG foo 1\r\n", "SUB foo\r\n", "UNSUB\r\n",
                                "PING now\r\n", "GET / HTTP/1.1\r\n", "\r\n", "HPUB foo 12\r\n",
                                "PUB foo 99999999999999999999\r\n", "PUB foo 68719476736\r\n"}) {
    EXPECT_EQ(Control(line), ParseState::kInvalid) << line;
  }
}

TEST(NatsParse, LongControlLinesAreInvalidNotBufferedForever) {
  ParseLimits limits;
  limits.max_control_line_bytes = 64;
  Message m;
  std::string line = "PUB " + std::string(100, 'a');
  EXPECT_EQ(ParseControlLine(line, &m, limits), ParseState::kInvalid);
  EXPECT_EQ(ParseControlLine(line.substr(0, 40), &m, limits), ParseState::kNeedsMoreData);
  EXPECT_EQ(ParseControlLine(line + " 1\r\n", &m, limits), ParseState::kInvalid);
}

TEST(NatsParse, HeaderBlockWithStatusLine) {
  Message m;
  std::string block = "NATS/1.0 503 No Responders\r\n\r\n";
  m.header_bytes = block.size();
  ASSERT_EQ(ParseHeaderBlock(block, &m), ParseState::kSuccess);
  EXPECT_EQ(m.status_code, 503);
  EXPECT_EQ(m.status_description, "No Responders");
  EXPECT_TRUE(m.headers.empty());

  block = "NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 4\r\n\r\n";
  ASSERT_EQ(ParseHeaderBlock(block, &m), ParseState::kSuccess);
  EXPECT_EQ(m.status_code, 100);
  EXPECT_EQ(m.Header("nats-last-consumer"), "4");

  block = "NATS/1.0\r\nTraceparent:  00-aa \r\nA: 1\r\nA: 2\r\n\r\n";
  ASSERT_EQ(ParseHeaderBlock(block, &m), ParseState::kSuccess);
  EXPECT_EQ(m.status_code, 0);
  EXPECT_EQ(m.Header("traceparent"), "00-aa");
  EXPECT_EQ(m.Header("a"), "1");
  EXPECT_EQ(m.headers.size(), 3u);
}

TEST(NatsParse, MalformedHeaderBlocksAreInvalid) {
  Message m;
  for (std::string_view block : {"NATS/1.1\r\n\r\n", "NATS/1.0\r\n", "NATS/1.0\r\nNoColon\r\n\r\n",
                                 "NATS/1.0\r\n: v\r\n\r\n", "NATS/1.0 50 x\r\n\r\n", "NATS/1.0x\r\n\r\n",
                                 "NATS/1.0\r\n\r\nA: 1\r\n\r\n", "HTTP/1.0\r\n\r\n"}) {
    EXPECT_EQ(ParseHeaderBlock(block, &m), ParseState::kInvalid) << block;
  }
}

TEST(NatsParse, FrameWithHeadersAndBody) {
  std::string frame =
      "HPUB orders reply.1 47 52\r\nNATS/1.0\r\ntraceparent: 00-x\r\nX-Tenant: acme\r\n\r\nhello\r\n";
  Message m;
  std::string_view body;
  ASSERT_EQ(ParseFrame(frame, &m, &body), ParseState::kSuccess);
  EXPECT_EQ(body, "hello");
  EXPECT_EQ(m.frame_bytes(), frame.size());
  EXPECT_EQ(m.Header("TRACEPARENT"), "00-x");
  EXPECT_EQ(m.Header("x-tenant"), "acme");
  // The payload must be followed by CRLF.
  std::string broken = frame;
  broken[broken.size() - 2] = 'x';
  EXPECT_EQ(ParseFrame(broken, &m, &body), ParseState::kInvalid);
}

TEST(NatsParse, EveryByteSplitOfEveryFrame) {
  const std::string stream =
      "INFO {\"server_id\":\"x\",\"headers\":true} \r\n"
      "CONNECT {\"verbose\":false}\r\nPING\r\nPONG\r\n+OK\r\n-ERR 'Authorization Violation'\r\n"
      "SUB orders.> 1\r\nSUB orders.* q 2\r\nUNSUB 2\r\n"
      "PUB orders.created 12\r\n{\"order\":42}\r\n"
      "PUB orders.paid _INBOX.1 0\r\n\r\n"
      "HPUB orders.created 33 38\r\nNATS/1.0\r\ntraceparent: 00-abc\r\n\r\nhello\r\n"
      "MSG orders.created 1 3\r\na\r\n\r\n"
      "HMSG orders.created 2 _INBOX.1 30 30\r\nNATS/1.0 503 No Responders\r\n\r\n\r\n";
  std::vector<Message> frames = Frames(stream);
  ASSERT_EQ(frames.size(), 14u);
  size_t offset = 0;
  for (const Message& frame : frames) {
    std::string_view whole = std::string_view(stream).substr(offset, frame.frame_bytes());
    for (size_t split = 0; split < whole.size(); ++split) {
      Message m;
      EXPECT_EQ(ParseFrame(whole.substr(0, split), &m), ParseState::kNeedsMoreData)
          << VerbName(frame.verb) << " cut at " << split;
    }
    EXPECT_EQ(FindMessageStart(stream, offset), offset);
    offset += frame.frame_bytes();
  }
  EXPECT_EQ(offset, stream.size());
  EXPECT_EQ(frames[9].reply_to, "");
  EXPECT_EQ(frames[10].reply_to, "_INBOX.1");
  EXPECT_EQ(frames[10].total_bytes, 0u);
  EXPECT_EQ(frames[11].Header("traceparent"), "00-abc");
  EXPECT_EQ(frames[12].total_bytes, 3u);  // a body that holds a CRLF itself
  EXPECT_EQ(frames[13].status_code, 503);
}

TEST(NatsParse, FindMessageStartOnlyAtLineStarts) {
  std::string_view data = "xxPUB a 1\r\nb\r\nPING\r\n";
  EXPECT_EQ(FindMessageStart(data), 14u);  // "b\r\n" is not a message, "PUB" is mid-line
  EXPECT_EQ(FindMessageStart(data, 2), 2u);
  EXPECT_EQ(FindMessageStart("junk\nHP"), 5u);  // may become HPUB
  EXPECT_EQ(FindMessageStart("junk\nHX"), std::string_view::npos);
  EXPECT_EQ(FindMessageStart(""), std::string_view::npos);
}

TEST(NatsParse, BytesFromARealServer) {
  // Captured from nats-server 2.9.10 by tests/unit/fixtures/nats/capture.py.
  std::vector<std::string> bodies;
  std::string publisher_bytes = ReadFixture("publisher_sent.bin");
  std::vector<Message> published = Frames(publisher_bytes, &bodies);
  ASSERT_EQ(published.size(), 10u);  // CONNECT PING PUB PUB HPUB PUB PUB PING SUB PUB
  EXPECT_EQ(published[0].verb, Verb::kConnect);
  EXPECT_EQ(published[3].reply_to, "_INBOX.reply.1");
  EXPECT_EQ(published[4].verb, Verb::kHpub);
  EXPECT_EQ(published[4].Header("traceparent"), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  EXPECT_EQ(bodies[4], "{\"order\":43}");
  EXPECT_EQ(published[5].total_bytes, 76800u);
  EXPECT_EQ(published[6].total_bytes, 0u);

  bodies.clear();
  std::string subscriber_bytes = ReadFixture("subscriber_received.bin");
  std::vector<Message> delivered = Frames(subscriber_bytes, &bodies);
  ASSERT_GE(delivered.size(), 9u);
  EXPECT_EQ(delivered[0].verb, Verb::kInfo);
  EXPECT_NE(delivered[0].argument.find("\"version\":\"2.9.10\""), std::string::npos);
  int msgs = 0, hmsgs = 0;
  for (size_t i = 0; i < delivered.size(); ++i) {
    if (delivered[i].verb == Verb::kMsg) ++msgs;
    if (delivered[i].verb == Verb::kHmsg) {
      ++hmsgs;
      EXPECT_EQ(delivered[i].Header("x-tenant"), "acme");
      EXPECT_EQ(bodies[i], "{\"order\":43}");
    }
  }
  EXPECT_EQ(msgs, 5);
  EXPECT_EQ(hmsgs, 2);

  // The server's answer to a request nobody serves: a header block that is only a status.
  std::string requester_bytes = ReadFixture("publisher_received.bin");
  std::vector<Message> answers = Frames(requester_bytes);
  ASSERT_FALSE(answers.empty());
  const Message& no_responders = answers.back();
  EXPECT_EQ(no_responders.verb, Verb::kHmsg);
  EXPECT_EQ(no_responders.subject, "_INBOX.req.1");
  EXPECT_EQ(no_responders.status_code, 503);
  EXPECT_EQ(no_responders.body_bytes(), 0u);
  EXPECT_TRUE(no_responders.headers.empty());
}

}  // namespace
}  // namespace flowtracer::nats
