#include "agent/loader/socket_tracer.h"

#include <linux/bpf.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstring>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>

#include "agent/loader/tracefs.h"
#include "agent/loader/ring_size.h"
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

// Reads the BPF ring buffer through its mmap'ed pages (the kernel's documented layout:
// a consumer page, a producer page, then the data pages). The data is mapped once, not
// twice as libbpf does to see wrapped records whole: a second mapping doubles the ring's
// share of the agent's RSS (8 MiB counted as 16), and the rare record that wraps is copied
// instead. Unlike libbpf's
// reader, which publishes its position after every record, it publishes once per
// batch (and every kPublishBytes): each publication is a cache line the producing CPU
// must fetch back on its next reserve, so per-record publication costs every traced
// socket call a cross-CPU miss.
class SocketTracer::RingReader {
 public:
  static constexpr uint64_t kPublishBytes = 256 * 1024;

  static std::unique_ptr<RingReader> Open(int map_fd, std::string* error) {
    std::unique_ptr<RingReader> reader(new RingReader());
    bpf_map_info info{};
    uint32_t info_size = sizeof(info);
    if (bpf_obj_get_info_by_fd(map_fd, &info, &info_size)) {
      *error = "cannot read the ring buffer's size: " + Errno(errno);
      return nullptr;
    }
    reader->page_bytes_ = sysconf(_SC_PAGESIZE);
    reader->data_bytes_ = info.max_entries;
    void* consumer = mmap(nullptr, reader->page_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
    if (consumer == MAP_FAILED) {
      *error = "cannot map the ring buffer: " + Errno(errno);
      return nullptr;
    }
    reader->consumer_page_ = consumer;
    void* producer = mmap(nullptr, reader->page_bytes_ + reader->data_bytes_, PROT_READ, MAP_SHARED,
                          map_fd, reader->page_bytes_);
    if (producer == MAP_FAILED) {
      *error = "cannot map the ring buffer: " + Errno(errno);
      return nullptr;
    }
    reader->producer_page_ = producer;
    reader->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    epoll_event event{};
    event.events = EPOLLIN;
    if (reader->epoll_fd_ < 0 || epoll_ctl(reader->epoll_fd_, EPOLL_CTL_ADD, map_fd, &event)) {
      *error = "cannot wait on the ring buffer: " + Errno(errno);
      return nullptr;
    }
    return reader;
  }

  // Ring space used by delivered records, and the part of it that data records reserved
  // by payload size class and left unused.
  uint64_t record_bytes() const { return record_bytes_; }
  uint64_t unused_class_bytes() const { return unused_class_bytes_; }
  uint64_t records() const { return records_; }
  uint64_t size_bytes() const { return data_bytes_; }
  uint64_t peak_queued_bytes() const { return peak_queued_bytes_; }
  // What waits to be read now; callable from any thread (the positions are the kernel's).
  uint64_t queued_bytes() const {
    const uint64_t produced = __atomic_load_n(static_cast<const uint64_t*>(producer_page_), __ATOMIC_ACQUIRE);
    const uint64_t consumed = __atomic_load_n(static_cast<const uint64_t*>(consumer_page_), __ATOMIC_ACQUIRE);
    return produced > consumed ? produced - consumed : 0;
  }

  ~RingReader() {
    if (consumer_page_) munmap(consumer_page_, page_bytes_);
    if (producer_page_) munmap(producer_page_, page_bytes_ + data_bytes_);
    if (epoll_fd_ >= 0) close(epoll_fd_);
  }

  // Waits up to timeout_ms for a wake-up, then reads whatever is queued.
  int Poll(int timeout_ms, const RecordHandler& handler) {
    epoll_event event;
    if (epoll_wait(epoll_fd_, &event, 1, timeout_ms) < 0 && errno != EINTR) return -errno;
    return Consume(handler);
  }

  int Consume(const RecordHandler& handler) {
    auto* consumer_pos = static_cast<uint64_t*>(consumer_page_);
    auto* producer_pos = static_cast<const uint64_t*>(producer_page_);
    const auto* data = static_cast<const uint8_t*>(producer_page_) + page_bytes_;
    const uint64_t mask = data_bytes_ - 1;
    uint64_t consumed = __atomic_load_n(consumer_pos, __ATOMIC_RELAXED);
    uint64_t published = consumed;
    const uint64_t started = consumed;
    int records = 0;
    // At most one ring's worth per call: a producer as fast as this loop would otherwise
    // keep it here for good, and the caller's once-a-second work (timeouts, the CPU
    // budget) would never run.
    while (consumed - started < data_bytes_) {
      const uint64_t produced = __atomic_load_n(producer_pos, __ATOMIC_ACQUIRE);
      peak_queued_bytes_ = std::max(peak_queued_bytes_, produced - consumed);
      if (consumed >= produced) break;
      bool busy = false;
      while (consumed < produced) {
        const auto* header = reinterpret_cast<const uint32_t*>(data + (consumed & mask));
        const uint32_t length_word = __atomic_load_n(header, __ATOMIC_ACQUIRE);
        if (length_word & BPF_RINGBUF_BUSY_BIT) {
          busy = true;  // still being written: the next poll takes it
          break;
        }
        const uint32_t length = length_word & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
        if (!(length_word & BPF_RINGBUF_DISCARD_BIT)) {
          // Headers are 8-byte aligned and never wrap; a record's data may.
          const uint64_t data_offset = ((consumed & mask) + BPF_RINGBUF_HDR_SZ) & mask;
          const uint64_t first_part = std::min<uint64_t>(length, data_bytes_ - data_offset);
          const uint8_t* record = data + data_offset;
          if (first_part != length) {
            wrapped_.assign(data + data_offset, data + data_offset + first_part);
            wrapped_.insert(wrapped_.end(), data, data + (length - first_part));
            record = wrapped_.data();
          }
          Account(record, length);
          handler(record, length);
          ++records;
        }
        consumed += (length + BPF_RINGBUF_HDR_SZ + 7) & ~uint64_t{7};
        if (consumed - published >= kPublishBytes) {
          __atomic_store_n(consumer_pos, consumed, __ATOMIC_RELEASE);
          published = consumed;
        }
      }
      if (busy) break;
    }
    if (consumed != published) __atomic_store_n(consumer_pos, consumed, __ATOMIC_RELEASE);
    return records;
  }

 private:
  RingReader() = default;
  size_t page_bytes_ = 0;
  size_t data_bytes_ = 0;
  void* consumer_page_ = nullptr;
  void* producer_page_ = nullptr;
  int epoll_fd_ = -1;
  std::vector<uint8_t> wrapped_;  // a record that wraps the end of the ring, made whole
  uint64_t records_ = 0;
  uint64_t record_bytes_ = 0;
  uint64_t peak_queued_bytes_ = 0;  // the most found waiting when a read began
  uint64_t unused_class_bytes_ = 0;

  void Account(const uint8_t* record, uint32_t length) {
    ++records_;
    record_bytes_ += (length + BPF_RINGBUF_HDR_SZ + 7) & ~uint64_t{7};
    ft_data_event event;
    if (length < sizeof(event)) return;
    std::memcpy(&event, record, sizeof(event));
    if (event.header.type == FT_EVENT_DATA && event.payload_bytes <= length - sizeof(event))
      unused_class_bytes_ += length - sizeof(event) - event.payload_bytes;
  }
};

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

bool HasTracingPrivileges(std::string* error) {
  if (geteuid() == 0) return true;
  *error = "flowtracer needs root (CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo";
  return false;
}

std::unique_ptr<SocketTracer> SocketTracer::Start(const SocketTracerOptions& options,
                                                  RecordHandler handler, std::string* error) {
  if (!HasTracingPrivileges(error)) return nullptr;
  if (options.max_payload_bytes > FT_MAX_PAYLOAD) {
    *error = "max payload bytes must be at most " + std::to_string(FT_MAX_PAYLOAD);
    return nullptr;
  }
  const uint32_t ring_buffer_bytes =
      options.ring_buffer_bytes ? options.ring_buffer_bytes : DefaultRingBufferBytes(sysconf(_SC_NPROCESSORS_ONLN));
  if (!ValidRingBufferBytes(ring_buffer_bytes)) {
    *error = "the ring buffer's size must be a power of two from 1 to 1024 MiB";
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
    skeleton->rodata->wakeup_data_bytes = ring_buffer_bytes / kWakeUpRingFraction;
    bpf_map__set_max_entries(skeleton->maps.events, ring_buffer_bytes);
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
    std::string ring_error;
    tracer->ring_ = RingReader::Open(bpf_map__fd(skeleton->maps.events), &ring_error);
    if (!tracer->ring_) {
      *error = "could not set up the ring buffer: " + ring_error;
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

SocketTracer::~SocketTracer() {
  if (ring_ && ring_->record_bytes() > 0) {
    spdlog::debug("ring buffer: {} records, {} bytes, of which {} ({:.1f}%) reserved by payload size "
                  "class and unused",
                  ring_->records(), ring_->record_bytes(), ring_->unused_class_bytes(),
                  100.0 * ring_->unused_class_bytes() / ring_->record_bytes());
  }
}

uint64_t SocketTracer::ring_buffer_bytes() const { return ring_->size_bytes(); }
uint64_t SocketTracer::ring_buffer_peak_queued_bytes() const { return ring_->peak_queued_bytes(); }
uint64_t SocketTracer::ring_buffer_queued_bytes() const { return ring_->queued_bytes(); }
int SocketTracer::ring_buffer_fd() const { return bpf_map__fd(skeleton_->maps.events); }

int SocketTracer::Poll(int timeout_ms) {
  // Records submitted without a wake-up (the kernel batches them) do not make epoll
  // ready: they are collected when the timeout ends too.
  return ring_->Poll(timeout_ms, handler_);
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
  BumpControlGeneration();
}

void SocketTracer::ForgetConnControl(uint64_t conn_id) {
  bpf_map__delete_elem(skeleton_->maps.conn_control, &conn_id, sizeof(conn_id), 0);
  BumpControlGeneration();
}

void SocketTracer::BumpControlGeneration() {
  // After the map change (a system call, so already ordered): the programs re-read their
  // connection's control once the generation they cached is stale.
  __atomic_add_fetch(&skeleton_->bss->control_generation, 1, __ATOMIC_RELEASE);
}

}  // namespace flowtracer::loader
