/* Data hooks, preferred family: the sock:sock_send_length / sock:sock_recv_length BTF
 * tracepoints fire only for socket I/O (every read/write/readv/writev/send and recv
 * variant passes through them), so unlike syscall tracepoints they cost nothing for
 * the rest of the host. The call's user buffers come from the task's saved syscall
 * registers. */
#include "capture.bpf.h"

/* Decodes the system call the task is in from its saved user registers. Unknown calls
 * (sendfile, splice, io_uring, sendmmsg, or kernel-internal socket I/O) leave
 * io_call = FT_IO_UNKNOWN: their bytes still advance the stream offset. */
static __always_inline void decode_syscall(struct io_args *args, int direction) {
  struct task_struct *task = bpf_get_current_task_btf();
  struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
  __builtin_memset(args, 0, sizeof(*args));
  args->fd = -1;
  if (task->flags & PF_KTHREAD) return;
#if defined(__TARGET_ARCH_x86)
  long nr = regs->orig_ax;
  args->fd = regs->di;
  args->buf = regs->si;
  args->iovcnt = regs->dx;
  enum { NR_READ = 0, NR_WRITE = 1, NR_READV = 19, NR_WRITEV = 20, NR_SENDTO = 44,
         NR_RECVFROM = 45, NR_SENDMSG = 46, NR_RECVMSG = 47 };
#elif defined(__TARGET_ARCH_arm64)
  long nr = regs->syscallno;
  args->fd = regs->orig_x0;
  args->buf = regs->regs[1];
  args->iovcnt = regs->regs[2];
  enum { NR_READ = 63, NR_WRITE = 64, NR_READV = 65, NR_WRITEV = 66, NR_SENDTO = 206,
         NR_RECVFROM = 207, NR_SENDMSG = 211, NR_RECVMSG = 212 };
#else
#error "flowtracer: syscall register layout not defined for this architecture"
#endif
  __u8 call = FT_IO_UNKNOWN;
  if (direction == FT_DIR_EGRESS) {
    if (nr == NR_WRITE) call = FT_IO_WRITE;
    else if (nr == NR_WRITEV) call = FT_IO_WRITEV;
    else if (nr == NR_SENDTO) call = FT_IO_SENDTO;
    else if (nr == NR_SENDMSG) call = FT_IO_SENDMSG;
  } else {
    if (nr == NR_READ) call = FT_IO_READ;
    else if (nr == NR_READV) call = FT_IO_READV;
    else if (nr == NR_RECVFROM) call = FT_IO_RECVFROM;
    else if (nr == NR_RECVMSG) call = FT_IO_RECVMSG;
  }
  args->io_call = call;
  if (call == FT_IO_UNKNOWN) args->fd = -1;
}

/* The tracepoint's socket is a BTF pointer the verifier trusts: its fields are plain
 * loads, where is_tcp_inet() pays a probe-read helper call for each (this runs on every
 * socket call of the host, traced or not). */
static __always_inline bool is_tcp_inet_btf(struct sock *sk) {
  __u16 family = sk->__sk_common.skc_family;
  if (family != AF_INET && family != AF_INET6) return false;
  return BPF_CORE_READ_BITFIELD(sk, sk_protocol) == IPPROTO_TCP;
}

static __always_inline int on_socket_io(struct sock *sk, int direction, int ret) {
  if (ret <= 0) return 0;
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  if (!pid_wanted(pid_tgid) || !is_tcp_inet_btf(sk)) return 0;
  struct io_args args;
  decode_syscall(&args, direction);
  capture_io(sk, true, direction, ret, &args, FT_HOOK_SOCKET_TRACEPOINTS, pid_tgid);
  return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(ft_sock_send_length, struct sock *sk, int ret, int flags) {
  return on_socket_io(sk, FT_DIR_EGRESS, ret);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(ft_sock_recv_length, struct sock *sk, int ret, int flags) {
  if (flags & MSG_PEEK) return 0; /* peeked bytes are read again later */
  return on_socket_io(sk, FT_DIR_INGRESS, ret);
}
