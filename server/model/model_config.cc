#include "server/model/model_config.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/json/bounded_json.h"

namespace attnscope {

namespace {

using nlohmann::json;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string Fnv1a64(const std::string& bytes) {
  uint64_t hash = 1469598103934665603ULL;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return absl::StrFormat("fnv1a64:%016x", hash);
}

// Reads an integer field; `required` fields must be present and positive.
absl::Status ReadInt(const json& config, const std::string& key, bool required, int* out,
                     const std::string& source) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) {
    if (required) return absl::InvalidArgumentError(absl::StrCat(source, ": missing '", key, "'"));
    return absl::OkStatus();
  }
  if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > (1 << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": '", key, "' must be a positive integer, got ", DescribeJson(*it)));
  }
  *out = static_cast<int>(it->get<int64_t>());
  return absl::OkStatus();
}

std::vector<int64_t> ReadIdList(const json& value) {
  std::vector<int64_t> ids;
  if (value.is_number_integer()) ids.push_back(value.get<int64_t>());
  if (value.is_array()) {
    for (const auto& item : value) {
      if (item.is_number_integer()) ids.push_back(item.get<int64_t>());
    }
  }
  return ids;
}

absl::Status WrongType(const std::string& source, const std::string& key, const char* want,
                       const json& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": '", key, "' must be ", want, ", got ", DescribeJson(got)));
}

// Optional typed fields: absent or null keeps `*out`; any other type is an error naming the
// file and the field (nlohmann's value() would throw, or copy a whole subtree).
absl::Status ReadString(const json& config, const std::string& key, std::string* out,
                        const std::string& source) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return WrongType(source, key, "a string", *it);
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status ReadBool(const json& config, const std::string& key, bool* out,
                      const std::string& source) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return WrongType(source, key, "true or false", *it);
  *out = it->get<bool>();
  return absl::OkStatus();
}

// A finite number > 0 (rope_theta, rms_norm_eps: zero or negative values serve a NaN model).
absl::Status ReadPositiveNumber(const json& config, const std::string& key, double* out,
                                const std::string& source) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return WrongType(source, key, "a finite number > 0", *it);
  const double value = it->get<double>();
  if (!std::isfinite(value) || !(value > 0)) {
    return WrongType(source, key, "a finite number > 0", *it);
  }
  *out = value;
  return absl::OkStatus();
}

std::string SiblingPath(const std::string& source, const std::string& file) {
  const std::filesystem::path parent = std::filesystem::path(source).parent_path();
  return parent.empty() ? file : (parent / file).string();
}

