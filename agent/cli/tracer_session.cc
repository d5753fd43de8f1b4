#include "agent/cli/tracer_session.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include <spdlog/spdlog.h>

#include "agent/cli/commands.h"
#include "agent/loader/reader_priority.h"
#include "agent/loader/ring_size.h"

namespace flowtracer::cli {

void AddSessionFlags(CLI::App* command, SessionOptions* options) {
  command->add_option("-d,--duration", options->duration,
                      "How long to trace: 30s, 2m, 500ms; 0 runs until Ctrl-C")
      ->capture_default_str();
  command->add_option("-p,--pid", options->pids, "Trace only these processes (repeatable)");
  command->add_option("--port", options->ports, "Trace only connections with this local or remote port (repeatable)");
  command->add_option("--hooks", options->hooks,
                      "Data hooks: auto (cheapest that works), socket, or syscall")
      ->check(CLI::IsMember({"auto", "socket", "syscall"}))
      ->capture_default_str();
  command->add_option("--max-payload-bytes", options->max_payload_bytes,
                      "Bytes copied from each read/write (headers need up to 16384)")
      ->check(CLI::Range(64u, static_cast<unsigned>(FT_MAX_PAYLOAD)))
      ->capture_default_str();
  command->add_option("--ring-buffer-mb", options->ring_buffer_mb,
                      "Kernel-to-agent ring buffer in MiB, a power of two (1..1024), resident all along; "
                      "0: 2 MiB per CPU, 4 to 64")
      ->check(RingBufferMb())
      ->capture_default_str();
}

CLI::Validator RingBufferMb() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        uint64_t mb = 0;
        auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), mb);
        if (error != std::errc() || end != text.data() + text.size() || !loader::ValidRingBufferMb(mb))
          return "'" + text + "' is not 0 or a power of two from 1 to 1024";
        return "";
      },
      "0 or a power of two 1..1024");
}

bool ParseDuration(const std::string& text, uint64_t* duration_ns) {
  double value = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  auto [rest, error] = std::from_chars(begin, end, value);
  if (error != std::errc() || value < 0) return false;
  std::string_view unit(rest, end - rest);
  double scale;
  if (unit.empty() || unit == "s") scale = 1e9;
  else if (unit == "ms") scale = 1e6;
  else if (unit == "m") scale = 60e9;
  else if (unit == "h") scale = 3600e9;
  else return false;
  *duration_ns = static_cast<uint64_t>(value * scale);
  return true;
}

uint64_t MonotonicNowNs() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec * 1000000000ull + now.tv_nsec;
}

int64_t MonotonicToUnixOffsetNs() {
  timespec real{}, mono{};
  clock_gettime(CLOCK_REALTIME, &real);
  clock_gettime(CLOCK_MONOTONIC, &mono);
  return (real.tv_sec - mono.tv_sec) * 1000000000ll + (real.tv_nsec - mono.tv_nsec);
}

std::string CounterName(int counter) {
  switch (counter) {
    case FT_CTR_DATA_EVENTS: return "data_events";
    case FT_CTR_CONN_EVENTS: return "connection_events";
    case FT_CTR_DROP_RINGBUF_FULL: return "lost_ring_buffer_full";
    case FT_CTR_DROP_CONN_MAP_FULL: return "lost_connection_table_full";
    case FT_CTR_DROP_READ_USER: return "lost_user_memory_unreadable";
    case FT_CTR_PAYLOAD_TRUNCATED: return "payload_truncated";
    case FT_CTR_SKIPPED_UNSUPPORTED: return "unsupported_io_calls";
    case FT_CTR_DROP_STASH_MAP_FULL: return "lost_syscall_stash_full";
    case FT_CTR_PAYLOAD_SKIPPED_BYTES: return "body_bytes_not_copied";
  }
  return "counter_" + std::to_string(counter);
}

bool IsLossCounter(int counter) {
  return counter == FT_CTR_DROP_RINGBUF_FULL || counter == FT_CTR_DROP_CONN_MAP_FULL ||
         counter == FT_CTR_DROP_READ_USER || counter == FT_CTR_DROP_STASH_MAP_FULL;
}

