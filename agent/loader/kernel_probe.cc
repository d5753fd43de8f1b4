#include "agent/loader/kernel_probe.h"

#include <fcntl.h>
#include <net/if.h>
#include <sys/mount.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "agent/loader/tracefs.h"
#include "flowtracer_probes.skel.h"

extern "C" __attribute__((noinline, used)) void flowtracer_uprobe_probe_target() {
  asm volatile("" ::: "memory");
}

namespace flowtracer::loader {
namespace {

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string ErrnoText(int err) {
  err = err < 0 ? -err : err;
  std::string name;
  switch (err) {
    case EPERM: name = "EPERM"; break;
    case EACCES: name = "EACCES"; break;
    case ENOENT: name = "ENOENT"; break;
    case EINVAL: name = "EINVAL"; break;
    case EOPNOTSUPP: name = "EOPNOTSUPP"; break;
    case 524: name = "ENOTSUPP"; break;  // kernel-internal, leaks to BPF callers
    default: name = "errno " + std::to_string(err);
  }
  return name + ": " + std::strerror(err);
}

// Lockdown lives in securityfs; mount it read-only to look when it is missing.
std::string ReadLockdown() {
  const char* path = "/sys/kernel/security/lockdown";
  if (access(path, R_OK) != 0) mount("securityfs", "/sys/kernel/security", "securityfs", MS_RDONLY, nullptr);
  std::string line = ReadFirstLine(path);
  if (line.empty()) return "unknown (securityfs not readable; the kernel may lack CONFIG_SECURITY_LOCKDOWN_LSM)";
  // "none [integrity] confidentiality": the bracketed word is in force.
  auto open = line.find('['), close = line.find(']');
  if (open != std::string::npos && close != std::string::npos && close > open)
    return line.substr(open + 1, close - open - 1);
  return line;
}

std::string ReadCapabilities(bool* has_bpf) {
  std::ifstream status("/proc/self/status");
  std::string line;
  uint64_t effective = 0;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) == 0) effective = std::stoull(line.substr(7), nullptr, 16);
  }
  struct Cap { int bit; const char* name; };
  const Cap caps[] = {{21, "CAP_SYS_ADMIN"}, {38, "CAP_PERFMON"}, {39, "CAP_BPF"},
                      {12, "CAP_NET_ADMIN"}, {19, "CAP_SYS_PTRACE"}};
  std::string out;
  for (const Cap& cap : caps) {
    if (effective & (1ull << cap.bit)) out += (out.empty() ? "" : " ") + std::string(cap.name);
  }
  bool sys_admin = effective & (1ull << 21);
  *has_bpf = sys_admin || ((effective & (1ull << 39)) && (effective & (1ull << 38)));
  return out.empty() ? "none of CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON" : out;
}

struct ProbeSkeleton {
  flowtracer_probes* skeleton = nullptr;
  ~ProbeSkeleton() { flowtracer_probes__destroy(skeleton); }
};

using Attacher = std::function<std::string(bpf_program*, bpf_link** link)>;

// Loads `program_name` alone and attaches it with `attach`; records the outcome.
HookProbe Probe(const std::string& family, const char* program_name, const Attacher& attach) {
  HookProbe result;
  result.family = family;
  ProbeSkeleton probe;
  probe.skeleton = flowtracer_probes__open();
  if (!probe.skeleton) {
    result.detail = "could not open the probe object (" + ErrnoText(errno) + ")";
    return result;
  }
  bpf_program* target = nullptr;
  bpf_program* program;
  bpf_object__for_each_program(program, probe.skeleton->obj) {
    bool wanted = std::strcmp(bpf_program__name(program), program_name) == 0;
    bpf_program__set_autoload(program, wanted);
    if (wanted) target = program;
  }
  if (int err = flowtracer_probes__load(probe.skeleton)) {
    result.detail = "refused at load (" + ErrnoText(err) + ")";
    return result;
  }
  result.loads = true;
  bpf_link* link = nullptr;
  std::string failure = attach(target, &link);
  if (failure.empty()) {
    result.attaches = true;
    bpf_link__destroy(link);
  } else {
    result.detail = failure;
  }
  return result;
}

std::string AttachDefault(bpf_program* program, bpf_link** link) {
  *link = bpf_program__attach(program);
  if (*link) return "";
  int err = errno;
  // Without CONFIG_KPROBES the kernel has no kprobe PMU and tracefs no kprobe_events.
  if (std::string_view(bpf_program__section_name(program)).starts_with("kprobe") &&
      access("/sys/bus/event_source/devices/kprobe", F_OK) != 0 &&
      access((TracefsPath() + "/kprobe_events").c_str(), F_OK) != 0)
    return "kernel has no kprobe support (built without CONFIG_KPROBES)";
  return "attach failed (" + ErrnoText(err) + ")";
}

