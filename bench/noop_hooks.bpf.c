/* The floor: programs that do nothing, on the hooks flowtracer attaches to. What they
 * cost is what any tracer on these hooks pays before doing any work; bench/noop_hooks
 * loads one family of them so benchmarks can measure that cost beside the agent's. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/* Socket tracepoints (the agent's preferred data hooks) and the lifecycle hook. */
SEC("tp_btf/sock_send_length")
int BPF_PROG(noop_sock_send_length, struct sock *sk, int ret, int flags) { return 0; }

SEC("tp_btf/sock_recv_length")
int BPF_PROG(noop_sock_recv_length, struct sock *sk, int ret, int flags) { return 0; }

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(noop_inet_sock_set_state, struct sock *sk, int old_state, int new_state) { return 0; }

/* Syscall tracepoints (the fallback family): enter and exit of every data call. */
#define NOOP_SYSCALL(name)                                                          \
  SEC("tracepoint/syscalls/sys_enter_" #name)                                       \
  int noop_enter_##name(void *ctx) { return 0; }                                    \
  SEC("tracepoint/syscalls/sys_exit_" #name)                                        \
  int noop_exit_##name(void *ctx) { return 0; }

NOOP_SYSCALL(write)
NOOP_SYSCALL(writev)
NOOP_SYSCALL(sendto)
NOOP_SYSCALL(sendmsg)
NOOP_SYSCALL(read)
NOOP_SYSCALL(readv)
NOOP_SYSCALL(recvfrom)
NOOP_SYSCALL(recvmsg)

char LICENSE[] SEC("license") = "GPL";
