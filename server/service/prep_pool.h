// Prompt preparation off gRPC's callback threads. gRPC runs every handler, and the health
// service, on a few shared callback threads: converting a request, tokenizing its text and
// rendering its chat there (seconds for a 16 MiB prompt) kept health checks, GetModelInfo and
// every other user's calls waiting. So a handler only parses and admits (key, per-key limit,
// draining) on its callback thread; the rest of its preparation runs here, on a few threads
// fed by a FIFO queue of queue_length places (a request that finds it full is refused with
// RESOURCE_EXHAUSTED), and then joins the engine's queue.
#pragma once

#include <grpcpp/support/status.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "server/service/engine_worker.h"
#include "server/service/status_util.h"

namespace attnscope::service {

// concurrent_generations + 1 threads: one API key at its default per-key limit
// (concurrent_generations) cannot hold every one of them.
std::unique_ptr<EngineWorker> MakePreparationPool(int queue_length, int concurrent_generations);

// gRPC hands a handler its request as const and owns it until the call's OnDone, which may
// come (a cancellation, a drain) while a preparation job still reads it. This moves the
// request's contents into a message the job owns, in O(1): gRPC allocates request messages
// outside any protobuf arena, so Swap exchanges pointers. The handler's copy is left empty;
// read what the handler itself needs (client_tag) before taking it.
template <typename Message>
std::shared_ptr<const Message> TakeRequest(const Message* request) {
  auto owned = std::make_shared<Message>();
  owned->Swap(const_cast<Message*>(request));
  return owned;
}

// Queues `job` on the preparation pool. An exception escaping it (std::bad_alloc under a
// memory limit, a library that throws) is logged and ends the call through `fail` with
// INTERNAL, instead of terminating the server from the pool's thread.
template <typename Job, typename Fail>
absl::Status SubmitPreparation(EngineWorker& pool, const char* method, Job job, Fail fail) {
  return pool.Submit([method, job = std::move(job), fail = std::move(fail)]() mutable {
    const grpc::Status failed = CatchAll(absl::StrCat(method, " (preparing the request)"), job);
    if (!failed.ok()) fail(failed);
  });
}

}  // namespace attnscope::service
