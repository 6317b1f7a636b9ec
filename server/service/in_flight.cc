#include "server/service/in_flight.h"

#include <vector>

namespace attnscope::service {

InFlightToken::~InFlightToken() {
  std::lock_guard<std::mutex> lock(calls_->mutex_);
  calls_->entries_.erase(id_);
}

void InFlightToken::SetEnd(EndFn end) {
  std::optional<grpc::Status> end_now;
  {
    std::lock_guard<std::mutex> lock(calls_->mutex_);
    auto it = calls_->entries_.find(id_);
    if (it == calls_->entries_.end()) return;
    it->second->end = end;
    if (calls_->end_all_) {
      end_now = calls_->end_all_;
    } else if (calls_->end_queued_ && !it->second->started) {
      end_now = calls_->end_queued_;
    }
  }
  if (end_now) end(*end_now);
}

void InFlightToken::MarkStarted() {
  std::lock_guard<std::mutex> lock(calls_->mutex_);
  auto it = calls_->entries_.find(id_);
  if (it != calls_->entries_.end()) it->second->started = true;
}

std::unique_ptr<InFlightToken> InFlightCalls::Add() {
  std::lock_guard<std::mutex> lock(mutex_);
  const uint64_t id = next_id_++;
  entries_.emplace(id, std::make_shared<Entry>());
  return std::make_unique<InFlightToken>(this, id);
}

int InFlightCalls::count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(entries_.size());
}

int InFlightCalls::EndQueued(const grpc::Status& status) { return End(status, true); }

int InFlightCalls::EndAll(const grpc::Status& status) { return End(status, false); }

int InFlightCalls::End(const grpc::Status& status, bool queued_only) {
  std::vector<InFlightToken::EndFn> to_end;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queued_only) {
      if (!end_queued_) end_queued_ = status;
    } else if (!end_all_) {
      end_all_ = status;
    }
    for (const auto& [id, entry] : entries_) {
      if (entry->end && !(queued_only && entry->started)) to_end.push_back(entry->end);
    }
  }
  for (const InFlightToken::EndFn& end : to_end) end(status);
  return static_cast<int>(to_end.size());
}

}  // namespace attnscope::service
