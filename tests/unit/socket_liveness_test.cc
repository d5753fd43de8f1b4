#include "agent/conntrack/socket_liveness.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

namespace flowtracer::conntrack {
namespace {

ft_tuple Ipv4Tuple(const char* local, uint16_t local_port, const char* remote, uint16_t remote_port) {
  ft_tuple tuple{};
  tuple.local_addr[10] = tuple.local_addr[11] = 0xff;
  tuple.remote_addr[10] = tuple.remote_addr[11] = 0xff;
  inet_pton(AF_INET, local, tuple.local_addr + 12);
  inet_pton(AF_INET, remote, tuple.remote_addr + 12);
  tuple.local_port = local_port;
  tuple.remote_port = remote_port;
  tuple.family = AF_INET;
  return tuple;
}

class ProcSocketLivenessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char root_template[] = "/tmp/ft-liveness-XXXXXX";
    ASSERT_NE(::mkdtemp(root_template), nullptr);
    root_ = root_template;
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  void Write(const std::string& relative, const std::string& text) {
    std::filesystem::create_directories(std::filesystem::path(root_ + "/" + relative).parent_path());
    std::ofstream(root_ + "/" + relative) << text;
  }
  std::string root_;
};

constexpr const char* kHeader =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

TEST_F(ProcSocketLivenessTest, ReadsTheProcessNamespaceTables) {
  // 127.0.0.1:8080 <-> 127.0.0.1:40000 established; :40001 in TIME_WAIT; ::1 :8080 <-> :40002.
  Write("77/net/tcp", std::string(kHeader) +
                          "   0: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 20 4 30 10 -1\n"
                          "   1: 0100007F:1F90 0100007F:9C41 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1\n");
  Write("77/net/tcp6", std::string(kHeader) +
                           "   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:9C42 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n");
  ProcSocketLiveness liveness(root_);
  liveness.BeginSweep();
  EXPECT_TRUE(liveness.MayBeOpen(77, Ipv4Tuple("127.0.0.1", 8080, "127.0.0.1", 40000)));
  EXPECT_FALSE(liveness.MayBeOpen(77, Ipv4Tuple("127.0.0.1", 8080, "127.0.0.1", 40001)));  // TIME_WAIT
  EXPECT_FALSE(liveness.MayBeOpen(77, Ipv4Tuple("127.0.0.1", 8080, "127.0.0.1", 40003)));  // absent
  EXPECT_FALSE(liveness.MayBeOpen(77, Ipv4Tuple("127.0.0.1", 40000, "127.0.0.1", 8080)));  // other side
  ft_tuple v6{};
  v6.local_addr[15] = v6.remote_addr[15] = 1;
  v6.local_port = 8080;
  v6.remote_port = 40002;
  EXPECT_TRUE(liveness.MayBeOpen(77, v6));
}

TEST_F(ProcSocketLivenessTest, ExitedProcessMeansGoneUnreadableMeansUnknown) {
  std::filesystem::create_directories(root_ + "/78");  // exists, no net tables readable
  ProcSocketLiveness liveness(root_);
  liveness.BeginSweep();
  ft_tuple tuple = Ipv4Tuple("127.0.0.1", 8080, "127.0.0.1", 40000);
  EXPECT_FALSE(liveness.MayBeOpen(79, tuple));
  EXPECT_TRUE(liveness.MayBeOpen(78, tuple));
  EXPECT_TRUE(liveness.MayBeOpen(0, tuple));  // owner unknown
}

TEST_F(ProcSocketLivenessTest, TablesAreReadAgainEachSweep) {
  Write("77/net/tcp", std::string(kHeader) +
                          "   0: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 20 4 30 10 -1\n");
  ProcSocketLiveness liveness(root_);
  ft_tuple tuple = Ipv4Tuple("127.0.0.1", 8080, "127.0.0.1", 40000);
  liveness.BeginSweep();
  EXPECT_TRUE(liveness.MayBeOpen(77, tuple));
  Write("77/net/tcp", kHeader);
  EXPECT_TRUE(liveness.MayBeOpen(77, tuple));  // same sweep: the table read once
  liveness.BeginSweep();
  EXPECT_FALSE(liveness.MayBeOpen(77, tuple));
}

// The real /proc, with this process's own loopback connection.
TEST(ProcSocketLivenessRealTest, SeesOwnConnectionOpenThenGone) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  int client = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  int server = accept(listener, nullptr, nullptr);
  ASSERT_GE(server, 0);
  sockaddr_in client_address{};
  length = sizeof(client_address);
  ASSERT_EQ(getsockname(client, reinterpret_cast<sockaddr*>(&client_address), &length), 0);
  uint16_t server_port = ntohs(address.sin_port);
  uint16_t client_port = ntohs(client_address.sin_port);
  ft_tuple client_side = Ipv4Tuple("127.0.0.1", client_port, "127.0.0.1", server_port);
  ft_tuple server_side = Ipv4Tuple("127.0.0.1", server_port, "127.0.0.1", client_port);

  ProcSocketLiveness liveness;
  liveness.BeginSweep();
  EXPECT_TRUE(liveness.MayBeOpen(getpid(), client_side));
  EXPECT_TRUE(liveness.MayBeOpen(getpid(), server_side));

  close(client);
  close(server);
  close(listener);
  // Loopback closes within microseconds; bounded wait for the last ACK all the same.
  bool gone = false;
  for (int attempt = 0; attempt < 100 && !gone; ++attempt) {
    liveness.BeginSweep();
    gone = !liveness.MayBeOpen(getpid(), client_side) && !liveness.MayBeOpen(getpid(), server_side);
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(gone);
}

}  // namespace
}  // namespace flowtracer::conntrack
