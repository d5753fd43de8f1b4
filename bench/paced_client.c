/* An open-loop HTTP/1.1 load generator: requests at evenly spaced instants.
 *
 *   paced_client --port P --rate R --seconds S [--connections C] [--warm-up S]
 *
 * Why beside h2load --rps: h2load paces each client on its own timer, and its clients start
 * together, so 20 clients at 500/s each send bursts of 20 requests every 2 ms. Its latency
 * is then mostly each request's wait behind its burst (p50 about 165 us on loopback here,
 * against about 40 us with 4 clients), and a cost added per request shows up multiplied by
 * the burst's depth. Here request k is due at start + k/R, whatever happened before it: one
 * request every 100 us at 10 000/s, so each finds the server idle. A request that finds no
 * idle connection waits for one.
 *
 * Keep-alive connections to 127.0.0.1:P, GET /, responses with Content-Length (what the
 * bench's nginx sends). Prints one line:
 *   requests=N ok=N errors=N unanswered=N late_sends=N p50_us=X p99_us=X p999_us=X max_us=X
 *   due_p50_us=X due_p99_us=X lateness_p50_us=X lateness_p99_us=X
 * p50_us..max_us: from each request's send to its response's last byte (as h2load counts);
 * due_*: from the instant it was due, so the client's own lateness counts too (no
 * coordinated omission); lateness_*: send minus due; late_sends: sent over 50 us late;
 * unanswered: still without a response 2 s after the last was due. Counts leave out the
 * warm-up.
 * On an idle VM CPU most of the lateness is the CPU waking up for the timer. Exits 1 when
 * it cannot connect, 2 on bad options. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum { kMaxConnections = 256, kResponseBuffer = 4096 };
static const char kRequest[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

struct connection {
  int fd;
  int busy;
  uint64_t due_ns;   /* when the request in flight was due */
  uint64_t sent_ns;  /* when it was sent */
  size_t filled;
  char buffer[kResponseBuffer];
};

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int compare_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

static uint32_t percentile(const uint32_t *sorted, size_t n, double fraction) {
  if (n == 0) return 0;
  size_t index = (size_t)(fraction * (double)n + 0.5);
  if (index > 0) --index;
  if (index >= n) index = n - 1;
  return sorted[index];
}

/* Length of a complete response at the start of `data`, 0 if incomplete, -1 if it is not
 * one this client understands. */
static long complete_response(const char *data, size_t size, int *ok) {
  const char *end = memmem(data, size, "\r\n\r\n", 4);
  if (!end) return size >= kResponseBuffer ? -1 : 0;
  size_t head = (size_t)(end - data) + 4;
  const char *length = memmem(data, head, "Content-Length:", 15);
  if (!length) return -1;
  long body = strtol(length + 15, NULL, 10);
  if (body < 0 || head + (size_t)body > kResponseBuffer) return -1;
  if (size < head + (size_t)body) return 0;
  *ok = size >= 12 && memcmp(data, "HTTP/1.1 200", 12) == 0;
  return (long)(head + (size_t)body);
}

