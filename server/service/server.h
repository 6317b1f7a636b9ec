// The process around the service: listening socket (TLS when configured), health
// (grpc.health.v1, NOT_SERVING until the model is loaded and warmed, and while draining),
// server reflection, model loading, and drain with a grace period.
#pragma once

#include <grpcpp/server.h>

#include <memory>

#include "absl/status/statusor.h"
#include "server/service/server_config.h"
#include "server/service/service.h"

namespace attnscope::service {

class AttnScopeServer {
 public:
  // Binds config.listen ("HOST:0" picks a free port) and starts serving health NOT_SERVING.
  static absl::StatusOr<std::unique_ptr<AttnScopeServer>> Start(const ServerConfig& config);
  ~AttnScopeServer();

  // Loads config.model_dir, warms the engine up, then reports SERVING.
  absl::Status LoadModel();
  // Only the loading part (the command line loads before it binds the port, so that a broken
  // model never opens one). Errors name the file.
  static absl::StatusOr<std::unique_ptr<session::LoadedModel>> LoadModelFor(
      const ServerConfig& config);
  // Same with an already loaded model (tests).
  absl::Status ServeModel(std::unique_ptr<session::LoadedModel> model);

  // Stops admitting requests (UNAVAILABLE), reports NOT_SERVING, waits for in-flight requests
  // up to drain_grace_seconds, then cancels what remains and shuts the server down.
  void Drain();

  int port() const { return port_; }
  AttnScopeService& service() { return *service_; }

 private:
  AttnScopeServer() = default;
  void SetServing(bool serving);

  ServerConfig config_;
  std::unique_ptr<AttnScopeService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace attnscope::service
