#include "server/service/engine_worker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace attnscope::service {

EngineWorker::EngineWorker(int queue_length, int workers, std::string waits_for,
                           std::string workers_key)
    : queue_length_(queue_length),
      workers_(std::max(1, workers)),
      waits_for_(std::move(waits_for)),
      workers_key_(std::move(workers_key)) {
  for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { Run(); });
}

EngineWorker::~EngineWorker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  has_work_.notify_all();
  for (std::thread& thread : threads_) thread.join();
}

absl::Status EngineWorker::Submit(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Jobs that idle workers have not picked up yet are about to run, not waiting.
    const int idle = workers_ - running_jobs_;
    const int waiting = std::max(0, static_cast<int>(jobs_.size()) + 1 - idle);
    if (waiting > queue_length_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the server is busy: ", queue_length_, " requests already wait for ",
                       waits_for_, " (queue_length = ", queue_length_, ", ", workers_key_, " = ",
                       workers_, "); retry later"));
    }
    jobs_.push_back(std::move(job));
  }
  has_work_.notify_one();
  return absl::OkStatus();
}

int EngineWorker::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(jobs_.size());
}

int EngineWorker::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_jobs_;
}

void EngineWorker::Run() {
  while (true) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      has_work_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping with nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
      ++running_jobs_;
    }
    job();
    job = nullptr;  // the job's captures (the request's state) go before it counts as done
    std::lock_guard<std::mutex> lock(mutex_);
    --running_jobs_;
  }
}

}  // namespace attnscope::service
