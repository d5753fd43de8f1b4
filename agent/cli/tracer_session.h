// What `capture`, `agent` and `sockets` share: the flags that choose what to trace, and the
// loop that polls the kernel until the duration ends or the user stops it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "agent/conntrack/connection_tracker.h"
#include "agent/loader/socket_tracer.h"

namespace flowtracer::cli {

struct SessionOptions {
  std::string duration = "30s";  // "0" runs until Ctrl-C
  std::vector<uint32_t> pids;
  std::vector<uint16_t> ports;
  std::string hooks = "auto";    // auto | socket | syscall
  uint32_t max_payload_bytes = FT_MAX_PAYLOAD;
  uint32_t ring_buffer_mb = 0;   // 0: 2 MiB per CPU, 4 to 64 (agent/loader/ring_size.h)
};

void AddSessionFlags(CLI::App* command, SessionOptions* options);
// --ring-buffer-mb's check: 0 (the default size) or a size the kernel takes.
CLI::Validator RingBufferMb();

// "30s", "2m", "1500ms", "1h", or plain seconds; false when malformed.
bool ParseDuration(const std::string& text, uint64_t* duration_ns);

struct SessionCallbacks {
  loader::RecordHandler on_record;
  std::function<void(loader::SocketTracer&)> on_started;  // may be empty
  std::function<void(uint64_t now_monotonic_ns)> on_tick;  // about once a second
  // After each read of the ring buffer (at most 100 ms apart): the end of a batch.
  std::function<void()> on_batch_end;  // may be empty
};

// Runs the session; returns the exit status. Kernel loss counters are printed to
// stderr at the end when any is non-zero. `counters` receives their final values.
int RunSession(const SessionOptions& options, SessionCallbacks callbacks,
               loader::CounterValues* counters = nullptr);

// Forwards the tracker's copy instructions to the kernel once the tracer is running.
class TracerControl : public conntrack::KernelControl {
 public:
  void SetConnControl(uint64_t conn_id, const ft_conn_control& control) override {
    if (tracer_) tracer_->SetConnControl(conn_id, control);
  }
  void ForgetConnControl(uint64_t conn_id) override {
    if (tracer_) tracer_->ForgetConnControl(conn_id);
  }
  loader::SocketTracer* tracer_ = nullptr;
};

uint64_t MonotonicNowNs();
int64_t MonotonicToUnixOffsetNs();

std::string CounterName(int counter);
bool IsLossCounter(int counter);

}  // namespace flowtracer::cli
