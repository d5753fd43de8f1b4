/* TCP loopback ping-pong of small writes and reads: the cost of one traced socket call.
 *
 *   pingpong [--threads 1|2] [--iterations N] [--opaque] [--port P] [--pace N]
 *
 * Each iteration: the client writes a small HTTP request, the server reads it and
 * writes a small response, the client reads it (4 socket calls). With --threads 1 both
 * ends run in one thread (loopback delivers a write before it returns, so there is no
 * scheduling in the measurement); with --threads 2 the server is a second thread.
 * Bytes are HTTP by default so the agent keeps copying them; --opaque sends bytes that
 * are not a protocol the agent parses (it then stops copying after detection).
 * --pace N sleeps 1 ms after every N iterations (single thread only), so a tracer that
 * keeps up loses nothing; sleeping costs no CPU time, so CPU per iteration stays comparable.
 *
 * Prints one line: "ns_per_iteration=<wall> cpu_ns_per_iteration=<cpu> calls_per_iteration=4
 * iterations=<n>". CPU time is the figure to compare: on a shared machine wall time also
 * measures who else got the CPU. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char kHttpRequest[] = "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
static const char kHttpResponse[] = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong";
static const char kOpaqueRequest[] = "\x01\x02ping-opaque-bytes-0123456789abcdef";
static const char kOpaqueResponse[] = "\x03\x04pong-opaque-bytes-0123456789abcdef";

struct config {
  long iterations;
  int opaque;
  int server_fd;
  int client_fd;
};

static void die(const char *what) {
  fprintf(stderr, "pingpong: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die("write");
    buf += n;
    len -= (size_t)n;
  }
}

static void read_exactly(int fd, char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = read(fd, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die("read");
    buf += n;
    len -= (size_t)n;
  }
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* CPU time of the whole process (both threads), system time included: BPF programs on
 * the socket hooks run in the caller's context, so this is what tracing adds to the
 * traced program, whatever else the machine is doing. */
static double cpu_ns(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e9 +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e3;
}

static void *serve(void *arg) {
  struct config *c = arg;
  const char *request = c->opaque ? kOpaqueRequest : kHttpRequest;
  const char *response = c->opaque ? kOpaqueResponse : kHttpResponse;
  size_t request_len = strlen(request), response_len = strlen(response);
  char buf[256];
  for (long i = 0; i < c->iterations; ++i) {
    read_exactly(c->server_fd, buf, request_len);
    write_all(c->server_fd, response, response_len);
  }
  return NULL;
}

int main(int argc, char **argv) {
  struct config c = {.iterations = 200000};
  long pace = 0;
  int threads = 1, port = 21001; /* the benchmarks' port range is 21000-21999 */
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iterations") && i + 1 < argc) c.iterations = atol(argv[++i]);
    else if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--opaque")) c.opaque = 1;
    else if (!strcmp(argv[i], "--pace") && i + 1 < argc) pace = atol(argv[++i]);
    else {
      fprintf(stderr, "usage: pingpong [--threads 1|2] [--iterations N] [--opaque] [--port P] [--pace N]\n");
      return 2;
    }
  }

  int listener = socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) die("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listener, (struct sockaddr *)&address, sizeof(address))) die("bind");
  if (listen(listener, 1)) die("listen");
  socklen_t address_len = sizeof(address);
  getsockname(listener, (struct sockaddr *)&address, &address_len);
  c.client_fd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c.client_fd, (struct sockaddr *)&address, sizeof(address))) die("connect");
  c.server_fd = accept(listener, NULL, NULL);
  if (c.server_fd < 0) die("accept");
  setsockopt(c.client_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(c.server_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  const char *request = c.opaque ? kOpaqueRequest : kHttpRequest;
  const char *response = c.opaque ? kOpaqueResponse : kHttpResponse;
  size_t request_len = strlen(request), response_len = strlen(response);
  char buf[256];

  pthread_t server;
  if (threads == 2 && pthread_create(&server, NULL, serve, &c)) die("pthread_create");
  double start = now_ns(), cpu_start = cpu_ns();
  for (long i = 0; i < c.iterations; ++i) {
    write_all(c.client_fd, request, request_len);
    if (threads == 1) {
      read_exactly(c.server_fd, buf, request_len);
      write_all(c.server_fd, response, response_len);
    }
    read_exactly(c.client_fd, buf, response_len);
    if (pace && threads == 1 && (i + 1) % pace == 0) {
      struct timespec pause = {0, 1000000};
      nanosleep(&pause, NULL);
    }
  }
  if (threads == 2) pthread_join(server, NULL);
  double elapsed = now_ns() - start, cpu = cpu_ns() - cpu_start;
  printf("ns_per_iteration=%.1f cpu_ns_per_iteration=%.1f calls_per_iteration=4 iterations=%ld\n",
         elapsed / c.iterations, cpu / c.iterations, c.iterations);
  close(c.client_fd);
  close(c.server_fd);
  close(listener);
  return 0;
}
