/* What both data-hook families share: connection state, filters, payload copy and the
 * data event itself. Each hook family only finds the socket and the call's arguments. */
#ifndef FLOWTRACER_CAPTURE_BPF_H
#define FLOWTRACER_CAPTURE_BPF_H

#include "maps.bpf.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define MSG_PEEK 2
#define PF_KTHREAD 0x00200000
#define RCV_SHUTDOWN 1

enum trace_state {
  TRACE_UNDECIDED = 0,
  TRACE_ANNOUNCED = 1, /* CONN_OPEN sent: data events flow */
  TRACE_EXCLUDED = 2,  /* the port filter rejected it: never traced */
};

static __always_inline void count(enum ft_counter counter, __u64 n) {
  __u32 key = counter;
  __u64 *value = bpf_map_lookup_elem(&counters, &key);
  if (value) *value += n;
}

static __always_inline bool is_tcp_inet(struct sock *sk) {
  __u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
  if (family != AF_INET && family != AF_INET6) return false;
  /* sk_protocol was an 8-bit bitfield before v5.6 (commit bf9765145b85); the probed
   * bitfield read handles both layouts. */
  return BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) == IPPROTO_TCP;
}

static __always_inline bool pid_wanted(__u64 pid_tgid) {
  __u32 tgid = pid_tgid >> 32;
  if (tgid == agent_tgid) return false;
  return !filter_by_pid || bpf_map_lookup_elem(&pid_filter, &tgid);
}

static __always_inline bool ports_wanted(struct sock *sk) {
  if (!filter_by_port) return true;
  __u16 local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
  __u16 remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
  return bpf_map_lookup_elem(&port_filter, &local_port) ||
         bpf_map_lookup_elem(&port_filter, &remote_port);
}

/* Ring buffer bytes a record of `size` takes (8-byte header, 8-byte aligned). */
#define RINGBUF_RECORD_BYTES(size) (8 + (((size) + 7) & ~7ull))

/* Wake-ups are batched: the agent is woken when a record crosses a multiple of
 * wakeup_data_bytes of queued data, so at most once per that much, and its poll timer
 * collects quieter traffic. A wake-up raises an irq_work (a self-IPI, several us in a
 * VM); forcing one per record while the agent lags, or the kernel's default of one per
 * record whenever the agent has caught up, costs more than the rest of the hook.
 * `reserved`: the record is already counted as queued (reserve/submit). */
static __always_inline __u64 wakeup_flags(__u64 record_bytes, bool reserved) {
  if (!wakeup_data_bytes) return 0;
  __u64 queued = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
  __u64 before = reserved && queued >= record_bytes ? queued - record_bytes : queued;
  return before / wakeup_data_bytes != (before + record_bytes) / wakeup_data_bytes
             ? BPF_RB_FORCE_WAKEUP
             : BPF_RB_NO_WAKEUP;
}

/* Unique for the agent's lifetime: the clock in ns, with the CPU in the low bits. */
static __always_inline __u64 new_conn_id(void) {
  return (bpf_ktime_get_ns() << 8) | (bpf_get_smp_processor_id() & 0xff);
}

/* `update_flags`: BPF_ANY where the socket is certainly new (a handshake started), so
 * state left by a socket whose close we missed cannot outlive it; else BPF_NOEXIST. */
static __always_inline struct ft_conn_state *track_conn(__u64 sk_addr, __u8 role,
                                                        __u64 update_flags) {
  struct ft_conn_state fresh = {};
  fresh.conn_id = new_conn_id();
  fresh.role = role;
  long err = bpf_map_update_elem(&conns, &sk_addr, &fresh, update_flags);
  if (err == -7 /* E2BIG: map full */) {
    count(FT_CTR_DROP_CONN_MAP_FULL, 1);
    return 0;
  }
  return bpf_map_lookup_elem(&conns, &sk_addr);
}

static __always_inline void read_tuple(struct sock *sk, struct ft_tuple *tuple) {
  __builtin_memset(tuple, 0, sizeof(*tuple));
  __u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
  tuple->family = family;
  tuple->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
  tuple->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
  if (family == AF_INET) {
    __u32 local = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
    __u32 remote = BPF_CORE_READ(sk, __sk_common.skc_daddr);
    tuple->local_addr[10] = tuple->local_addr[11] = 0xff;
    tuple->remote_addr[10] = tuple->remote_addr[11] = 0xff;
    __builtin_memcpy(&tuple->local_addr[12], &local, 4);
    __builtin_memcpy(&tuple->remote_addr[12], &remote, 4);
  } else {
    BPF_CORE_READ_INTO(&tuple->local_addr, sk, __sk_common.skc_v6_rcv_saddr);
    BPF_CORE_READ_INTO(&tuple->remote_addr, sk, __sk_common.skc_v6_daddr);
  }
}

