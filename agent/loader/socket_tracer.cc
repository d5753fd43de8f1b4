#include "agent/loader/socket_tracer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>

#include "agent/loader/tracefs.h"
#include "flowtracer_bpf.skel.h"

namespace flowtracer::loader {
namespace {

bool g_libbpf_verbose = false;

int LibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  // Verifier logs arrive as one long message: format it whole.
  char* formatted = nullptr;
  if (vasprintf(&formatted, format, args) < 0) return 0;
  std::unique_ptr<char, decltype(&free)> owned(formatted, &free);
  std::string_view text(formatted);
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  if (level == LIBBPF_DEBUG) {
    if (g_libbpf_verbose) spdlog::trace("libbpf: {}", text);
  } else if (g_libbpf_verbose) {
    spdlog::debug("libbpf: {}", text);
  }
  return 0;
}

bool SectionIs(const bpf_program* program, std::string_view prefix) {
  return std::string_view(bpf_program__section_name(program)).starts_with(prefix);
}

// Data-hook programs of a family: the lifecycle program belongs to every family.
bool BelongsTo(const bpf_program* program, HookFamily family) {
  if (SectionIs(program, "raw_tp/")) return true;
  return family == HookFamily::kSocketTracepoints ? SectionIs(program, "tp_btf/")
                                                  : SectionIs(program, "tracepoint/syscalls/");
}

std::string Errno(int err) { return std::strerror(err < 0 ? -err : err); }

}  // namespace

std::string_view HookFamilyName(HookFamily family) {
  return family == HookFamily::kSocketTracepoints
             ? "socket tracepoints (tp_btf sock:sock_send_length, sock:sock_recv_length)"
             : "syscall tracepoints (syscalls:sys_{enter,exit}_{read,write,readv,writev,"
               "sendto,recvfrom,sendmsg,recvmsg})";
}

std::optional<HookFamily> ParseHookFamily(std::string_view name) {
  if (name == "socket") return HookFamily::kSocketTracepoints;
  if (name == "syscall") return HookFamily::kSyscallTracepoints;
  return std::nullopt;
}

void InstallLibbpfLogger(bool verbose) {
  g_libbpf_verbose = verbose;
  libbpf_set_print(LibbpfPrint);
}

void SocketTracer::SkeletonDeleter::operator()(flowtracer_bpf* skeleton) const {
  flowtracer_bpf__destroy(skeleton);
}
void SocketTracer::RingBufferDeleter::operator()(ring_buffer* ring) const { ring_buffer__free(ring); }

