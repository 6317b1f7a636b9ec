// config.json and generation_config.json of a Hugging Face Qwen2 / Llama checkpoint.
// Parsed once, validated, then immutable. A field the engine does not implement is a load
// error, never silently ignored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attnscope {

struct ModelConfig {
  std::string architecture;  // "Qwen2ForCausalLM" or "LlamaForCausalLM"
  std::string model_type;    // "qwen2", "llama"
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;  // query heads
  int num_key_value_heads = 0;  // KV heads (GQA when fewer than query heads)
  int head_dim = 0;             // hidden_size / num_attention_heads unless given
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  int vocab_size = 0;
  bool attention_bias = false;  // q/k/v bias: always for Qwen2, config field for Llama
  bool mlp_bias = false;        // Llama's mlp_bias
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;  // generation_config.json wins over config.json
  std::string torch_dtype;             // as written, informational
  std::string config_hash;  // "fnv1a64:<hex>" of config.json's bytes, for capture metadata
};

// Reads DIR/config.json and, where present, DIR/generation_config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);
// Parses config.json text (and optional generation_config.json text, empty if absent).
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& config_json,
                                             const std::string& generation_config_json,
                                             const std::string& source_name);

}  // namespace attnscope
