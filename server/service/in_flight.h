// The requests admitted and not yet finished, and the one way a drain ends them
// (proto/attnscope/v1/attnscope.proto, "Drain"): once a drain begins, a request still waiting
// for the engine ends at once with UNAVAILABLE; one already running gets until
// drain_grace_seconds expires, then ends with UNAVAILABLE whose message names
// drain_grace_seconds. Each call registers how it is ended (its stream's or its unary
// reactor's finish); ending is idempotent, so a call that finished on its own is left alone.
#pragma once

#include <grpcpp/support/status.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

namespace attnscope::service {

class InFlightCalls;

// One admitted call, counted in flight while alive.
class InFlightToken {
 public:
  using EndFn = std::function<void(const grpc::Status&)>;
  InFlightToken(InFlightCalls* calls, uint64_t id) : calls_(calls), id_(id) {}
  ~InFlightToken();
  InFlightToken(const InFlightToken&) = delete;
  InFlightToken& operator=(const InFlightToken&) = delete;

  // How to finish this call with a status. If a drain already ends calls of this kind
  // (queued or all), `end` runs at once.
  void SetEnd(EndFn end);
  // The engine job picked the call up: from now on only the end of the grace period ends it.
  void MarkStarted();

 private:
  InFlightCalls* calls_;
  const uint64_t id_;
};

class InFlightCalls {
 public:
  std::unique_ptr<InFlightToken> Add();
  int count() const;
  // Ends every call whose engine job has not started, and any that registers later before
  // starting. Returns how many were ended now.
  int EndQueued(const grpc::Status& status);
  // Ends every call, and any that registers later. Returns how many were ended now.
  int EndAll(const grpc::Status& status);

 private:
  friend class InFlightToken;
  struct Entry {
    InFlightToken::EndFn end;
    bool started = false;
  };
  // Calls `end` outside the lock: finishing a call may delete its reactor, whose token then
  // removes itself.
  int End(const grpc::Status& status, bool queued_only);

  mutable std::mutex mutex_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::shared_ptr<Entry>> entries_;
  std::optional<grpc::Status> end_queued_;
  std::optional<grpc::Status> end_all_;
};

}  // namespace attnscope::service
