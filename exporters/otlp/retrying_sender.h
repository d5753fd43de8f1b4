// Sends one serialized request through a Transport, retrying retryable failures with
// exponential backoff and jitter, or after the receiver's Retry-After. Signal-agnostic: the
// span and metrics exporters both use it. Waits end early when the deadline moves closer
// (shutdown).
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <random>

#include "exporters/otlp/transport.h"

namespace flowtracer::exporters::otlp {

struct RetryPolicy {
  uint32_t max_attempts = 5;
  uint64_t initial_backoff_ms = 1000;
  uint64_t max_backoff_ms = 5000;
  uint64_t max_retry_after_ms = 30000;
  uint64_t timeout_ms = 10000;  // per attempt
};

struct SendOutcome {
  SendResult last;         // the final attempt's result
  uint32_t attempts = 0;
  uint32_t failed_attempts = 0;
};

class RetryingSender {
 public:
  using Clock = std::chrono::steady_clock;

  RetryingSender(std::unique_ptr<Transport> transport, RetryPolicy policy);

  SendOutcome Send(RequestPieces request);

  // No attempt starts, and no wait lasts, past `deadline`. Wakes a waiting Send.
  void SetDeadline(Clock::time_point deadline);

  bool DeadlinePassed() {
    std::lock_guard lock(mutex_);
    return Clock::now() >= deadline_;
  }

  // The delay before attempt `attempt` + 1 (attempt counts from 1), before jitter.
  static uint64_t BackoffMs(const RetryPolicy& policy, uint32_t attempt);

  Transport& transport() { return *transport_; }

 private:
  std::unique_ptr<Transport> transport_;
  RetryPolicy policy_;
  std::mutex mutex_;
  std::condition_variable wake_;
  Clock::time_point deadline_ = Clock::time_point::max();
  std::minstd_rand random_{std::random_device{}()};
};

}  // namespace flowtracer::exporters::otlp
