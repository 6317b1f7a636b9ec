#include "server/service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/session/prepare.h"

namespace attnscope::service {
namespace {

constexpr int kMetadataHardLimitFactor = 4;

constexpr char kServiceName[] = "attnscope.v1.AttnScope";

absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& key) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(key, ": cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(const TlsOptions& tls) {
  if (tls.cert_file.empty()) return grpc::InsecureServerCredentials();
  absl::StatusOr<std::string> cert = ReadFile(tls.cert_file, "tls.cert_file");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFile(tls.key_file, "tls.key_file");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(options);
}

}  // namespace

absl::StatusOr<std::unique_ptr<AttnScopeServer>> AttnScopeServer::Start(
    const ServerConfig& config) {
  ApiKeyTable keys;
  if (!config.auth.api_keys_file.empty()) {
    absl::StatusOr<ApiKeyTable> loaded =
        ApiKeyTable::Load(config.auth.api_keys_file, config.auth.max_concurrent_per_key > 0
                                                         ? config.auth.max_concurrent_per_key
                                                         : config.concurrent_generations);
    if (!loaded.ok()) return loaded.status();
    keys = *std::move(loaded);
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeCredentials(config.tls);
  if (!credentials.ok()) return credentials.status();

  spdlog::set_level(spdlog::level::from_str(config.log_level));
  std::unique_ptr<AttnScopeServer> server(new AttnScopeServer());
  server->config_ = config;
  server->service_ = std::make_unique<AttnScopeService>(config, std::move(keys));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen, *credentials, &server->port_);
  builder.RegisterService(server->service_.get());
  // Just above the largest request the limits admit: nothing much larger is ever parsed (a
  // gzip-compressed request counts decompressed), whoever sends it.
  const uint64_t max_request = session::MaxRequestBytes(config.limits);
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<uint64_t>(max_request, INT32_MAX)));
  const ConnectionOptions& connections = config.connections;
  grpc::ResourceQuota quota("attnscope-server");
  quota.Resize(static_cast<size_t>(connections.memory_quota_bytes));
  quota.SetMaxThreads(connections.max_threads);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             static_cast<int>(connections.idle_timeout_seconds * 1000));
  if (connections.max_age_seconds > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(connections.max_age_seconds * 1000));
    // Calls running when the age is reached get the drain grace to finish.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               static_cast<int>(config.drain_grace_seconds * 1000) + 1000);
  }
  // connections.max_metadata_bytes is checked per call (Admit: that call alone fails with
  // RESOURCE_EXHAUSTED). gRPC 1.51's own limit is a connection error (its HPACK parser
  // stops mid-block, so every call on the connection fails), so it is set 4x higher.
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE,
                             kMetadataHardLimitFactor * connections.max_metadata_bytes);
  // Stream messages are chunked below max_message_bytes (+ 1 MiB of header room); unary
  // replies are checked against limits.max_reply_bytes before they are sent.
  builder.SetMaxSendMessageSize(static_cast<int>(std::max<uint64_t>(
      config.streaming.max_message_bytes + (1 << 20), config.limits.max_reply_bytes)));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", config.listen, " (listen): address in use or invalid"));
  }
  server->SetServing(false);
  spdlog::info("listening on {} (port {}), {}, API keys {}", config.listen, server->port_,
               config.tls.cert_file.empty() ? "plaintext" : "TLS",
               config.auth.api_keys_file.empty() ? "off" : "on");
  return server;
}

AttnScopeServer::~AttnScopeServer() {
  if (!shut_down_ && server_) {
    service_->BeginDrain();
    server_->Shutdown(std::chrono::system_clock::now());
  }
  if (server_) server_->Wait();
}

void AttnScopeServer::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  health->SetServingStatus(kServiceName, serving);
}

absl::StatusOr<std::unique_ptr<session::LoadedModel>> AttnScopeServer::LoadModelFor(
    const ServerConfig& config) {
  if (config.model_dir.empty()) {
    return absl::InvalidArgumentError("model_dir is empty: set it in the config or pass --model");
  }
  EngineOptions options;
  options.model_dir = config.model_dir;
  options.device = config.device;
  options.dtype = config.dtype;
  options.layer_devices = config.layer_devices;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<session::LoadedModel>> model = session::LoadModel(options);
  if (!model.ok()) return model.status();
  if ((*model)->tokenizer == nullptr) {
    spdlog::warn("no tokenizer in {}: only token-id input will be served", options.model_dir);
  }
  spdlog::info("loaded {} ({} layers, {} heads) in {:.2f} s", config.model_dir,
               (*model)->config.num_hidden_layers, (*model)->config.num_attention_heads,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return model;
}

absl::Status AttnScopeServer::LoadModel() {
  absl::StatusOr<std::unique_ptr<session::LoadedModel>> model = LoadModelFor(config_);
  if (!model.ok()) return model.status();
  return ServeModel(*std::move(model));
}

absl::Status AttnScopeServer::ServeModel(std::unique_ptr<session::LoadedModel> model) {
  if (config_.warmup) {
    // One short generation with capture, so the first real request does not pay for lazy
    // initialisation (allocator, kernels).
    const auto start = std::chrono::steady_clock::now();
    GenerationParams params;
    params.max_new_tokens = 2;
    CaptureSpec capture;
    capture.layers = {0};
    capture.heads = {0};
    GenerationObserver discard;
    const int64_t first = model->config.bos_token_id >= 0 ? model->config.bos_token_id : 0;
    absl::StatusOr<GenerationResult> result =
        model->engine->Generate({first, 1, 2}, params, capture, &discard);
    if (!result.ok()) {
      return absl::Status(result.status().code(),
                          absl::StrCat("warm-up generation failed: ", result.status().message()));
    }
    spdlog::info("warm-up done in {:.2f} s",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  service_->SetModel(std::move(model));
  SetServing(true);
  return absl::OkStatus();
}

void AttnScopeServer::Drain() {
  if (shut_down_) return;
  spdlog::info("draining: {} requests in flight, grace {} s", service_->in_flight(),
               config_.drain_grace_seconds);
  service_->BeginDrain();
  SetServing(false);
  const auto deadline =
      std::chrono::steady_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(config_.drain_grace_seconds * 1000));
  while (service_->in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (service_->in_flight() > 0) {
    const int ended = service_->EndInFlightAfterGrace();
    spdlog::warn("grace period over: {} requests end with UNAVAILABLE", ended);
    // They stop at the engine's next check (one decode step) or, for a stream, once its write
    // in flight completes; a client that stopped reading cannot delay the exit past this.
    const auto end_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (service_->in_flight() > 0 && std::chrono::steady_clock::now() < end_deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  // Shutdown cancels whatever is still there once its deadline passes.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  server_->Wait();
  shut_down_ = true;
  spdlog::info("drained; server stopped");
}

}  // namespace attnscope::service
