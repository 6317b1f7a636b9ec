#include "server/service/server_config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attnscope::service {
namespace {

// Reads mapping `node` into typed fields, remembering which keys were consumed so that
// unknown (misspelt) keys are reported instead of silently ignored.
class Section {
 public:
  Section(const YAML::Node& node, std::string path, std::string source)
      : node_(node), path_(std::move(path)), source_(std::move(source)) {}

  template <typename T>
  absl::Status Read(const std::string& key, T* out) {
    seen_.insert(key);
    if (!node_ || !node_[key]) return absl::OkStatus();
    try {
      *out = node_[key].template as<T>();
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(source_, ": key ", Name(key), ": ", e.what()));
    }
    return absl::OkStatus();
  }

  YAML::Node Child(const std::string& key) {
    seen_.insert(key);
    return node_ ? node_[key] : YAML::Node();
  }

  absl::Status CheckUnknownKeys() const {
    if (!node_ || node_.IsNull()) return absl::OkStatus();
    if (!node_.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source_, ": ", path_.empty() ? "the document" : path_, " must be a mapping"));
    }
    for (const auto& item : node_) {
      const std::string key = item.first.as<std::string>();
      if (!seen_.count(key)) {
        return absl::InvalidArgumentError(
            absl::StrCat(source_, ": unknown key ", Name(key), " (see config/server.yaml)"));
      }
    }
    return absl::OkStatus();
  }

  std::string Name(const std::string& key) const {
    return path_.empty() ? key : absl::StrCat(path_, ".", key);
  }

 private:
  YAML::Node node_;
  std::string path_;
  std::string source_;
  std::set<std::string> seen_;
};

#define RETURN_IF_ERROR_CFG(expr)      \
  do {                                 \
    absl::Status status_ = (expr);     \
    if (!status_.ok()) return status_; \
  } while (0)

absl::Status OutOfRange(const std::string& key, const std::string& value,
                        const std::string& limit) {
  return absl::InvalidArgumentError(absl::StrCat("server config: ", key, " = ", value, " ", limit));
}

}  // namespace

absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text,
                                               const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": invalid YAML: ", e.what()));
  }
  ServerConfig config;
  Section top(root, "", source);
  RETURN_IF_ERROR_CFG(top.Read("listen", &config.listen));
  RETURN_IF_ERROR_CFG(top.Read("model_dir", &config.model_dir));
  RETURN_IF_ERROR_CFG(top.Read("device", &config.device));
  std::string dtype = DTypeName(config.dtype);
  RETURN_IF_ERROR_CFG(top.Read("dtype", &dtype));
  absl::StatusOr<DType> run_dtype = ParseDType(dtype, absl::StrCat(source, ": key dtype"));
  if (!run_dtype.ok()) return run_dtype.status();
  config.dtype = *run_dtype;
  RETURN_IF_ERROR_CFG(top.Read("layer_devices", &config.layer_devices));
  RETURN_IF_ERROR_CFG(top.Read("warmup", &config.warmup));
  RETURN_IF_ERROR_CFG(top.Read("queue_length", &config.queue_length));
  RETURN_IF_ERROR_CFG(top.Read("concurrent_generations", &config.concurrent_generations));
  RETURN_IF_ERROR_CFG(top.Read("drain_grace_seconds", &config.drain_grace_seconds));
  RETURN_IF_ERROR_CFG(top.Read("log_level", &config.log_level));

  Section limits(top.Child("limits"), "limits", source);
  RETURN_IF_ERROR_CFG(limits.Read("max_prompt_tokens", &config.limits.max_prompt_tokens));
  RETURN_IF_ERROR_CFG(limits.Read("max_new_tokens", &config.limits.max_new_tokens));
  RETURN_IF_ERROR_CFG(limits.Read("max_total_tokens", &config.limits.max_total_tokens));
  RETURN_IF_ERROR_CFG(limits.Read("max_capture_bytes", &config.limits.max_capture_bytes));
  RETURN_IF_ERROR_CFG(limits.Read("default_max_new_tokens", &config.limits.default_max_new_tokens));
  RETURN_IF_ERROR_CFG(limits.Read("max_reply_bytes", &config.limits.max_reply_bytes));
  RETURN_IF_ERROR_CFG(limits.Read("max_interventions", &config.limits.max_interventions));
  RETURN_IF_ERROR_CFG(limits.Read("max_candidates", &config.limits.max_candidates));
  RETURN_IF_ERROR_CFG(limits.Read("max_candidate_tokens", &config.limits.max_candidate_tokens));
  RETURN_IF_ERROR_CFG(limits.Read("max_sweep_heads", &config.limits.max_sweep_heads));
  RETURN_IF_ERROR_CFG(
      limits.Read("max_prompt_bytes_per_token", &config.limits.max_prompt_bytes_per_token));
  RETURN_IF_ERROR_CFG(limits.Read("max_stop_strings", &config.limits.max_stop_strings));
  RETURN_IF_ERROR_CFG(limits.Read("max_stop_string_bytes", &config.limits.max_stop_string_bytes));
  RETURN_IF_ERROR_CFG(limits.Read("max_eos_token_ids", &config.limits.max_eos_token_ids));
  RETURN_IF_ERROR_CFG(limits.Read("max_index_entries", &config.limits.max_index_entries));
  RETURN_IF_ERROR_CFG(limits.Read("max_terms", &config.limits.max_terms));
  RETURN_IF_ERROR_CFG(limits.Read("max_queries", &config.limits.max_queries));
  RETURN_IF_ERROR_CFG(limits.Read("max_term_bytes", &config.limits.max_term_bytes));
  RETURN_IF_ERROR_CFG(limits.CheckUnknownKeys());

  Section streaming(top.Child("streaming"), "streaming", source);
  RETURN_IF_ERROR_CFG(streaming.Read("max_message_bytes", &config.streaming.max_message_bytes));
  RETURN_IF_ERROR_CFG(streaming.Read("stream_queue_bytes", &config.streaming.stream_queue_bytes));
  RETURN_IF_ERROR_CFG(
      streaming.Read("stall_timeout_seconds", &config.streaming.stall_timeout_seconds));
  RETURN_IF_ERROR_CFG(streaming.CheckUnknownKeys());

  Section auth(top.Child("auth"), "auth", source);
  RETURN_IF_ERROR_CFG(auth.Read("api_keys_file", &config.auth.api_keys_file));
  RETURN_IF_ERROR_CFG(auth.Read("max_concurrent_per_key", &config.auth.max_concurrent_per_key));
  RETURN_IF_ERROR_CFG(auth.CheckUnknownKeys());

  Section connections(top.Child("connections"), "connections", source);
  ConnectionOptions& co = config.connections;
  RETURN_IF_ERROR_CFG(connections.Read("idle_timeout_seconds", &co.idle_timeout_seconds));
  RETURN_IF_ERROR_CFG(connections.Read("max_age_seconds", &co.max_age_seconds));
  RETURN_IF_ERROR_CFG(connections.Read("max_metadata_bytes", &co.max_metadata_bytes));
  RETURN_IF_ERROR_CFG(connections.Read("memory_quota_bytes", &co.memory_quota_bytes));
  RETURN_IF_ERROR_CFG(connections.Read("max_threads", &co.max_threads));
  RETURN_IF_ERROR_CFG(connections.CheckUnknownKeys());

  Section debug(top.Child("debug"), "debug", source);
  RETURN_IF_ERROR_CFG(debug.Read("exception_injection", &config.debug.exception_injection));
  RETURN_IF_ERROR_CFG(debug.CheckUnknownKeys());

  Section tls(top.Child("tls"), "tls", source);
  RETURN_IF_ERROR_CFG(tls.Read("cert_file", &config.tls.cert_file));
  RETURN_IF_ERROR_CFG(tls.Read("key_file", &config.tls.key_file));
  RETURN_IF_ERROR_CFG(tls.CheckUnknownKeys());

  RETURN_IF_ERROR_CFG(top.CheckUnknownKeys());
  RETURN_IF_ERROR_CFG(ValidateServerConfig(config));
  return config;
}

absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("server config: cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  return ParseServerConfig(text.str(), path);
}

