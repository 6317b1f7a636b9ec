#include "server/service/engine_worker.h"

#include "absl/strings/str_cat.h"

namespace attnscope::service {

EngineWorker::EngineWorker(int queue_length)
    : queue_length_(queue_length), thread_([this] { Run(); }) {}

EngineWorker::~EngineWorker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  has_work_.notify_all();
  thread_.join();
}

absl::Status EngineWorker::Submit(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // A job that the idle worker has not picked up yet is about to run, not waiting.
    const int waiting = static_cast<int>(jobs_.size()) - (running_job_ ? 0 : 1);
    if (waiting >= queue_length_) {
      return absl::ResourceExhaustedError(absl::StrCat("the server is busy: ", queue_length_,
                                                       " requests already wait for the model "
                                                       "(queue_length = ",
                                                       queue_length_, "); retry later"));
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

bool EngineWorker::busy() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_job_;
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
      running_job_ = true;
    }
    job();
    std::lock_guard<std::mutex> lock(mutex_);
    running_job_ = false;
  }
}

}  // namespace attnscope::service
