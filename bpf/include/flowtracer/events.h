/* Every struct and enum that crosses the kernel/user boundary (ring buffer records,
 * map keys and values, counters). Included by the BPF programs and by the agent;
 * the agent static_asserts sizes and offsets (agent/loader/events_layout.h).
 *
 * Rules: fixed-width types only, explicit padding, every enum value explicit and
 * append-only (a new value goes at the end, no value is ever reused). */
#ifndef FLOWTRACER_EVENTS_H
#define FLOWTRACER_EVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h> /* __u8 ... __u64, as the kernel spells them */
#endif

/* Largest payload one data event can carry. A whole 16 KiB request head fits in one
 * event; the per-run cap (max_payload_bytes) may be lower. Power of two: the BPF code
 * masks offsets with it. */
#define FT_MAX_PAYLOAD 16384
/* iovec entries of one readv/writev/sendmsg/recvmsg whose bytes are copied. */
#define FT_MAX_IOV 8
#define FT_COMM_LEN 16

enum ft_event_type {
  FT_EVENT_CONN_OPEN = 1,  /* first traced I/O on a TCP socket */
  FT_EVENT_CONN_CLOSE = 2, /* the socket reached TCP_CLOSE */
  FT_EVENT_DATA = 3,       /* one read or write on a traced socket */
};

enum ft_direction {
  FT_DIR_EGRESS = 0,  /* written by the traced process */
  FT_DIR_INGRESS = 1, /* read by the traced process */
};

enum ft_role {
  FT_ROLE_UNKNOWN = 0, /* opened before the agent started; userspace resolves it */
  FT_ROLE_CLIENT = 1,  /* active open (connect) */
  FT_ROLE_SERVER = 2,  /* passive open (accept) */
};

/* Which system call moved the bytes. */
enum ft_io_call {
  FT_IO_UNKNOWN = 0,
  FT_IO_WRITE = 1,
  FT_IO_WRITEV = 2,
  FT_IO_SENDTO = 3,
  FT_IO_SENDMSG = 4,
  FT_IO_READ = 5,
  FT_IO_READV = 6,
  FT_IO_RECVFROM = 7,
  FT_IO_RECVMSG = 8,
};

/* Which hook family produced an event. */
enum ft_hook {
  FT_HOOK_SOCKET_TRACEPOINTS = 1, /* tp_btf sock:sock_send_length / sock_recv_length */
  FT_HOOK_SYSCALL_TRACEPOINTS = 2, /* syscalls:sys_{enter,exit}_{read,write,...} */
};

/* Counters kept per CPU in the `counters` map; the agent sums and exports them.
 * FT_CTR_DROP_* values are losses: data the agent should have seen and did not. */
enum ft_counter {
  FT_CTR_DATA_EVENTS = 0,          /* data events written to the ring buffer */
  FT_CTR_CONN_EVENTS = 1,          /* open/close events written */
  FT_CTR_DROP_RINGBUF_FULL = 2,    /* an event did not fit in the ring buffer */
  FT_CTR_DROP_CONN_MAP_FULL = 3,   /* a new connection could not be tracked */
  FT_CTR_DROP_READ_USER = 4,       /* user memory could not be read (payload lost) */
  FT_CTR_PAYLOAD_TRUNCATED = 5,    /* a call moved more bytes than were copied */
  FT_CTR_SKIPPED_UNSUPPORTED = 6,  /* socket I/O from a call we cannot decode (sendfile, io_uring, ...) */
  FT_CTR_DROP_STASH_MAP_FULL = 7,  /* syscall fallback: entry arguments could not be stashed */
  FT_CTR_PAYLOAD_SKIPPED_BYTES = 8,/* body bytes not copied because userspace asked to skip them */
  FT_CTR_MAX = 9,
};

/* A TCP 4-tuple as seen from the traced process. IPv4 addresses are stored as
 * IPv4-mapped IPv6 (::ffff:a.b.c.d), so one layout serves both families. */
struct ft_tuple {
  __u8 local_addr[16];
  __u8 remote_addr[16];
  __u16 local_port;  /* host byte order */
  __u16 remote_port; /* host byte order */
  __u16 family;      /* AF_INET or AF_INET6 as the socket was created */
  __u16 _pad;
};

struct ft_event_header {
  __u32 type;         /* enum ft_event_type */
  __u32 pid;          /* thread group id (the process) */
  __u32 tid;          /* the thread that made the call */
  __u32 _pad;
  __u64 timestamp_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
  __u64 conn_id;      /* unique per connection for the life of the agent */
};

struct ft_conn_event {
  struct ft_event_header header;
  struct ft_tuple tuple;
  __u64 bytes_sent;     /* CONN_CLOSE: totals since tracking began */
  __u64 bytes_received;
  __u8 role;            /* enum ft_role */
  __u8 _pad[7];
  char comm[FT_COMM_LEN];
};

/* Data events carry no tuple or comm: CONN_OPEN, sent before a connection's first
 * data event, has them, which keeps the per-call hot path short. */
struct ft_data_event {
  struct ft_event_header header;
  __u64 position;       /* stream offset of this call's first byte, in its direction */
  __u32 length;         /* bytes the call moved (its return value) */
  __u32 payload_offset; /* payload starts at position + payload_offset (skipped body bytes) */
  __u32 payload_bytes;  /* bytes of payload[] that follow */
  __s32 fd;             /* the socket's fd in the process, -1 if unknown */
  __u8 direction;       /* enum ft_direction */
  __u8 role;            /* enum ft_role */
  __u8 io_call;         /* enum ft_io_call */
  __u8 hook;            /* enum ft_hook */
  __u32 seq_start;      /* TCP sequence number of the call's first byte: the same number at
                         * both ends of a connection, whenever the agent joined it */
  /* payload_bytes of payload follow the struct in the same record (at most
   * FT_MAX_PAYLOAD); no flexible array member, so C++ can embed the struct. */
};

/* Per-connection state in the kernel, keyed by the socket's kernel address. */
/* Per-connection state in the kernel, keyed by the socket's kernel address.
 * Stream offsets come from TCP's own sequence numbers (write_seq, copied_seq), so bytes
 * moved by calls we cannot see (splice, io_uring) still show as gaps in userspace. */
struct ft_conn_state {
  __u64 conn_id;
  __u64 next_position[2]; /* per enum ft_direction: offset just past the last traced call */
  __u32 last_seq_end[2];  /* per direction: TCP sequence number just past the last traced call */
  __u32 pid;              /* process that did the first traced I/O (0: none yet) */
  __u8 role;              /* enum ft_role */
  __u8 announced;         /* CONN_OPEN was sent */
  __u8 seen[2];           /* per direction: last_seq_end is valid */
  /* The connection's ft_conn_control as last read, valid while the agent's control
   * generation is still control_generation: most calls then skip the lookup. */
  __u64 control_generation;
  __u64 control_skip_until[2];
  __u32 control_flags;
  __u32 _pad;
};

/* Written by the agent, read by the kernel, keyed by conn_id: how much of a connection
 * to copy. */
struct ft_conn_control {
  __u64 skip_until[2];  /* per direction: do not copy bytes before this stream offset */
  __u32 flags;          /* FT_CONTROL_* */
  __u32 _pad;
};
#define FT_CONTROL_IGNORE 1u /* not a protocol we parse: count bytes, copy nothing */

#endif /* FLOWTRACER_EVENTS_H */
