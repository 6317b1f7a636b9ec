// The server's configuration (config/server.yaml): a plain struct with defaults, parsed once,
// validated, then immutable. Every key is documented in config/server.yaml.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/capture/dtype.h"
#include "server/session/request.h"

namespace attnscope::service {

// The `limits` keys: what every request is checked against (server/session/request.h).
using ServerLimits = session::RequestLimits;

struct StreamingOptions {
  uint64_t max_message_bytes = 1 << 20;   // data bytes of one AttentionChunk
  uint64_t stream_queue_bytes = 8 << 20;  // per-stream bytes queued for a slow reader
  double stall_timeout_seconds = 30;      // no write completes for this long: cancel
};

struct AuthOptions {
  std::string api_keys_file;  // empty: no authentication
  // 0: concurrent_generations, so that one key cannot hold every engine thread; a larger
  // value must be set explicitly.
  int max_concurrent_per_key = 0;
};

// Server-wide bounds of gRPC's own resources (the `connections` keys).
struct ConnectionOptions {
  double idle_timeout_seconds = 300;         // a connection without calls for this long is closed
  double max_age_seconds = 3600;             // then closed after its calls finish (0: no limit)
  int max_metadata_bytes = 16384;            // request headers (an API key is ~60 bytes)
  uint64_t memory_quota_bytes = 1ull << 30;  // gRPC's buffers of every connection together
  int max_threads = 64;                      // gRPC's threads
};

// Test hooks (the `debug` keys); off in any real deployment.
struct DebugOptions {
  // A request whose `attnscope-debug-throw` header names "prepare", "engine" or "reply" throws
  // there (Tokenize, AnalyzeHeads, GetModelInfo): the reliability suite's trigger of the
  // exception paths (INTERNAL, log line, admission released).
  bool exception_injection = false;
};

struct TlsOptions {
  std::string cert_file;  // both empty: plaintext
  std::string key_file;
};

struct ServerConfig {
  std::string listen = "127.0.0.1:50051";
  std::string model_dir;
  std::string device = "cpu";
  DType dtype = DType::kFloat32;  // run dtype
  // Devices over which consecutive layers are spread (a model larger than one GPU); empty:
  // every layer on `device`.
  std::vector<std::string> layer_devices;
  bool warmup = true;
  int queue_length = 16;  // requests waiting for the model (the running ones not counted)
  // Generations that run at once, each on its own engine thread with its own KV cache; a
  // slow reader holds only its own.
  int concurrent_generations = 2;
  double drain_grace_seconds = 30;
  std::string log_level = "info";
  ServerLimits limits;
  StreamingOptions streaming;
  AuthOptions auth;
  ConnectionOptions connections;
  DebugOptions debug;
  TlsOptions tls;
};

// Parses YAML text; unknown keys and out-of-range values are errors naming the key.
// `source` names the text in error messages.
absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text,
                                               const std::string& source);
absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path);
// Checks ranges and relations between keys (e.g. max_total_tokens >= max_prompt_tokens).
absl::Status ValidateServerConfig(const ServerConfig& config);

}  // namespace attnscope::service
