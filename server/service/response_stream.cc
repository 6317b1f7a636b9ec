#include "server/service/response_stream.h"

#include "absl/strings/str_cat.h"

namespace attnscope::service {

ResponseStream::ResponseStream(uint64_t capacity_bytes, std::chrono::milliseconds stall_timeout,
                               StartWriteFn start_write, FinishFn finish, CancelFn cancel)
    : capacity_bytes_(capacity_bytes),
      stall_timeout_(stall_timeout),
      start_write_(std::move(start_write)),
      finish_(std::move(finish)),
      cancel_(std::move(cancel)),
      last_progress_(std::chrono::steady_clock::now()) {}

absl::Status ResponseStream::CheckOpen() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!closed_) return absl::OkStatus();
  if (close_status_.error_code() == grpc::StatusCode::ABORTED) {
    return absl::AbortedError(close_status_.error_message());
  }
  return absl::CancelledError(absl::StrCat("stream closed: ", close_status_.error_message()));
}

absl::Status ResponseStream::Push(v1::GenerateResponse message) {
  const uint64_t size = message.ByteSizeLong();
  bool start = false;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!closed_ && queued_bytes_ > 0 && queued_bytes_ + size > capacity_bytes_) {
      const auto deadline = last_progress_ + stall_timeout_;
      if (std::chrono::steady_clock::now() >= deadline) {
        const std::string message_text = absl::StrCat(
            "client stopped reading: ", queued_bytes_, " bytes waited for ",
            stall_timeout_.count() / 1000.0,
            " s without a write completing (streaming.stall_timeout_seconds); stream aborted");
        closed_ = true;
        close_status_ = grpc::Status(grpc::StatusCode::ABORTED, message_text);
        for (const auto& m : queue_) queued_bytes_ -= m.ByteSizeLong();
        queue_.clear();
        if (cancel_ && write_in_flight_) {
          // The in-flight write completes only once the RPC is cancelled.
          cancelling_ = true;
          lock.unlock();
          cancel_();
          lock.lock();
          cancelling_ = false;
        }
        const bool finish = ShouldFinishLocked();
        lock.unlock();
        if (finish) finish_(close_status_);
        return absl::AbortedError(message_text);
      }
      space_available_.wait_until(lock, deadline);
    }
    if (closed_) {
      return close_status_.error_code() == grpc::StatusCode::ABORTED
                 ? absl::AbortedError(close_status_.error_message())
                 : absl::CancelledError(
                       absl::StrCat("stream closed: ", close_status_.error_message()));
    }
    queue_.push_back(std::move(message));
    queued_bytes_ += size;
    if (!write_in_flight_) {
      // The reader is keeping up: measure stalls from this write on.
      last_progress_ = std::chrono::steady_clock::now();
      start = TakeNextLocked();
    }
  }
  if (start) start_write_(&in_flight_);
  return absl::OkStatus();
}

bool ResponseStream::TakeNextLocked() {
  if (write_in_flight_ || queue_.empty() || finished_) return false;
  in_flight_ = std::move(queue_.front());
  queue_.pop_front();
  in_flight_bytes_ = in_flight_.ByteSizeLong();
  write_in_flight_ = true;
  return true;
}

bool ResponseStream::ShouldFinishLocked() {
  if (finished_ || !closed_ || write_in_flight_ || cancelling_) return false;
  if (close_status_.ok() && !queue_.empty()) return false;
  finished_ = true;
  return true;
}

void ResponseStream::OnWriteDone(bool ok) {
  bool start = false;
  bool finish = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    write_in_flight_ = false;
    queued_bytes_ -= in_flight_bytes_;
    if (ok) bytes_written_ += in_flight_bytes_;
    in_flight_bytes_ = 0;
    in_flight_.Clear();
    last_progress_ = std::chrono::steady_clock::now();
    if (!ok && !closed_) {
      closed_ = true;
      close_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    if (closed_ && !close_status_.ok()) {
      for (const auto& m : queue_) queued_bytes_ -= m.ByteSizeLong();
      queue_.clear();
    }
    start = TakeNextLocked();
    if (!start) finish = ShouldFinishLocked();
  }
  space_available_.notify_all();
  if (start) start_write_(&in_flight_);
  if (finish) finish_(close_status_);
}

void ResponseStream::Close(const grpc::Status& status) {
  bool finish = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    closed_ = true;
    close_status_ = status;
    if (!status.ok()) {
      for (const auto& m : queue_) queued_bytes_ -= m.ByteSizeLong();
      queue_.clear();
    }
    finish = ShouldFinishLocked();
  }
  space_available_.notify_all();
  if (finish) finish_(status);
}

void ResponseStream::OnCancel() {
  Close(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client (or its deadline)"));
}

uint64_t ResponseStream::bytes_written() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bytes_written_;
}

grpc::Status ResponseStream::final_status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return close_status_;
}

bool ResponseStream::finished() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return finished_;
}

}  // namespace attnscope::service
