// The bounded per-stream queue between the engine (producer, worker thread) and the gRPC
// write reactor (consumer, gRPC threads). One write is in flight at a time; the next message
// is written from OnWriteDone, so a slow reader delays its own producer only: Push blocks
// while the queued bytes (in-flight message included) would exceed the capacity, and gives up
// with ABORTED when no write has completed for the stall timeout.
//
// A stalled reader is cut off: the stream closes with ABORTED (the server's log line says
// why) and the RPC is cancelled server-side, freeing it at once; the client sees CANCELLED,
// because with a write pending gRPC's callback API cannot send a status any more (only an
// HTTP/2 reset reaches a client that does not read). config/server.yaml documents this.
//
// The reactor's operations are passed as functions so the queue is testable without gRPC.
#pragma once

#include <grpcpp/support/status.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>

#include "absl/status/status.h"
#include "attnscope/v1/attnscope.pb.h"

namespace attnscope::service {

class ResponseStream {
 public:
  using StartWriteFn = std::function<void(const v1::GenerateResponse*)>;
  using FinishFn = std::function<void(const grpc::Status&)>;
  // Cancels the RPC from the server side (ServerContext::TryCancel), so that a write the
  // stalled client will never accept completes (with ok = false) and the call can end.
  using CancelFn = std::function<void()>;

  ResponseStream(uint64_t capacity_bytes, std::chrono::milliseconds stall_timeout,
                 StartWriteFn start_write, FinishFn finish, CancelFn cancel = nullptr);

  // Producer: queues a message, blocking while the stream is full. CANCELLED once the
  // stream is closed (client cancelled or went away), ABORTED when the reader stalled.
  absl::Status Push(v1::GenerateResponse message);
  // Producer: OK when the stream is still open.
  absl::Status CheckOpen() const;

  // Ends the RPC: an OK status after every queued message is written; an error at once
  // (queued messages are dropped). Only the first call counts.
  void Close(const grpc::Status& status);

  // Reactor callbacks.
  void OnWriteDone(bool ok);
  void OnCancel();

  // Bytes of messages completely written.
  uint64_t bytes_written() const;
  // The status the RPC was finished with (valid once finished).
  grpc::Status final_status() const;
  bool finished() const;

 private:
  // Picks the next message to write; called with the lock held. True: caller must StartWrite.
  bool TakeNextLocked();
  // Decides whether to Finish; called with the lock held. True: caller must call finish_.
  bool ShouldFinishLocked();

  const uint64_t capacity_bytes_;
  const std::chrono::milliseconds stall_timeout_;
  StartWriteFn start_write_;
  FinishFn finish_;
  CancelFn cancel_;

  mutable std::mutex mutex_;
  std::condition_variable space_available_;
  std::deque<v1::GenerateResponse> queue_;
  v1::GenerateResponse in_flight_;
  uint64_t in_flight_bytes_ = 0;
  bool write_in_flight_ = false;
  uint64_t queued_bytes_ = 0;  // queue_ plus the in-flight message
  std::chrono::steady_clock::time_point last_progress_;
  bool closed_ = false;
  bool finished_ = false;
  bool cancelling_ = false;  // cancel_ is running: the reactor must stay alive, no Finish yet
  grpc::Status close_status_;
  uint64_t bytes_written_ = 0;
};

}  // namespace attnscope::service
