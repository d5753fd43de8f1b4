/* Connection lifecycle from sock:inet_sock_set_state (a raw tracepoint: no tracefs
 * needed). It decides each connection's role and ends its state at TCP_CLOSE. It runs
 * in softirq context for passive opens, so it records no process: the first traced
 * read or write does. Also home of the load-time settings and the license. */
#include "capture.bpf.h"

const volatile __u32 agent_tgid = 0;
const volatile __u32 max_payload_bytes = FT_MAX_PAYLOAD;
const volatile __u8 filter_by_pid = 0;
const volatile __u8 filter_by_port = 0;
const volatile __u64 wakeup_data_bytes = 0;
volatile __u64 control_generation = 0;

#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7

static __always_inline void close_conn(struct sock *sk) {
  __u64 sk_addr = (__u64)sk;
  struct ft_conn_state *state = bpf_map_lookup_elem(&conns, &sk_addr);
  if (!state) return;
  __u64 conn_id = state->conn_id;
  if (state->announced == TRACE_ANNOUNCED) {
    struct ft_conn_event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
    if (event) {
      /* The closing context may be softirq: report the owner seen at first I/O. */
      fill_header(&event->header, FT_EVENT_CONN_CLOSE, (__u64)state->pid << 32, conn_id);
      read_tuple(sk, &event->tuple);
      event->bytes_sent = state->next_position[FT_DIR_EGRESS];
      event->bytes_received = state->next_position[FT_DIR_INGRESS];
      event->role = state->role;
      __builtin_memset(event->_pad, 0, sizeof(event->_pad));
      __builtin_memset(event->comm, 0, sizeof(event->comm));
      bpf_ringbuf_submit(event, wakeup_flags(RINGBUF_RECORD_BYTES(sizeof(*event)), true));
      count(FT_CTR_CONN_EVENTS, 1);
    } else {
      count(FT_CTR_DROP_RINGBUF_FULL, 1);
    }
  }
  bpf_map_delete_elem(&conn_control, &conn_id);
  bpf_map_delete_elem(&conns, &sk_addr);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(ft_inet_sock_set_state, struct sock *sk, int old_state, int new_state) {
  if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP) return 0;
  if (new_state == TCP_SYN_SENT) {
    if ((bpf_get_current_pid_tgid() >> 32) != agent_tgid) track_conn((__u64)sk, FT_ROLE_CLIENT, BPF_ANY);
  } else if (new_state == TCP_SYN_RECV) {
    track_conn((__u64)sk, FT_ROLE_SERVER, BPF_ANY);
  } else if (new_state == TCP_CLOSE) {
    close_conn(sk);
  }
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
