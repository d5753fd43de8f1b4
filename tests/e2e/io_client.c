/* A client that moves HTTP/1.1 requests with every call family the capture layer must
 * decode: many small write()s, writev(), sendmsg() and sendto() out; readv(),
 * recvmsg() and read() in. Three requests on one keep-alive connection. Prints what it
 * sent and received as JSON so the test can compare with what the agent saw.
 * usage: io_client HOST PORT PATH */
#define _GNU_SOURCE /* memmem, strcasestr */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static long sent_total, received_total;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void send_small_writes(int fd, const char *data, size_t len, size_t chunk) {
  for (size_t off = 0; off < len; off += chunk) {
    size_t n = len - off < chunk ? len - off : chunk;
    if (write(fd, data + off, n) != (ssize_t)n) die("write");
    sent_total += n;
  }
}

static void send_writev(int fd, const char *data, size_t len) {
  struct iovec iov[3] = {{(void *)data, 10}, {(void *)(data + 10), 15}, {(void *)(data + 25), len - 25}};
  if (writev(fd, iov, 3) != (ssize_t)len) die("writev");
  sent_total += len;
}

static void send_sendmsg(int fd, const char *data, size_t len) {
  struct iovec iov[2] = {{(void *)data, 7}, {(void *)(data + 7), len - 7}};
  struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
  if (sendmsg(fd, &msg, 0) != (ssize_t)len) die("sendmsg");
  sent_total += len;
}

/* Reads one response (head, then Content-Length bytes) with the given call family. */
static void read_response(int fd, int how) {
  char buf[65536];
  size_t have = 0;
  long body = -1, head_end = -1;
  while (head_end < 0 || (long)have < head_end + body) {
    ssize_t n;
    char *dst = buf + have;
    size_t room = sizeof(buf) - have;
    if (how == 0) {
      struct iovec iov[2] = {{dst, room / 2}, {dst + room / 2, room - room / 2}};
      n = readv(fd, iov, 2);
    } else if (how == 1) {
      struct iovec iov[2] = {{dst, 5}, {dst + 5, room - 5}};
      struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
      n = recvmsg(fd, &msg, 0);
    } else {
      n = read(fd, dst, room);
    }
    if (n <= 0) die("read response");
    have += n;
    received_total += n;
    if (head_end < 0) {
      char *end = memmem(buf, have, "\r\n\r\n", 4);
      if (end) {
        head_end = end - buf + 4;
        char *cl = strcasestr(buf, "content-length:");
        body = cl && cl < end ? atol(cl + 15) : 0;
      }
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s HOST PORT PATH\n", argv[0]);
    return 2;
  }
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
  if (getaddrinfo(argv[1], argv[2], &hints, &ai)) die("getaddrinfo");
  int fd = socket(ai->ai_family, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen)) die("connect");

  char request[2048];
  int len = snprintf(request, sizeof(request),
                     "GET %s?call=write HTTP/1.1\r\nHost: test\r\nUser-Agent: io_client\r\n"
                     "X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
                     argv[3]);
  send_small_writes(fd, request, len, 3);
  read_response(fd, 0);
  len = snprintf(request, sizeof(request), "GET %s?call=writev HTTP/1.1\r\nHost: test\r\n\r\n", argv[3]);
  send_writev(fd, request, len);
  read_response(fd, 1);
  len = snprintf(request, sizeof(request), "GET %s?call=sendmsg HTTP/1.1\r\nHost: test\r\n\r\n", argv[3]);
  send_sendmsg(fd, request, len);
  read_response(fd, 2);

  struct sockaddr_storage local;
  socklen_t local_len = sizeof(local);
  getsockname(fd, (struct sockaddr *)&local, &local_len);
  int port = ntohs(local.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&local)->sin6_port
                                               : ((struct sockaddr_in *)&local)->sin_port);
  close(fd);
  printf("{\"local_port\": %d, \"bytes_sent\": %ld, \"bytes_received\": %ld}\n", port, sent_total,
         received_total);
  return 0;
}
