/* One no-op program per hook family, for `flowtracer check` and start-up probing: the
 * agent loads and attaches each alone to learn what this kernel allows. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/sock_send_length")
int BPF_PROG(probe_socket_tracepoints, struct sock *sk, int ret, int flags) { return 0; }

SEC("tracepoint/syscalls/sys_enter_write")
int probe_syscall_tracepoints(void *ctx) { return 0; }

SEC("raw_tp/inet_sock_set_state")
int probe_raw_tracepoints(void *ctx) { return 0; }

SEC("kprobe/tcp_sendmsg")
int probe_kprobes(void *ctx) { return 0; }

SEC("fentry/tcp_sendmsg")
int BPF_PROG(probe_fentry, struct sock *sk) { return 0; }

SEC("uprobe")
int probe_uprobes(void *ctx) { return 0; }

SEC("sockops")
int probe_sock_ops(struct bpf_sock_ops *ops) { return 1; }

SEC("tc")
int probe_tc(struct __sk_buff *skb) { return 0; /* TC_ACT_OK */ }

SEC("cgroup_skb/egress")
int probe_cgroup_skb(struct __sk_buff *skb) { return 1; }

char LICENSE[] SEC("license") = "GPL";