int main(int argc, char **argv) {
  int port = 0, connections = 20;
  double rate = 0, seconds = 0, warm_up = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--rate")) rate = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--connections")) connections = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--warm-up")) warm_up = atof(argv[i + 1]);
    else {
      fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (port <= 0 || port > 65535 || rate <= 0 || rate > 1e6 || seconds <= 0 || seconds > 600 ||
      connections < 1 || connections > kMaxConnections || warm_up < 0 || warm_up > 60) {
    fprintf(stderr,
            "usage: paced_client --port P --rate R(1..1e6) --seconds S(..600) [--connections C(1..%d)] "
            "[--warm-up S]\n",
            kMaxConnections);
    return 2;
  }
  /* Timers fire up to 50 us late by default: the schedule needs them on time. */
  prctl(PR_SET_TIMERSLACK, 1UL);

  static struct connection conns[kMaxConnections];
  int epoll = epoll_create1(0);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  for (int i = 0; i < connections; ++i) {
    conns[i].fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(conns[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(conns[i].fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
      fprintf(stderr, "connect 127.0.0.1:%d: %s\n", port, strerror(errno));
      return 1;
    }
    struct epoll_event event = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(epoll, EPOLL_CTL_ADD, conns[i].fd, &event);
  }
  int timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  struct epoll_event timer_event = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
  epoll_ctl(epoll, EPOLL_CTL_ADD, timer, &timer_event);

  const uint64_t interval_ns = (uint64_t)(1e9 / rate);
  const uint64_t total = (uint64_t)(rate * (warm_up + seconds));
  const uint64_t warm_up_requests = (uint64_t)(rate * warm_up);
  uint32_t *latencies_us = calloc(total, sizeof(uint32_t));     /* from the due time */
  uint32_t *response_us = calloc(total, sizeof(uint32_t));      /* from the send */
  uint32_t *lateness_us = calloc(total, sizeof(uint32_t));      /* send - due */
  if (!latencies_us || !response_us || !lateness_us) return 1;
  uint64_t sent = 0, done = 0, measured = 0, ok = 0, errors = 0, late = 0, failed = 0;
  int next_idle = 0;  /* round robin over the connections */
  uint64_t armed_due = 0;  /* the timer's setting: re-armed only when the next due time moves */
  const uint64_t start = now_ns() + 1000000;
  /* Past the schedule's end, in-flight requests get this long to finish. */
  const uint64_t give_up = start + (uint64_t)((warm_up + seconds) * 1e9) + 2000000000ull;

  while (done + failed < total && now_ns() < give_up) {
    uint64_t now = now_ns();
    /* Send every request that is due, on idle connections; one that finds none waits. */
    int waiting_for_connection = 0;
    while (sent < total && start + sent * interval_ns <= now) {
      int chosen = -1;
      for (int n = 0; n < connections; ++n) {
        int i = (next_idle + n) % connections;
        if (!conns[i].busy) {
          chosen = i;
          break;
        }
      }
      if (chosen < 0) {
        waiting_for_connection = 1;  /* a response frees one; the timer would only spin */
        break;
      }
      next_idle = (chosen + 1) % connections;
      struct connection *c = &conns[chosen];
      c->busy = 1;
      c->due_ns = start + sent * interval_ns;
      c->sent_ns = now_ns();  /* sends in a row after a stall each take their own time */
      c->filled = 0;
      if (c->sent_ns - c->due_ns > 50000 && sent >= warm_up_requests) ++late;
      if (send(c->fd, kRequest, sizeof(kRequest) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(kRequest) - 1)) {
        fprintf(stderr, "send: %s\n", strerror(errno));
        return 1;
      }
      ++sent;
    }
    if (sent < total && !waiting_for_connection && start + sent * interval_ns != armed_due) {
      const uint64_t due = armed_due = start + sent * interval_ns;
      struct itimerspec at = {.it_value = {.tv_sec = (time_t)(due / 1000000000ull),
                                           .tv_nsec = (long)(due % 1000000000ull)}};
      timerfd_settime(timer, TFD_TIMER_ABSTIME, &at, NULL);
    }
    struct epoll_event events[64];
    int ready = epoll_wait(epoll, events, 64, 100);
    for (int e = 0; e < ready; ++e) {
      if (events[e].data.u32 == UINT32_MAX) {
        uint64_t expirations;
        if (read(timer, &expirations, sizeof(expirations)) < 0) { /* a later wake-up will do */
        }
        continue;
      }
      struct connection *c = &conns[events[e].data.u32];
      ssize_t got = recv(c->fd, c->buffer + c->filled, sizeof(c->buffer) - c->filled, MSG_DONTWAIT);
      if (got <= 0) {
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        fprintf(stderr, "the server closed a connection after %llu requests\n", (unsigned long long)done);
        return 1;
      }
      c->filled += (size_t)got;
      int status_ok = 0;
      long length = complete_response(c->buffer, c->filled, &status_ok);
      if (length == 0) continue;
      uint64_t finished = now_ns();
      if (length < 0 || (size_t)length != c->filled || !c->busy) {
        /* Not a response this client can frame: drop the connection's state. */
        if (!c->busy || (c->due_ns - start) / interval_ns >= warm_up_requests) ++errors;
        failed += c->busy;
        c->filled = 0;
        c->busy = 0;
        continue;
      }
      uint64_t index = (c->due_ns - start) / interval_ns;
      if (index >= warm_up_requests) {
        latencies_us[measured] = (uint32_t)((finished - c->due_ns) / 1000);
        response_us[measured] = (uint32_t)((finished - c->sent_ns) / 1000);
        lateness_us[measured] = (uint32_t)((c->sent_ns - c->due_ns) / 1000);
        ++measured;
      }
      ok += status_ok && index >= warm_up_requests;
      ++done;
      c->busy = 0;
      c->filled = 0;
    }
  }
  qsort(latencies_us, measured, sizeof(uint32_t), compare_u32);
  qsort(response_us, measured, sizeof(uint32_t), compare_u32);
  qsort(lateness_us, measured, sizeof(uint32_t), compare_u32);
  const uint64_t unanswered = total - done - failed;
  printf("requests=%llu ok=%llu errors=%llu unanswered=%llu late_sends=%llu p50_us=%u p99_us=%u p999_us=%u max_us=%u "
         "due_p50_us=%u due_p99_us=%u lateness_p50_us=%u lateness_p99_us=%u\n",
         (unsigned long long)measured, (unsigned long long)ok, (unsigned long long)errors,
         (unsigned long long)unanswered, (unsigned long long)late, percentile(response_us, measured, 0.50), percentile(response_us, measured, 0.99),
         percentile(response_us, measured, 0.999), measured ? response_us[measured - 1] : 0,
         percentile(latencies_us, measured, 0.50), percentile(latencies_us, measured, 0.99),
         percentile(lateness_us, measured, 0.50), percentile(lateness_us, measured, 0.99));
  free(latencies_us);
  free(response_us);
  free(lateness_us);
  return 0;
}