static __always_inline void fill_header(struct ft_event_header *header, __u32 type,
                                        __u64 pid_tgid, __u64 conn_id) {
  header->type = type;
  header->pid = pid_tgid >> 32;
  header->tid = (__u32)pid_tgid;
  header->_pad = 0;
  header->timestamp_ns = bpf_ktime_get_ns();
  header->conn_id = conn_id;
}

/* Sends CONN_OPEN with the tuple and process; false when the ring buffer is full (the
 * next call on the socket tries again). */
static __always_inline bool announce_conn(struct sock *sk, struct ft_conn_state *state,
                                          __u64 pid_tgid) {
  struct ft_conn_event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
  if (!event) {
    count(FT_CTR_DROP_RINGBUF_FULL, 1);
    return false;
  }
  fill_header(&event->header, FT_EVENT_CONN_OPEN, pid_tgid, state->conn_id);
  read_tuple(sk, &event->tuple);
  event->bytes_sent = 0;
  event->bytes_received = 0;
  event->role = state->role;
  __builtin_memset(event->_pad, 0, sizeof(event->_pad));
  bpf_get_current_comm(event->comm, sizeof(event->comm));
  bpf_ringbuf_submit(event, wakeup_flags(RINGBUF_RECORD_BYTES(sizeof(*event)), true));
  count(FT_CTR_CONN_EVENTS, 1);
  state->pid = pid_tgid >> 32;
  return true;
}

/* Stream offset of a call that moved `length` bytes, from TCP's sequence numbers as
 * they stand after the call: bytes moved by calls we do not see become gaps. */
static __always_inline __u64 call_position(struct sock *sk, struct ft_conn_state *state,
                                           int direction, __u32 length, __u32 *seq_start_out) {
  struct tcp_sock *tcp = (struct tcp_sock *)sk;
  __u32 seq_end = direction == FT_DIR_EGRESS ? BPF_CORE_READ(tcp, write_seq)
                                             : BPF_CORE_READ(tcp, copied_seq);
  __u32 seq_start = seq_end - length;
  *seq_start_out = seq_start;
  __u64 position = state->next_position[direction & 1];
  if (state->seen[direction & 1]) {
    __u32 gap = seq_start - state->last_seq_end[direction & 1];
    /* A read that also consumes the peer's FIN advances copied_seq one past the data
     * (the FIN takes a sequence number): that is not a missing byte. */
    if (gap == 1 && direction == FT_DIR_INGRESS &&
        (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_shutdown) & RCV_SHUTDOWN))
      gap = 0;
    /* Two threads racing on one socket can make the sequence step back; that is not
     * a gap, and an implausible jump must not poison the stream offset. */
    if (gap < (1u << 30)) position += gap;
  }
  state->seen[direction & 1] = 1;
  state->last_seq_end[direction & 1] = seq_end;
  state->next_position[direction & 1] = position + length;
  return position;
}

/* Copies up to `want` bytes of the call's buffers, after skipping `skip` bytes, into
 * scratch->payload. Returns the bytes copied. */
static __always_inline __u32 copy_payload(struct data_event_scratch *scratch,
                                          const struct io_args *args, __u32 skip, __u32 want) {
  if (args->io_call == FT_IO_WRITE || args->io_call == FT_IO_READ ||
      args->io_call == FT_IO_SENDTO || args->io_call == FT_IO_RECVFROM) {
    __u32 n = want & (2 * FT_MAX_PAYLOAD - 1); /* want <= FT_MAX_PAYLOAD already */
    if (bpf_probe_read_user(scratch->payload, n, (const void *)(args->buf + skip))) {
      count(FT_CTR_DROP_READ_USER, 1);
      return 0;
    }
    return n;
  }

  __u64 iov_addr = args->buf;
  __u64 iov_count = args->iovcnt;
  if (args->io_call == FT_IO_SENDMSG || args->io_call == FT_IO_RECVMSG) {
    struct user_msghdr msg;
    if (bpf_probe_read_user(&msg, sizeof(msg), (const void *)args->buf)) {
      count(FT_CTR_DROP_READ_USER, 1);
      return 0;
    }
    iov_addr = (__u64)msg.msg_iov;
    iov_count = msg.msg_iovlen;
  }

  __u32 copied = 0;
  __u32 skip_left = skip;
  for (int i = 0; i < FT_MAX_IOV; i++) {
    if (i >= iov_count || copied >= want) break;
    struct iovec iov;
    if (bpf_probe_read_user(&iov, sizeof(iov), (const void *)(iov_addr + i * sizeof(iov)))) {
      count(FT_CTR_DROP_READ_USER, 1);
      break;
    }
    __u64 base = (__u64)iov.iov_base;
    __u64 len = iov.iov_len;
    if (len <= skip_left) {
      skip_left -= len;
      continue;
    }
    base += skip_left;
    len -= skip_left;
    skip_left = 0;
    if (len > want - copied) len = want - copied;
    /* Masks, not comparisons: they survive compiler reordering and give the verifier
     * offset < FT_MAX_PAYLOAD and n < 2 * FT_MAX_PAYLOAD, inside the 3x scratch. */
    __u32 offset = copied & (FT_MAX_PAYLOAD - 1);
    __u32 n = len & (2 * FT_MAX_PAYLOAD - 1);
    if (bpf_probe_read_user(&scratch->payload[offset], n, (const void *)base)) {
      count(FT_CTR_DROP_READ_USER, 1);
      break;
    }
    copied += n;
  }
  return copied;
}

