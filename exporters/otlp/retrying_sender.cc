#include "exporters/otlp/retrying_sender.h"

#include <algorithm>

namespace flowtracer::exporters::otlp {

RetryingSender::RetryingSender(std::unique_ptr<Transport> transport, RetryPolicy policy)
    : transport_(std::move(transport)), policy_(policy) {}

uint64_t RetryingSender::BackoffMs(const RetryPolicy& policy, uint32_t attempt) {
  uint64_t delay = policy.initial_backoff_ms;
  for (uint32_t i = 1; i < attempt && delay < policy.max_backoff_ms; ++i) delay *= 2;
  return std::min(delay, policy.max_backoff_ms);
}

void RetryingSender::SetDeadline(Clock::time_point deadline) {
  {
    std::lock_guard lock(mutex_);
    deadline_ = std::min(deadline_, deadline);
    transport_->SetDeadline(deadline_);
  }
  wake_.notify_all();
}

SendOutcome RetryingSender::Send(RequestPieces request) {
  SendOutcome outcome;
  for (uint32_t attempt = 1;; ++attempt) {
    Clock::time_point deadline;
    {
      std::lock_guard lock(mutex_);
      deadline = deadline_;
    }
    uint64_t timeout_ms = policy_.timeout_ms;
    if (deadline != Clock::time_point::max()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        if (attempt == 1) outcome.last = {SendResult::Outcome::kFailed, "deadline passed before sending", {}, {}};
        return outcome;
      }
      timeout_ms = std::min<uint64_t>(timeout_ms, static_cast<uint64_t>(left));
    }
    outcome.last = transport_->Send(request, timeout_ms);
    ++outcome.attempts;
    if (outcome.last.outcome == SendResult::Outcome::kSuccess) return outcome;
    ++outcome.failed_attempts;
    if (outcome.last.outcome != SendResult::Outcome::kRetryable || attempt >= policy_.max_attempts)
      return outcome;

    uint64_t delay_ms;
    if (outcome.last.retry_after_ms) {
      delay_ms = std::min(*outcome.last.retry_after_ms, policy_.max_retry_after_ms);
    } else {
      // Jitter in [50%, 100%] of the backoff, so agents restarted together spread out.
      uint64_t backoff = BackoffMs(policy_, attempt);
      delay_ms = backoff / 2 + std::uniform_int_distribution<uint64_t>(0, backoff / 2)(random_);
    }
    std::unique_lock lock(mutex_);
    Clock::time_point until = Clock::now() + std::chrono::milliseconds(delay_ms);
    // SetDeadline wakes this loop, which re-reads deadline_.
    for (Clock::time_point limit; Clock::now() < (limit = std::min(until, deadline_));)
      wake_.wait_until(lock, limit);
    if (Clock::now() >= deadline_) return outcome;
  }
}

}  // namespace flowtracer::exporters::otlp
