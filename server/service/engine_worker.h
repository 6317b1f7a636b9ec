// The threads that run the shared model, fed by one FIFO queue of bounded length: requests
// start in arrival order on the first free worker, and one that finds the queue full is
// refused at once (RESOURCE_EXHAUSTED) instead of piling up. Several workers let a request
// whose reader is slow (its stream's queue is full, so its generation waits) hold only its
// own worker while the others keep serving.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace attnscope::service {

class EngineWorker {
 public:
  // `queue_length`: requests that may wait while all workers run; `workers`: jobs that run
  // at once (>= 1). The refusal names what the requests wait for and the workers' config key.
  EngineWorker(int queue_length, int workers = 1, std::string waits_for = "the model",
               std::string workers_key = "concurrent_generations");
  ~EngineWorker();  // runs the jobs already queued, then joins

  // Queues `job`; RESOURCE_EXHAUSTED (saying the queue is full and its length) when
  // queue_length jobs already wait.
  absl::Status Submit(std::function<void()> job);

  int waiting() const;  // jobs queued, not yet picked up by a worker
  int running() const;  // jobs running now
  bool busy() const { return running() > 0; }

 private:
  void Run();

  const int queue_length_;
  const int workers_;
  const std::string waits_for_;
  const std::string workers_key_;
  mutable std::mutex mutex_;
  std::condition_variable has_work_;
  std::deque<std::function<void()>> jobs_;
  int running_jobs_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace attnscope::service
