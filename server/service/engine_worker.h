// The one thread that runs the shared model, fed by a FIFO queue of bounded length: requests
// are served in arrival order, and one that finds the queue full is refused at once
// (RESOURCE_EXHAUSTED) instead of piling up.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "absl/status/status.h"

namespace attnscope::service {

class EngineWorker {
 public:
  // `queue_length`: requests that may wait while one runs.
  explicit EngineWorker(int queue_length);
  ~EngineWorker();  // runs the jobs already queued, then joins

  // Queues `job`; RESOURCE_EXHAUSTED (saying the queue is full and its length) when
  // queue_length jobs already wait.
  absl::Status Submit(std::function<void()> job);

  int waiting() const;
  bool busy() const;

 private:
  void Run();

  const int queue_length_;
  mutable std::mutex mutex_;
  std::condition_variable has_work_;
  std::deque<std::function<void()>> jobs_;
  bool running_job_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace attnscope::service
