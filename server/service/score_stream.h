// The ScoreAnswers stream (server side). It carries a few small messages (sweep progress after
// each batch of ablated forwards, then the result), so a plain queue without the byte
// accounting and stall cut-off of ResponseStream. The engine job holds the shared state only:
// the reactor may be gone once the call finished. StartWrite and Finish run outside the lock.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include "attnscope/v1/attnscope.grpc.pb.h"

namespace attnscope::service {

class ScoreReactor : public grpc::ServerWriteReactor<v1::ScoreResponse> {
 public:
  struct State {
    std::mutex mutex;
    ScoreReactor* reactor = nullptr;  // null once Finish was called
    std::deque<v1::ScoreResponse> queue;
    bool writing = false;
    bool closing = false;
    grpc::Status status;
    std::atomic<bool> cancelled{false};
    std::function<void(const grpc::Status&)> on_finish;  // records the status
  };

  explicit ScoreReactor(std::function<void(const grpc::Status&)> on_finish) {
    state_->reactor = this;
    state_->on_finish = std::move(on_finish);
  }
  std::shared_ptr<State> state() const { return state_; }

  // From any thread: queues a message (dropped once the call is closing).
  static void Push(std::shared_ptr<State> state, v1::ScoreResponse message) {
    ScoreReactor* writer = nullptr;
    const v1::ScoreResponse* next = nullptr;
    {
      std::lock_guard<std::mutex> lock(state->mutex);
      if (state->reactor == nullptr || state->closing) return;
      state->queue.push_back(std::move(message));
      if (state->writing) return;
      state->writing = true;
      writer = state->reactor;
      next = &state->queue.front();
    }
    writer->StartWrite(next);
  }

  // Ends the call after the queued messages (OK) or at once (an error).
  static void Close(std::shared_ptr<State> state, const grpc::Status& status) {
    ScoreReactor* finisher = nullptr;
    {
      std::lock_guard<std::mutex> lock(state->mutex);
      if (state->reactor == nullptr || state->closing) return;
      state->closing = true;
      state->status = status;
      if (!status.ok() && !state->queue.empty()) {
        // Drop what waits; the message being written (the front) must outlive its write.
        state->queue.erase(state->queue.begin() + (state->writing ? 1 : 0), state->queue.end());
      }
      if (!state->writing) finisher = TakeForFinishLocked(*state);
    }
    if (finisher != nullptr) FinishCall(*state, finisher);
  }

  void OnWriteDone(bool ok) override {
    std::shared_ptr<State> state = state_;  // Finish may end this reactor
    ScoreReactor* writer = nullptr;
    ScoreReactor* finisher = nullptr;
    const v1::ScoreResponse* next = nullptr;
    {
      std::lock_guard<std::mutex> lock(state->mutex);
      state->writing = false;
      if (!state->queue.empty()) state->queue.pop_front();
      if (!ok && !state->closing) {
        state->closing = true;
        state->status = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      }
      if (!ok) state->queue.clear();
      if (!state->queue.empty()) {
        state->writing = true;
        writer = state->reactor;
        next = &state->queue.front();
      } else if (state->closing) {
        finisher = TakeForFinishLocked(*state);
      }
    }
    if (writer != nullptr) writer->StartWrite(next);
    if (finisher != nullptr) FinishCall(*state, finisher);
  }

  void OnCancel() override {
    state_->cancelled.store(true);
    Close(state_, grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
  }
  void OnDone() override { delete this; }

 private:
  static ScoreReactor* TakeForFinishLocked(State& state) {
    ScoreReactor* reactor = state.reactor;
    state.reactor = nullptr;
    return reactor;
  }
  static void FinishCall(State& state, ScoreReactor* reactor) {
    state.on_finish(state.status);
    reactor->Finish(state.status);
  }

  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace attnscope::service
