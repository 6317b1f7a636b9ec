#include "server/model/model_config.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

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
        absl::StrCat(source, ": '", key, "' must be a positive integer, got ", it->dump()));
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

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& config_json,
                                             const std::string& generation_config_json,
                                             const std::string& source) {
  json config;
  try {
    config = json::parse(config_json);
  } catch (const json::exception& error) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON: ", error.what()));
  }
  if (!config.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not an object"));

  ModelConfig result;
  result.config_hash = Fnv1a64(config_json);
  if (config.contains("architectures") && config["architectures"].is_array() &&
      !config["architectures"].empty() && config["architectures"][0].is_string()) {
    result.architecture = config["architectures"][0].get<std::string>();
  }
  result.model_type = config.value("model_type", "");
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
  try {
    result.rms_norm_eps = config.value("rms_norm_eps", 1e-6);
    result.rope_theta = config.value("rope_theta", 10000.0);
    result.tie_word_embeddings = config.value("tie_word_embeddings", false);
    result.torch_dtype = config.value("torch_dtype", "");
    result.attention_bias =
        result.architecture == "Qwen2ForCausalLM" ? true : config.value("attention_bias", false);
    result.mlp_bias = config.value("mlp_bias", false);
    const std::string hidden_act = config.value("hidden_act", "silu");
    if (hidden_act != "silu") {
      return absl::UnimplementedError(
          absl::StrCat(source, ": hidden_act '", hidden_act, "' is not implemented (only silu)"));
    }
    if (config.contains("rope_scaling") && !config["rope_scaling"].is_null()) {
      return absl::UnimplementedError(absl::StrCat(
          source, ": rope_scaling ", config["rope_scaling"].dump(),
          " is not implemented; refusing to load rather than compute wrong positions"));
    }
    // Qwen2 only applies the sliding window when use_sliding_window is true.
    if (config.value("use_sliding_window", false)) {
      return absl::UnimplementedError(
          absl::StrCat(source, ": use_sliding_window is true (sliding_window ",
                       config.value("sliding_window", json()).dump(),
                       "); sliding-window attention is not implemented"));
    }
    if (result.architecture == "LlamaForCausalLM" && config.value("pretraining_tp", 1) != 1) {
      return absl::UnimplementedError(
          absl::StrCat(source, ": pretraining_tp != 1 is not implemented"));
    }
    if (config.contains("bos_token_id") && config["bos_token_id"].is_number_integer()) {
      result.bos_token_id = config["bos_token_id"].get<int64_t>();
    }
    if (config.contains("eos_token_id")) result.eos_token_ids = ReadIdList(config["eos_token_id"]);
    if (!generation_config_json.empty()) {
      json generation = json::parse(generation_config_json);
      if (generation.contains("eos_token_id")) {
        auto ids = ReadIdList(generation["eos_token_id"]);
        if (!ids.empty()) result.eos_token_ids = ids;
      }
    }
  } catch (const json::exception& error) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": bad field type: ", error.what()));
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