std::unique_ptr<SocketTracer> SocketTracer::Start(const SocketTracerOptions& options,
                                                  RecordHandler handler, std::string* error) {
  if (geteuid() != 0) {
    *error = "flowtracer needs root (CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo";
    return nullptr;
  }
  if (options.max_payload_bytes > FT_MAX_PAYLOAD) {
    *error = "max payload bytes must be at most " + std::to_string(FT_MAX_PAYLOAD);
    return nullptr;
  }
  // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
  rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
  setrlimit(RLIMIT_MEMLOCK, &unlimited);

  std::vector<HookFamily> candidates;
  if (options.force_hooks) {
    candidates.push_back(*options.force_hooks);
  } else {
    candidates = {HookFamily::kSocketTracepoints, HookFamily::kSyscallTracepoints};
  }

  std::string reasons;
  for (HookFamily family : candidates) {
    if (family == HookFamily::kSyscallTracepoints) {
      if (std::string tracefs_error = EnsureTracefs(); !tracefs_error.empty()) {
        reasons += std::string(HookFamilyName(family)) + ": " + tracefs_error + "; ";
        continue;
      }
    }
    std::unique_ptr<flowtracer_bpf, SkeletonDeleter> skeleton(flowtracer_bpf__open());
    if (!skeleton) {
      *error = "could not open the embedded BPF object: " + Errno(errno);
      return nullptr;
    }
    skeleton->rodata->agent_tgid = getpid();
    skeleton->rodata->max_payload_bytes = options.max_payload_bytes;
    skeleton->rodata->filter_by_pid = !options.pids.empty();
    skeleton->rodata->filter_by_port = !options.ports.empty();
    skeleton->rodata->wakeup_data_bytes = options.wakeup_data_bytes;
    bpf_map__set_max_entries(skeleton->maps.events, options.ring_buffer_bytes);
    bpf_map__set_max_entries(skeleton->maps.conns, options.max_connections);
    bpf_map__set_max_entries(skeleton->maps.conn_control, options.max_connections);
    bpf_map__set_max_entries(skeleton->maps.data_scratch, libbpf_num_possible_cpus());

    bpf_program* program;
    bpf_object__for_each_program(program, skeleton->obj) {
      bpf_program__set_autoload(program, BelongsTo(program, family));
    }

    if (int err = flowtracer_bpf__load(skeleton.get())) {
      reasons += std::string(HookFamilyName(family)) + ": load failed (" + Errno(err) + "); ";
      spdlog::debug("hooks {}: load failed: {}", HookFamilyName(family), Errno(err));
      continue;
    }
    for (uint32_t pid : options.pids) {
      uint8_t one = 1;
      bpf_map__update_elem(skeleton->maps.pid_filter, &pid, sizeof(pid), &one, sizeof(one), BPF_ANY);
    }
    for (uint16_t port : options.ports) {
      uint8_t one = 1;
      bpf_map__update_elem(skeleton->maps.port_filter, &port, sizeof(port), &one, sizeof(one), BPF_ANY);
    }
    if (int err = flowtracer_bpf__attach(skeleton.get())) {
      reasons += std::string(HookFamilyName(family)) + ": attach failed (" + Errno(err) + "); ";
      spdlog::debug("hooks {}: attach failed: {}", HookFamilyName(family), Errno(err));
      continue;
    }

    std::unique_ptr<SocketTracer> tracer(new SocketTracer());
    tracer->handler_ = std::move(handler);
    tracer->hooks_ = family;
    tracer->ring_.reset(ring_buffer__new(
        bpf_map__fd(skeleton->maps.events),
        [](void* context, void* data, size_t size) {
          static_cast<SocketTracer*>(context)->handler_(data, size);
          return 0;
        },
        tracer.get(), nullptr));
    if (!tracer->ring_) {
      *error = "could not set up the ring buffer: " + Errno(errno);
      return nullptr;
    }
    tracer->skeleton_ = std::move(skeleton);
    spdlog::info("capturing with {}", HookFamilyName(family));
    return tracer;
  }
  *error = "no hook family works on this kernel (" + reasons +
           "): run 'flowtracer check' to see what this kernel allows";
  return nullptr;
}

SocketTracer::~SocketTracer() = default;

int SocketTracer::Poll(int timeout_ms) {
  int delivered = ring_buffer__poll(ring_.get(), timeout_ms);
  if (delivered < 0) return delivered;
  // Records submitted without a wake-up (the kernel batches them) do not make epoll
  // ready: collect them on every timer tick too.
  int more = ring_buffer__consume(ring_.get());
  return more < 0 ? more : delivered + more;
}

CounterValues SocketTracer::ReadCounters() const {
  CounterValues totals{};
  int cpus = libbpf_num_possible_cpus();
  std::vector<uint64_t> per_cpu(cpus > 0 ? cpus : 1);
  for (uint32_t key = 0; key < FT_CTR_MAX; ++key) {
    if (bpf_map__lookup_elem(skeleton_->maps.counters, &key, sizeof(key), per_cpu.data(),
                             per_cpu.size() * sizeof(uint64_t), 0) == 0) {
      for (uint64_t value : per_cpu) totals[key] += value;
    }
  }
  return totals;
}

void SocketTracer::SetConnControl(uint64_t conn_id, const ft_conn_control& control) {
  bpf_map__update_elem(skeleton_->maps.conn_control, &conn_id, sizeof(conn_id), &control,
                       sizeof(control), BPF_ANY);
}

void SocketTracer::ForgetConnControl(uint64_t conn_id) {
  bpf_map__delete_elem(skeleton_->maps.conn_control, &conn_id, sizeof(conn_id), 0);
}

}  // namespace flowtracer::loader