/* One traced read or write of `length` bytes on a TCP socket. `args` is null when the
 * call that moved the bytes is not one we can decode. */
static __always_inline void capture_io(struct sock *sk, int direction, __u32 length,
                                       const struct io_args *args, __u8 hook, __u64 pid_tgid) {
  __u64 sk_addr = (__u64)sk;
  struct ft_conn_state *state = bpf_map_lookup_elem(&conns, &sk_addr);
  if (!state) {
    state = track_conn(sk_addr, FT_ROLE_UNKNOWN, BPF_NOEXIST);
    if (!state) return;
  }
  if (state->announced == TRACE_EXCLUDED) return;
  if (state->announced == TRACE_UNDECIDED) {
    if (!ports_wanted(sk)) {
      state->announced = TRACE_EXCLUDED;
      return;
    }
    if (!announce_conn(sk, state, pid_tgid)) return;
    state->announced = TRACE_ANNOUNCED;
  }

  __u32 seq_start = 0;
  __u64 position = call_position(sk, state, direction, length, &seq_start);

  /* The agent's copy instructions: looked up only when they may have changed since this
   * connection last looked (a hash lookup on every call otherwise). The generation is
   * read before the lookup, so a change made during it is seen by the next call. */
  __u64 generation = control_generation;
  if (state->control_generation != generation) {
    struct ft_conn_control *control = bpf_map_lookup_elem(&conn_control, &state->conn_id);
    state->control_skip_until[0] = control ? control->skip_until[0] : 0;
    state->control_skip_until[1] = control ? control->skip_until[1] : 0;
    state->control_flags = control ? control->flags : 0;
    state->control_generation = generation;
  }
  if (state->control_flags & FT_CONTROL_IGNORE) return;
  __u32 skip = 0;
  __u64 skip_until = state->control_skip_until[direction & 1];
  if (skip_until > position) skip = skip_until - position < length ? skip_until - position : length;

  __u32 cpu = bpf_get_smp_processor_id();
  struct data_event_scratch *scratch = bpf_map_lookup_elem(&data_scratch, &cpu);
  if (!scratch) return;
  struct ft_data_event *event = &scratch->event;
  fill_header(&event->header, FT_EVENT_DATA, pid_tgid, state->conn_id);
  event->position = position;
  event->length = length;
  event->payload_offset = skip;
  event->direction = direction;
  event->role = state->role;
  event->hook = hook;
  event->io_call = args ? args->io_call : FT_IO_UNKNOWN;
  event->fd = args ? args->fd : -1;
  event->seq_start = seq_start;

  __u32 payload_bytes = 0;
  __u32 wanted = length - skip;
  if (wanted > max_payload_bytes) wanted = max_payload_bytes;
  if (args && args->io_call != FT_IO_UNKNOWN && wanted > 0)
    payload_bytes = copy_payload(scratch, args, skip, wanted);
  else if (!args || args->io_call == FT_IO_UNKNOWN)
    count(FT_CTR_SKIPPED_UNSUPPORTED, 1);
  if (skip) count(FT_CTR_PAYLOAD_SKIPPED_BYTES, skip);
  if (payload_bytes < length - skip && args && args->io_call != FT_IO_UNKNOWN)
    count(FT_CTR_PAYLOAD_TRUNCATED, 1);
  event->payload_bytes = payload_bytes;

  __u64 event_bytes = sizeof(*event) + (payload_bytes & (2 * FT_MAX_PAYLOAD - 1));
  if (bpf_ringbuf_output(&events, event, event_bytes, wakeup_flags(RINGBUF_RECORD_BYTES(event_bytes), false)))
    count(FT_CTR_DROP_RINGBUF_FULL, 1);
  else
    count(FT_CTR_DATA_EVENTS, 1);
}

#endif
