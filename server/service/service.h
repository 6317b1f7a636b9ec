// The attnscope.v1.AttnScope gRPC service (callback API): admission (draining, model loaded,
// API key, per-key concurrency), the engine worker queue, and the streaming/analysis/tokenize
// handlers. Transport only: each handler converts the proto (server/session/request_proto.h),
// admits, calls the session library (validation, prompt, engine, report) and moves bytes.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "attnscope/v1/attnscope.grpc.pb.h"
#include "server/service/api_keys.h"
#include "server/service/engine_worker.h"
#include "server/service/in_flight.h"
#include "server/service/server_config.h"
#include "server/session/prepare.h"
#include "server/session/session.h"

namespace attnscope::service {

// What admission hands to a request: who it is and the slots it holds until it ends.
struct Admission {
  std::string request_id;
  std::string key_name;  // "anonymous" without API keys
  // Declared before the lease so that it is destroyed after it: once in_flight() reads 0, every
  // key slot is free again (a client that waits for an idle server may send at once).
  std::unique_ptr<InFlightToken> in_flight;
  KeyLease lease;
  std::chrono::steady_clock::time_point arrival;
};

class AttnScopeService final : public v1::AttnScope::CallbackService {
 public:
  AttnScopeService(ServerConfig config, ApiKeyTable keys);
  ~AttnScopeService() override;

  // Makes the model available to requests (once, after it is loaded and warmed).
  void SetModel(std::unique_ptr<session::LoadedModel> model);
  bool model_ready() const { return model_ready_.load(); }
  // From now on new requests get UNAVAILABLE, and so do the admitted ones still waiting for
  // the engine (at once); running ones continue.
  void BeginDrain();
  // drain_grace_seconds expired: every request still in flight ends with UNAVAILABLE naming
  // it. Returns how many were ended.
  int EndInFlightAfterGrace();
  int in_flight() const { return in_flight_.count(); }
  // The engine's queue (tests watch it to know when a request runs or waits).
  const EngineWorker& worker() const { return *worker_; }

  grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateWithAttention(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* AnalyzeHeads(grpc::CallbackServerContext* context,
                                         const v1::AnalyzeRequest* request,
                                         v1::AnalyzeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::GetModelInfoResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerWriteReactor<v1::ScoreResponse>* ScoreAnswers(
      grpc::CallbackServerContext* context, const v1::ScoreRequest* request) override;

 private:
  absl::StatusOr<Admission> Admit(grpc::CallbackServerContext* context);

  const ServerConfig config_;
  const ApiKeyTable keys_;
  std::unique_ptr<session::LoadedModel> model_;
  std::atomic<bool> model_ready_{false};
  std::atomic<bool> draining_{false};
  // Rate limit of the unauthenticated-refusal log line: the second it was last written and
  // the refusals not logged since.
  std::atomic<int64_t> last_unauthenticated_log_s_{0};
  std::atomic<int> unauthenticated_suppressed_{0};
  InFlightCalls in_flight_;
  std::atomic<uint64_t> next_request_number_{1};
  std::string request_id_prefix_;
  std::unique_ptr<EngineWorker> worker_;
  // Prompt preparation (server/service/prep_pool.h); its jobs submit to worker_, so it is
  // declared after it (destroyed first).
  std::unique_ptr<EngineWorker> prep_;
};

}  // namespace attnscope::service
