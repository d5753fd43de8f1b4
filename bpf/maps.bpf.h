/* Every map and load-time setting the kernel programs share. Maps are __weak so each
 * program file can include this header and the static linker merges them into one. */
#ifndef FLOWTRACER_MAPS_BPF_H
#define FLOWTRACER_MAPS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "flowtracer/events.h"

/* Load-time settings (rodata), written by the agent before load. */
extern const volatile __u32 agent_tgid;          /* the agent's own pid: never traced */
extern const volatile __u32 max_payload_bytes;   /* bytes copied per call, <= FT_MAX_PAYLOAD */
extern const volatile __u8 filter_by_pid;        /* only pids in pid_filter are traced */
extern const volatile __u8 filter_by_port;       /* only local/remote ports in port_filter */
extern const volatile __u64 wakeup_data_bytes;   /* wake the agent once this much is queued (a power of two) */

/* Written by the agent (the skeleton maps .bss): bumped after every change to
 * conn_control, so a connection's cached copy of its control is known to be current. */
extern volatile __u64 control_generation;

/* Events to the agent (CONN_OPEN, CONN_CLOSE, DATA). Size set by the agent. */
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 8 * 1024 * 1024);
} events SEC(".maps") __weak;

/* Per-CPU counters indexed by enum ft_counter (losses included). */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, FT_CTR_MAX);
  __type(key, __u32);
  __type(value, __u64);
} counters SEC(".maps") __weak;

/* TCP connections in flight: socket address -> state. Entries leave at TCP_CLOSE. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, __u64);
  __type(value, struct ft_conn_state);
} conns SEC(".maps") __weak;

/* Agent's copy instructions per connection: conn_id -> control. LRU: an entry whose
 * close the agent missed (ring buffer full) ages out instead of filling the map. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, __u64);
  __type(value, struct ft_conn_control);
} conn_control SEC(".maps") __weak;

/* Pids to trace when filter_by_pid is set. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, __u32);
  __type(value, __u8);
} pid_filter SEC(".maps") __weak;

/* Ports (local or remote) to trace when filter_by_port is set. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, __u16);
  __type(value, __u8);
} port_filter SEC(".maps") __weak;

/* One event of a vectored call (readv, writev, sendmsg, recvmsg) under construction per
 * CPU: its buffers are gathered here, then copied into the ring buffer whole (flat calls
 * copy straight into their ring record). Three times the payload bound so the verifier
 * can prove that a copy at a masked offset (< FT_MAX_PAYLOAD) with a masked length
 * (< 2 * FT_MAX_PAYLOAD) fits. Only FT_MAX_PAYLOAD bytes are ever used.
 * Indexed by CPU (too large for a per-CPU map); max_entries is set to the number of
 * possible CPUs by the agent. */
struct data_event_scratch {
  struct ft_data_event event;
  __u8 payload[3 * FT_MAX_PAYLOAD];
};
_Static_assert(__builtin_offsetof(struct data_event_scratch, payload) == sizeof(struct ft_data_event),
               "the payload must follow the event header with no gap: both go out in one copy");
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct data_event_scratch);
} data_scratch SEC(".maps") __weak;

/* Syscall fallback: arguments stashed at sys_enter, keyed by pid_tgid, deleted at sys_exit. */
struct io_args {
  __u64 sk;      /* the socket (syscall fallback: resolved at enter) */
  __u64 buf;     /* buffer, iovec array or user_msghdr, by io_call */
  __u64 iovcnt;
  __s32 fd;
  __u8 io_call;  /* enum ft_io_call */
  __u8 _pad[3];
};
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, __u64);
  __type(value, struct io_args);
} io_args_stash SEC(".maps") __weak;

#endif
