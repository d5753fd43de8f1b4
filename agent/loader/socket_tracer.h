// Loads the kernel programs, picks the cheapest hook family that works on this kernel,
// and delivers ring buffer records. The only place (with kernel_probe) that calls libbpf.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flowtracer/events.h"

struct flowtracer_bpf;

namespace flowtracer::loader {

enum class HookFamily { kSocketTracepoints, kSyscallTracepoints };

std::string_view HookFamilyName(HookFamily family);
// "socket", "syscall" -> family; nullopt otherwise.
std::optional<HookFamily> ParseHookFamily(std::string_view name);

struct SocketTracerOptions {
  std::vector<uint32_t> pids;    // empty: every process
  std::vector<uint16_t> ports;   // empty: every port (local or remote)
  uint32_t max_payload_bytes = FT_MAX_PAYLOAD;
  uint32_t ring_buffer_bytes = 0;  // 0: DefaultRingBufferBytes (ring_size.h)
  uint32_t max_connections = 65536;
  std::optional<HookFamily> force_hooks;  // unset: cheapest that loads and attaches
};

using CounterValues = std::array<uint64_t, FT_CTR_MAX>;
using RecordHandler = std::function<void(const void* data, size_t size)>;

// Whether this process may load eBPF programs; if not, `error` says what to do. Commands
// check it before binding their ports, so a missing privilege is what they report.
bool HasTracingPrivileges(std::string* error);

class SocketTracer {
 public:
  // How often the session reads the ring while records come, and while none do. Reading on
  // a timer rather than being woken from inside the traced calls is what keeps the agent off
  // the traced programs' latency: a wake-up is an inter-processor interrupt in the traced
  // call, and it schedules the reader right then, beside the process it traced (at 10 000
  // req/s, +250 us at p99 with a wake-up per 64 KiB, +45 us read every 20 ms).
  static constexpr int kReadIntervalMs = 10;
  static constexpr int kIdleReadIntervalMs = 100;
  // The reader is woken only once this share of the ring is queued: for bursts the ring
  // could not hold until the next timed read (the ring's size is a power of two, so this is).
  static constexpr uint32_t kWakeUpRingFraction = 8;

  // Loads and attaches. On failure returns null and sets `error` to one actionable sentence.
  static std::unique_ptr<SocketTracer> Start(const SocketTracerOptions& options,
                                             RecordHandler handler, std::string* error);
  ~SocketTracer();
  SocketTracer(const SocketTracer&) = delete;
  SocketTracer& operator=(const SocketTracer&) = delete;

  HookFamily hooks() const { return hooks_; }

  // Delivers queued records to the handler; waits up to timeout_ms when none are queued.
  // Returns records delivered, or a negative errno.
  int Poll(int timeout_ms);

  // The ring buffer's size, and the most that was waiting in it when a read began: how
  // close to full (records lost) it came.
  uint64_t ring_buffer_bytes() const;
  uint64_t ring_buffer_peak_queued_bytes() const;
  // What waits to be read now (any thread), and the ring's map, for waiting on its wake-ups.
  uint64_t ring_buffer_queued_bytes() const;
  int ring_buffer_fd() const;

  // Kernel counters summed over CPUs, indexed by enum ft_counter.
  CounterValues ReadCounters() const;

  // Tells the kernel how much of a connection to copy (see ft_conn_control).
  void SetConnControl(uint64_t conn_id, const ft_conn_control& control);
  void ForgetConnControl(uint64_t conn_id);

 private:
  SocketTracer() = default;
  void BumpControlGeneration();

  struct SkeletonDeleter {
    void operator()(flowtracer_bpf* skeleton) const;
  };
  class RingReader;

  std::unique_ptr<flowtracer_bpf, SkeletonDeleter> skeleton_;
  std::unique_ptr<RingReader> ring_;
  RecordHandler handler_;
  HookFamily hooks_ = HookFamily::kSocketTracepoints;
};

// Routes libbpf's messages to spdlog: warnings at debug level unless `verbose`.
void InstallLibbpfLogger(bool verbose);

}  // namespace flowtracer::loader