absl::Status ValidateServerConfig(const ServerConfig& c) {
  if (c.listen.empty()) return OutOfRange("listen", "\"\"", "must be HOST:PORT");
  if (c.queue_length < 0) {
    return OutOfRange("queue_length", absl::StrCat(c.queue_length), "must be >= 0");
  }
  if (c.concurrent_generations < 1 || c.concurrent_generations > 64) {
    return OutOfRange("concurrent_generations", absl::StrCat(c.concurrent_generations),
                      "must be in [1, 64]");
  }
  if (!(c.drain_grace_seconds >= 0)) {
    return OutOfRange("drain_grace_seconds", absl::StrCat(c.drain_grace_seconds), "must be >= 0");
  }
  if (c.log_level != "trace" && c.log_level != "debug" && c.log_level != "info" &&
      c.log_level != "warn" && c.log_level != "error") {
    return OutOfRange("log_level", c.log_level, "must be trace, debug, info, warn or error");
  }
  const ServerLimits& l = c.limits;
  if (l.max_prompt_tokens < 1) {
    return OutOfRange("limits.max_prompt_tokens", absl::StrCat(l.max_prompt_tokens),
                      "must be >= 1");
  }
  if (l.max_new_tokens < 0) {
    return OutOfRange("limits.max_new_tokens", absl::StrCat(l.max_new_tokens), "must be >= 0");
  }
  if (l.max_total_tokens < 1) {
    return OutOfRange("limits.max_total_tokens", absl::StrCat(l.max_total_tokens), "must be >= 1");
  }
  if (l.default_max_new_tokens < 0 || l.default_max_new_tokens > l.max_new_tokens) {
    return OutOfRange(
        "limits.default_max_new_tokens", absl::StrCat(l.default_max_new_tokens),
        absl::StrCat("must be in [0, limits.max_new_tokens = ", l.max_new_tokens, "]"));
  }
  // gRPC's message size limits are ints.
  if (l.max_reply_bytes < 4096 || l.max_reply_bytes > 2147483647ull) {
    return OutOfRange("limits.max_reply_bytes", absl::StrCat(l.max_reply_bytes),
                      "must be in [4096, 2147483647]");
  }
  for (const auto& [key, value, low, high] :
       std::initializer_list<std::tuple<const char*, int, int, int>>{
           {"limits.max_interventions", l.max_interventions, 1, INT32_MAX},
           {"limits.max_candidates", l.max_candidates, 2, INT32_MAX},
           {"limits.max_candidate_tokens", l.max_candidate_tokens, 1, INT32_MAX},
           {"limits.max_sweep_heads", l.max_sweep_heads, 1, INT32_MAX},
           {"limits.max_prompt_bytes_per_token", l.max_prompt_bytes_per_token, 1, 256},
           {"limits.max_stop_strings", l.max_stop_strings, 0, 4096},
           {"limits.max_stop_string_bytes", l.max_stop_string_bytes, 1, 1 << 16},
           {"limits.max_eos_token_ids", l.max_eos_token_ids, 0, 4096},
           {"limits.max_index_entries", l.max_index_entries, 1, 1 << 16},
           {"limits.max_terms", l.max_terms, 0, 1 << 16},
           {"limits.max_queries", l.max_queries, 0, 4096},
           {"limits.max_term_bytes", l.max_term_bytes, 1, 1 << 16}}) {
    if (value < low || value > high) {
      return OutOfRange(key, absl::StrCat(value),
                        absl::StrCat("must be in [", low, ", ", high, "]"));
    }
  }
  const StreamingOptions& s = c.streaming;
  // One row of one head must fit a message (chunks split by rows, then heads, never keys).
  const uint64_t min_message = 4ull * static_cast<uint64_t>(l.max_total_tokens);
  if (s.max_message_bytes < min_message || s.max_message_bytes > (64ull << 20)) {
    return OutOfRange(
        "streaming.max_message_bytes", absl::StrCat(s.max_message_bytes),
        absl::StrCat("must be in [4 x limits.max_total_tokens = ", min_message, ", 67108864]"));
  }
  if (s.stream_queue_bytes < s.max_message_bytes) {
    return OutOfRange(
        "streaming.stream_queue_bytes", absl::StrCat(s.stream_queue_bytes),
        absl::StrCat("must be >= streaming.max_message_bytes = ", s.max_message_bytes));
  }
  if (!(s.stall_timeout_seconds > 0)) {
    return OutOfRange("streaming.stall_timeout_seconds", absl::StrCat(s.stall_timeout_seconds),
                      "must be > 0");
  }
  if (c.auth.max_concurrent_per_key < 0) {
    return OutOfRange("auth.max_concurrent_per_key", absl::StrCat(c.auth.max_concurrent_per_key),
                      "must be >= 0 (0: concurrent_generations)");
  }
  const ConnectionOptions& co = c.connections;
  if (!(co.idle_timeout_seconds > 0 && co.idle_timeout_seconds <= 86400)) {
    return OutOfRange("connections.idle_timeout_seconds", absl::StrCat(co.idle_timeout_seconds),
                      "must be in (0, 86400]");
  }
  if (!(co.max_age_seconds >= 0 && co.max_age_seconds <= 30 * 86400)) {
    return OutOfRange("connections.max_age_seconds", absl::StrCat(co.max_age_seconds),
                      "must be in [0, 2592000] (0: no limit)");
  }
  if (co.max_metadata_bytes < 1024 || co.max_metadata_bytes > (1 << 20)) {
    return OutOfRange("connections.max_metadata_bytes", absl::StrCat(co.max_metadata_bytes),
                      "must be in [1024, 1048576]");
  }
  if (co.memory_quota_bytes < (16ull << 20)) {
    return OutOfRange("connections.memory_quota_bytes", absl::StrCat(co.memory_quota_bytes),
                      "must be >= 16777216");
  }
  if (co.max_threads < 4 || co.max_threads > 4096) {
    return OutOfRange("connections.max_threads", absl::StrCat(co.max_threads),
                      "must be in [4, 4096]");
  }
  if (c.tls.cert_file.empty() != c.tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "server config: tls.cert_file and tls.key_file must be given together");
  }
  return absl::OkStatus();
}

}  // namespace attnscope::service