#define RETURN_IF_ERROR_MC(expr)       \
  do {                                 \
    absl::Status status_ = (expr);     \
    if (!status_.ok()) return status_; \
  } while (0)

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& config_json,
                                             const std::string& generation_config_json,
                                             const std::string& source) {
  absl::StatusOr<json> parsed = ParseBoundedJson(config_json, source);
  if (!parsed.ok()) return parsed.status();
  const json& config = *parsed;
  if (!config.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not an object"));

  ModelConfig result;
  result.config_hash = Fnv1a64(config_json);
  if (config.contains("architectures") && config["architectures"].is_array() &&
      !config["architectures"].empty() && config["architectures"][0].is_string()) {
    result.architecture = config["architectures"][0].get<std::string>();
  }
  RETURN_IF_ERROR_MC(ReadString(config, "model_type", &result.model_type, source));
  if (result.architecture != "Qwen2ForCausalLM" && result.architecture != "LlamaForCausalLM") {
    return absl::UnimplementedError(
        absl::StrCat(source, ": unsupported architecture '", result.architecture,
                     "' (supported: Qwen2ForCausalLM, LlamaForCausalLM)"));
  }
  for (auto [key, out] : std::initializer_list<std::pair<const char*, int*>>{
           {"hidden_size", &result.hidden_size},
           {"intermediate_size", &result.intermediate_size},
           {"num_hidden_layers", &result.num_hidden_layers},
           {"num_attention_heads", &result.num_attention_heads},
           {"vocab_size", &result.vocab_size}}) {
    if (auto status = ReadInt(config, key, true, out, source); !status.ok()) return status;
  }
  result.num_key_value_heads = result.num_attention_heads;
  result.head_dim = result.hidden_size / result.num_attention_heads;
  result.max_position_embeddings = 32768;
  for (auto [key, out] : std::initializer_list<std::pair<const char*, int*>>{
           {"num_key_value_heads", &result.num_key_value_heads},
           {"head_dim", &result.head_dim},
           {"max_position_embeddings", &result.max_position_embeddings}}) {
    if (auto status = ReadInt(config, key, false, out, source); !status.ok()) return status;
  }
  if (result.num_attention_heads % result.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": num_attention_heads ", result.num_attention_heads,
                     " is not a multiple of num_key_value_heads ", result.num_key_value_heads));
  }
  if (result.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": head_dim ", result.head_dim, " must be even for rotary embedding"));
  }
  RETURN_IF_ERROR_MC(ReadPositiveNumber(config, "rms_norm_eps", &result.rms_norm_eps, source));
  RETURN_IF_ERROR_MC(ReadPositiveNumber(config, "rope_theta", &result.rope_theta, source));
  RETURN_IF_ERROR_MC(ReadBool(config, "tie_word_embeddings", &result.tie_word_embeddings, source));
  RETURN_IF_ERROR_MC(ReadString(config, "torch_dtype", &result.torch_dtype, source));
  if (result.architecture == "Qwen2ForCausalLM") {
    result.attention_bias = true;
  } else {
    RETURN_IF_ERROR_MC(ReadBool(config, "attention_bias", &result.attention_bias, source));
  }
  RETURN_IF_ERROR_MC(ReadBool(config, "mlp_bias", &result.mlp_bias, source));
  std::string hidden_act = "silu";
  RETURN_IF_ERROR_MC(ReadString(config, "hidden_act", &hidden_act, source));
  if (hidden_act != "silu") {
    return absl::UnimplementedError(
        absl::StrCat(source, ": hidden_act '", hidden_act, "' is not implemented (only silu)"));
  }
  if (config.contains("rope_scaling") && !config["rope_scaling"].is_null()) {
    return absl::UnimplementedError(
        absl::StrCat(source, ": rope_scaling (", DescribeJson(config["rope_scaling"]),
                     ") is not implemented; refusing to load rather than compute wrong positions"));
  }
  // Qwen2 only applies the sliding window when use_sliding_window is true.
  bool use_sliding_window = false;
  RETURN_IF_ERROR_MC(ReadBool(config, "use_sliding_window", &use_sliding_window, source));
  if (use_sliding_window) {
    return absl::UnimplementedError(absl::StrCat(
        source, ": use_sliding_window is true (sliding_window ",
        config.contains("sliding_window") ? DescribeJson(config["sliding_window"]) : "unset",
        "); sliding-window attention is not implemented"));
  }
  if (result.architecture == "LlamaForCausalLM") {
    auto tp = config.find("pretraining_tp");
    if (tp != config.end() && !tp->is_null() &&
        !(tp->is_number_integer() && tp->get<int64_t>() == 1)) {
      return absl::UnimplementedError(absl::StrCat(source, ": pretraining_tp ", DescribeJson(*tp),
                                                   " is not implemented (only 1)"));
    }
  }
  if (config.contains("bos_token_id") && config["bos_token_id"].is_number_integer()) {
    result.bos_token_id = config["bos_token_id"].get<int64_t>();
  }
  if (config.contains("eos_token_id")) result.eos_token_ids = ReadIdList(config["eos_token_id"]);
  if (!generation_config_json.empty()) {
    const std::string generation_source = SiblingPath(source, "generation_config.json");
    absl::StatusOr<json> generation = ParseBoundedJson(generation_config_json, generation_source);
    if (!generation.ok()) return generation.status();
    if (generation->is_object() && generation->contains("eos_token_id")) {
      auto ids = ReadIdList((*generation)["eos_token_id"]);
      if (!ids.empty()) result.eos_token_ids = ids;
    }
  }
  return result;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  auto config_text = ReadFile(model_dir + "/config.json");
  if (!config_text.ok()) {
    return absl::NotFoundError(
        absl::StrCat("model folder ", model_dir, ": no readable config.json"));
  }
  std::string generation_text;
  if (auto generation = ReadFile(model_dir + "/generation_config.json"); generation.ok()) {
    generation_text = *generation;
  }
  return ParseModelConfig(*config_text, generation_text, model_dir + "/config.json");
}

}  // namespace attnscope