// The cgroup2 mount: /sys/fs/cgroup on unified hosts, elsewhere (e.g. .../unified) on
// hybrid ones.
std::string CgroupV2Root() {
  std::ifstream mounts("/proc/self/mounts");
  std::string device, path, type;
  std::string rest;
  while (mounts >> device >> path >> type && std::getline(mounts, rest)) {
    if (type == "cgroup2") return path;
  }
  return "";
}

std::string AttachToRootCgroup(bpf_program* program, bpf_link** link) {
  std::string root = CgroupV2Root();
  if (root.empty()) return "no cgroup v2 hierarchy is mounted";
  int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return "cannot open " + root + " (" + ErrnoText(errno) + ")";
  *link = bpf_program__attach_cgroup(program, fd);
  int err = errno;
  close(fd);
  if (!*link) return "attach to the root cgroup failed (" + ErrnoText(err) + ")";
  return "";
}

std::string AttachUprobeToSelf(bpf_program* program, bpf_link** link) {
  LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = "flowtracer_uprobe_probe_target");
  *link = bpf_program__attach_uprobe_opts(program, getpid(), "/proc/self/exe", 0, &opts);
  if (!*link) return "attach to a function of this binary failed (" + ErrnoText(errno) + ")";
  flowtracer_uprobe_probe_target();
  return "";
}

// TC on loopback: creates the clsact qdisc only if absent, and removes only what it made.
std::string AttachTcToLoopback(bpf_program* program, bpf_link**) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(if_nametoindex("lo")),
              .attach_point = BPF_TC_INGRESS);
  int err = bpf_tc_hook_create(&hook);
  bool created = err == 0;
  if (err && err != -EEXIST) return "could not add a clsact qdisc on lo (" + ErrnoText(err) + ")";
  LIBBPF_OPTS(bpf_tc_opts, tc, .prog_fd = bpf_program__fd(program));
  err = bpf_tc_attach(&hook, &tc);
  std::string failure;
  if (err) {
    failure = "attach to lo ingress failed (" + ErrnoText(err) + ")";
  } else {
    tc.flags = tc.prog_fd = tc.prog_id = 0;
    bpf_tc_detach(&hook, &tc);
  }
  if (created) {
    hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
    bpf_tc_hook_destroy(&hook);
  }
  return failure;
}

}  // namespace

KernelFacts ReadKernelFacts() {
  KernelFacts facts;
  utsname uts{};
  if (uname(&uts) == 0) facts.kernel_release = uts.release;
  facts.btf = access("/sys/kernel/btf/vmlinux", R_OK) == 0;
  facts.lockdown = ReadLockdown();
  facts.root = geteuid() == 0;
  bool has_bpf = false;
  facts.capabilities = ReadCapabilities(&has_bpf);
  facts.cgroup_v2_root = CgroupV2Root();
  std::string tracefs_error = EnsureTracefs();
  facts.tracefs = tracefs_error.empty() ? TracefsPath() : tracefs_error;
  return facts;
}

std::vector<HookProbe> ProbeHookFamilies() {
  std::vector<HookProbe> probes;
  probes.push_back(Probe("socket tracepoints (tp_btf sock:sock_send_length)",
                         "probe_socket_tracepoints", AttachDefault));
  probes.push_back(Probe("syscall tracepoints (syscalls:sys_enter_write)",
                         "probe_syscall_tracepoints", AttachDefault));
  probes.push_back(Probe("raw tracepoints (sock:inet_sock_set_state)", "probe_raw_tracepoints",
                         AttachDefault));
  probes.push_back(Probe("kprobes (tcp_sendmsg)", "probe_kprobes", AttachDefault));
  probes.push_back(Probe("fentry (tcp_sendmsg)", "probe_fentry", AttachDefault));
  probes.push_back(Probe("uprobes", "probe_uprobes", AttachUprobeToSelf));
  probes.push_back(Probe("sock_ops (root cgroup)", "probe_sock_ops", AttachToRootCgroup));
  probes.push_back(Probe("TC (clsact on lo)", "probe_tc", AttachTcToLoopback));
  probes.push_back(Probe("cgroup skb (root cgroup)", "probe_cgroup_skb", AttachToRootCgroup));
  return probes;
}

}  // namespace flowtracer::loader