int RunSession(const SessionOptions& options, SessionCallbacks callbacks, loader::CounterValues* counters) {
  uint64_t duration_ns = 0;
  if (!ParseDuration(options.duration, &duration_ns)) {
    spdlog::error("--duration '{}' is not a duration: use e.g. 30s, 2m or 500ms (0 runs until Ctrl-C)",
                  options.duration);
    return 2;
  }
  loader::SocketTracerOptions tracer_options;
  tracer_options.pids = options.pids;
  tracer_options.ports = options.ports;
  tracer_options.max_payload_bytes = options.max_payload_bytes;
  // Past 4 GiB it would wrap to a valid size: left invalid for SocketTracer to refuse.
  tracer_options.ring_buffer_bytes =
      static_cast<uint32_t>(std::min<uint64_t>(uint64_t{options.ring_buffer_mb} << 20, UINT32_MAX));
  if (options.hooks != "auto") tracer_options.force_hooks = loader::ParseHookFamily(options.hooks);

  std::string error;
  auto tracer = loader::SocketTracer::Start(tracer_options, callbacks.on_record, &error);
  if (!tracer) {
    spdlog::error("{}", error);
    return 1;
  }
  if (callbacks.on_started) callbacks.on_started(*tracer);

  // This thread reads and processes the ring from here on: it yields the CPU to the traced
  // programs unless the ring fills (reader_priority.h). Threads started before keep theirs.
  std::string why_not;
  auto priority = loader::ReaderPriority::Start(
      gettid(), tracer->ring_buffer_fd(), tracer->ring_buffer_bytes(),
      [&tracer] { return tracer->ring_buffer_queued_bytes(); }, &why_not);
  if (priority) spdlog::debug("ring reader: SCHED_IDLE, raised while an eighth of the ring waits or when it stalls");
  else spdlog::info("{}", why_not);

  uint64_t start_ns = MonotonicNowNs();
  uint64_t next_tick_ns = start_ns + 1000000000ull;
  int read_interval_ms = loader::SocketTracer::kReadIntervalMs;
  while (!StopRequested()) {
    int polled = tracer->Poll(read_interval_ms);
    if (polled < 0 && polled != -EINTR) {
      spdlog::error("reading the ring buffer failed: {}", strerror(-polled));
      return 1;
    }
    read_interval_ms = polled > 0 ? loader::SocketTracer::kReadIntervalMs : loader::SocketTracer::kIdleReadIntervalMs;
    if (priority) priority->ReaderAlive();
    if (callbacks.on_batch_end) callbacks.on_batch_end();
    uint64_t now = MonotonicNowNs();
    if (callbacks.on_tick && now >= next_tick_ns) {
      callbacks.on_tick(now);
      next_tick_ns = now + 1000000000ull;
    }
    if (duration_ns && now - start_ns >= duration_ns) break;
  }
  if (priority) {
    spdlog::debug("ring reader: raised to normal priority {} times (the ring filling, or the reader stalled)",
                  priority->raises());
    priority.reset();  // what is left is read at normal priority
  }
  // Events already queued belong to the capture (bounded: traffic may not stop).
  for (int round = 0; round < 100 && tracer->Poll(0) > 0; ++round) {
  }
  if (callbacks.on_batch_end) callbacks.on_batch_end();
  // Said plainly when it came within half of full: the size to raise (--ring-buffer-mb).
  const uint64_t ring_peak = tracer->ring_buffer_peak_queued_bytes(), ring_size = tracer->ring_buffer_bytes();
  spdlog::log(ring_peak * 2 >= ring_size ? spdlog::level::info : spdlog::level::debug,
              "ring buffer: at most {} KiB of its {} KiB waited to be read (--ring-buffer-mb sets its size)",
              ring_peak >> 10, ring_size >> 10);
  loader::CounterValues values = tracer->ReadCounters();
  for (int i = 0; i < FT_CTR_MAX; ++i) {
    if (IsLossCounter(i) && values[i]) spdlog::warn("kernel: {} = {}", CounterName(i), values[i]);
  }
  if (counters) *counters = values;
  return 0;
}

}  // namespace flowtracer::cli
