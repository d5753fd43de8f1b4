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

/* Available wherever the socket tracepoints are (6.3+); only their programs use it. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

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
  /* A power of two: masks instead of two 64-bit divisions (tens of cycles each). */
  __u64 multiple = ~(wakeup_data_bytes - 1);
  return (before & multiple) != ((before + record_bytes) & multiple) ? BPF_RB_FORCE_WAKEUP
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
static __always_inline __u64 call_position(struct sock *sk, bool btf_sock,
                                           struct ft_conn_state *state, int direction,
                                           __u32 length, __u32 *seq_start_out) {
  __u32 seq_end;
  if (btf_sock) {
    /* A BTF socket cast to tcp_sock (no run-time cost): plain loads instead of a
     * probe-read helper call. */
    struct tcp_sock *tcp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
    seq_end = direction == FT_DIR_EGRESS ? tcp->write_seq : tcp->copied_seq;
  } else {
    struct tcp_sock *tcp = (struct tcp_sock *)sk;
    seq_end = direction == FT_DIR_EGRESS ? BPF_CORE_READ(tcp, write_seq)
                                         : BPF_CORE_READ(tcp, copied_seq);
  }
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

/* Copies up to `want` bytes of a vectored call's buffers (readv, writev, sendmsg, recvmsg),
 * after skipping `skip` bytes, into scratch->payload. Returns the bytes copied. */
static __always_inline __u32 copy_iov_payload(struct data_event_scratch *scratch,
                                              const struct io_args *args, __u32 skip, __u32 want) {
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

static __always_inline void fill_data_event(struct ft_data_event *event, struct ft_conn_state *state,
                                            const struct io_args *args, __u64 pid_tgid, int direction,
                                            __u32 length, __u32 skip, __u64 position,
                                            __u32 seq_start, __u8 hook) {
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
}

/* `value` limited to `limit` (an immediate) in the instruction that feeds the helper, so
 * the verifier sees the bound whatever the compiler does with earlier comparisons. */
#define FT_BOUNDED(value, limit)                                                                  \
  ({                                                                                              \
    __u64 bounded_ = (value);                                                                     \
    asm volatile("if %0 <= %1 goto +1; %0 = %1" : "+r"(bounded_) : "i"(limit));                  \
    bounded_;                                                                                     \
  })

/* Ring records of a call with one flat buffer (read, write, sendto, recvfrom) are reserved
 * at a payload capacity class and the payload copied straight into them, instead of
 * into a scratch buffer and from there into the ring (bpf_ringbuf_output). Reserve sizes
 * must be constants the verifier knows, hence classes: steps of 16 bytes up to 256, of 64
 * up to 512, then four per doubling. The unused tail of a record is under 16 bytes up to
 * 256 bytes of payload, under 64 up to 512 and under a quarter of the payload above (the
 * reader takes payload_bytes from the event, not from the record's length, and reports
 * the unused share at exit). */
#define FT_FLAT_CLASS(capacity)                                                                   \
  if (wanted <= (capacity)) {                                                                     \
    record_bytes = RINGBUF_RECORD_BYTES(sizeof(struct ft_data_event) + (capacity));               \
    event = bpf_ringbuf_reserve(&events, sizeof(struct ft_data_event) + (capacity), 0);           \
    if ((capacity) > 0 && event)                                                                  \
      read_failed = bpf_probe_read_user(event + 1, FT_BOUNDED(wanted, capacity), source);         \
  } else

/* Reserves the record for `wanted` payload bytes and copies them from `source`. Null when
 * the ring buffer is full; *read_failed when user memory could not be read. */
static __always_inline struct ft_data_event *reserve_flat(__u32 wanted, const void *source,
                                                          __u64 *record_bytes_out,
                                                          long *read_failed_out) {
  struct ft_data_event *event = 0;
  __u64 record_bytes = 0;
  long read_failed = 0;
  FT_FLAT_CLASS(0)
  FT_FLAT_CLASS(16) FT_FLAT_CLASS(32) FT_FLAT_CLASS(48) FT_FLAT_CLASS(64)
  FT_FLAT_CLASS(80) FT_FLAT_CLASS(96) FT_FLAT_CLASS(112) FT_FLAT_CLASS(128)
  FT_FLAT_CLASS(144) FT_FLAT_CLASS(160) FT_FLAT_CLASS(176) FT_FLAT_CLASS(192)
  FT_FLAT_CLASS(208) FT_FLAT_CLASS(224) FT_FLAT_CLASS(240) FT_FLAT_CLASS(256)
  FT_FLAT_CLASS(320) FT_FLAT_CLASS(384) FT_FLAT_CLASS(448) FT_FLAT_CLASS(512)
  FT_FLAT_CLASS(640) FT_FLAT_CLASS(768) FT_FLAT_CLASS(896) FT_FLAT_CLASS(1024)
  FT_FLAT_CLASS(1280) FT_FLAT_CLASS(1536) FT_FLAT_CLASS(1792) FT_FLAT_CLASS(2048)
  FT_FLAT_CLASS(2560) FT_FLAT_CLASS(3072) FT_FLAT_CLASS(3584) FT_FLAT_CLASS(4096)
  FT_FLAT_CLASS(5120) FT_FLAT_CLASS(6144) FT_FLAT_CLASS(7168) FT_FLAT_CLASS(8192)
  FT_FLAT_CLASS(10240) FT_FLAT_CLASS(12288) FT_FLAT_CLASS(14336)
  FT_FLAT_CLASS(FT_MAX_PAYLOAD) {}
  *record_bytes_out = record_bytes;
  *read_failed_out = read_failed;
  return event;
}
_Static_assert(FT_MAX_PAYLOAD == 16384, "reserve_flat's classes end at FT_MAX_PAYLOAD");

/* One traced read or write of `length` bytes on a TCP socket. `args` is null when the
 * call that moved the bytes is not one we can decode. `btf_sock`: `sk` is a pointer the
 * verifier knows the type of (tp_btf), so its fields can be loaded directly. */
static __always_inline void capture_io(struct sock *sk, bool btf_sock, int direction, __u32 length,
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
  __u64 position = call_position(sk, btf_sock, state, direction, length, &seq_start);

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
  if (skip) count(FT_CTR_PAYLOAD_SKIPPED_BYTES, skip);

  __u32 wanted = length - skip;
  if (wanted > max_payload_bytes) wanted = max_payload_bytes;
  __u8 io_call = args ? args->io_call : FT_IO_UNKNOWN;
  if (io_call == FT_IO_UNKNOWN) {
    count(FT_CTR_SKIPPED_UNSUPPORTED, 1);
    wanted = 0; /* the event still carries the call's length: the bytes are a gap */
  }

  if (io_call == FT_IO_UNKNOWN || io_call == FT_IO_WRITE || io_call == FT_IO_READ ||
      io_call == FT_IO_SENDTO || io_call == FT_IO_RECVFROM) {
    __u64 record_bytes = 0;
    long read_failed = 0;
    const void *source = args ? (const void *)(args->buf + skip) : 0;
    struct ft_data_event *event = reserve_flat(wanted, source, &record_bytes, &read_failed);
    /* A record not reserved is a lost event; its payload would have been truncated by
     * max_payload_bytes alike, and that is still counted. */
    if (!event) {
      count(FT_CTR_DROP_RINGBUF_FULL, 1);
      if (io_call != FT_IO_UNKNOWN && wanted < length - skip) count(FT_CTR_PAYLOAD_TRUNCATED, 1);
      return;
    }
    fill_data_event(event, state, args, pid_tgid, direction, length, skip, position, seq_start,
                    hook);
    __u32 payload_bytes = wanted;
    if (read_failed) {
      count(FT_CTR_DROP_READ_USER, 1);
      payload_bytes = 0;
    }
    event->payload_bytes = payload_bytes;
    if (io_call != FT_IO_UNKNOWN && payload_bytes < length - skip) count(FT_CTR_PAYLOAD_TRUNCATED, 1);
    bpf_ringbuf_submit(event, wakeup_flags(record_bytes, true));
    count(FT_CTR_DATA_EVENTS, 1);
    return;
  }

  /* Vectored calls: the buffers land at offsets the verifier cannot bound against a
   * reserved record, so they are gathered in the per-CPU scratch and copied out whole. */
  __u32 cpu = bpf_get_smp_processor_id();
  struct data_event_scratch *scratch = bpf_map_lookup_elem(&data_scratch, &cpu);
  if (!scratch) return;
  struct ft_data_event *event = &scratch->event;
  fill_data_event(event, state, args, pid_tgid, direction, length, skip, position, seq_start, hook);
  __u32 payload_bytes = wanted > 0 ? copy_iov_payload(scratch, args, skip, wanted) : 0;
  if (payload_bytes < length - skip) count(FT_CTR_PAYLOAD_TRUNCATED, 1);
  event->payload_bytes = payload_bytes;

  __u64 event_bytes = sizeof(*event) + (payload_bytes & (2 * FT_MAX_PAYLOAD - 1));
  if (bpf_ringbuf_output(&events, event, event_bytes, wakeup_flags(RINGBUF_RECORD_BYTES(event_bytes), false)))
    count(FT_CTR_DROP_RINGBUF_FULL, 1);
  else
    count(FT_CTR_DATA_EVENTS, 1);
}

#endif
