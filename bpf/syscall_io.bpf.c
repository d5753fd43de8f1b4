/* Data hooks, fallback family for kernels without the socket tracepoints (before 6.3):
 * per-syscall enter/exit tracepoints. They put every syscall of the host on the slow
 * tracing path, so they are used only when the socket tracepoints are unavailable. The
 * enter hook resolves the fd to a TCP socket and stashes the arguments; the exit hook
 * deletes the stash on every path and captures the bytes the call moved. */
#include "capture.bpf.h"

#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* fd -> struct sock of the current task, or null when the fd is not a socket. */
static __always_inline struct sock *socket_of_fd(int fd) {
  if (fd < 0) return 0;
  struct task_struct *task = (struct task_struct *)bpf_get_current_task();
  struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
  if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds)) return 0;
  struct file **fds = BPF_CORE_READ(fdt, fd);
  struct file *file = 0;
  if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file) return 0;
  __u16 mode = BPF_CORE_READ(file, f_inode, i_mode);
  if ((mode & S_IFMT) != S_IFSOCK) return 0;
  struct socket *sock = BPF_CORE_READ(file, private_data);
  return sock ? BPF_CORE_READ(sock, sk) : 0;
}

static __always_inline int stash_args(struct trace_event_raw_sys_enter *ctx, __u8 io_call) {
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  if (!pid_wanted(pid_tgid)) return 0;
  if ((io_call == FT_IO_RECVFROM && (ctx->args[3] & MSG_PEEK)) ||
      (io_call == FT_IO_RECVMSG && (ctx->args[2] & MSG_PEEK)))
    return 0; /* peeked bytes are read again later */
  struct sock *sk = socket_of_fd(ctx->args[0]);
  if (!sk || !is_tcp_inet(sk)) return 0;
  /* The stash keeps the socket too, so exit does not walk the fd table again. */
  struct io_args args = {};
  args.sk = (__u64)sk;
  args.fd = ctx->args[0];
  args.buf = ctx->args[1];
  args.iovcnt = ctx->args[2];
  args.io_call = io_call;
  if (bpf_map_update_elem(&io_args_stash, &pid_tgid, &args, BPF_ANY))
    count(FT_CTR_DROP_STASH_MAP_FULL, 1);
  return 0;
}

static __always_inline int capture_exit(struct trace_event_raw_sys_exit *ctx, int direction) {
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  struct io_args *stashed = bpf_map_lookup_elem(&io_args_stash, &pid_tgid);
  if (!stashed) return 0;
  struct io_args args = *stashed;
  bpf_map_delete_elem(&io_args_stash, &pid_tgid);
  if (ctx->ret <= 0) return 0;
  capture_io((struct sock *)args.sk, false, direction, ctx->ret, &args,
             FT_HOOK_SYSCALL_TRACEPOINTS, pid_tgid);
  return 0;
}

#define SYSCALL_HOOKS(name, io_call, direction)                                   \
  SEC("tracepoint/syscalls/sys_enter_" #name)                                     \
  int ft_enter_##name(struct trace_event_raw_sys_enter *ctx) {                    \
    return stash_args(ctx, io_call);                                              \
  }                                                                               \
  SEC("tracepoint/syscalls/sys_exit_" #name)                                      \
  int ft_exit_##name(struct trace_event_raw_sys_exit *ctx) {                      \
    return capture_exit(ctx, direction);                                          \
  }

SYSCALL_HOOKS(write, FT_IO_WRITE, FT_DIR_EGRESS)
SYSCALL_HOOKS(writev, FT_IO_WRITEV, FT_DIR_EGRESS)
SYSCALL_HOOKS(sendto, FT_IO_SENDTO, FT_DIR_EGRESS)
SYSCALL_HOOKS(sendmsg, FT_IO_SENDMSG, FT_DIR_EGRESS)
SYSCALL_HOOKS(read, FT_IO_READ, FT_DIR_INGRESS)
SYSCALL_HOOKS(readv, FT_IO_READV, FT_DIR_INGRESS)
SYSCALL_HOOKS(recvfrom, FT_IO_RECVFROM, FT_DIR_INGRESS)
SYSCALL_HOOKS(recvmsg, FT_IO_RECVMSG, FT_DIR_INGRESS)
