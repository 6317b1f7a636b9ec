#include "server/model/tiny_model.h"

#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/model/safetensors.h"
#include "server/tokenizer/tokenizer.h"

namespace attnscope {

namespace {

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteTinyModel(const std::string& dir, uint64_t seed, const TinyModelShape& shape) {
  ::mkdir(dir.c_str(), 0755);
  struct stat info;
  if (stat(dir.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": cannot create the model folder"));
  }
  const int hidden = shape.hidden_size, heads = shape.num_heads, kv_heads = shape.num_kv_heads;
  const int head_dim = hidden / heads, inter = shape.intermediate_size, vocab = shape.vocab_size;
  nlohmann::json config = {
      {"architectures", {"Qwen2ForCausalLM"}},
      {"model_type", "qwen2"},
      {"hidden_size", hidden},
      {"intermediate_size", inter},
      {"num_hidden_layers", shape.num_layers},
      {"num_attention_heads", heads},
      {"num_key_value_heads", kv_heads},
      {"hidden_act", "silu"},
      {"max_position_embeddings", shape.max_position_embeddings},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"tie_word_embeddings", false},
      {"use_sliding_window", false},
      {"sliding_window", 4096},
      {"vocab_size", vocab},
      {"bos_token_id", 256},
      {"eos_token_id", 258},
      {"torch_dtype", "float32"},
      {"attnscope_note", "random weights from attnscope make-tiny-model; not a language model"}};
  nlohmann::json generation = {{"bos_token_id", 256}, {"eos_token_id", {258, 256}}};
  if (auto status = WriteText(dir + "/config.json", config.dump(2) + "\n"); !status.ok())
    return status;
  if (auto status = WriteText(dir + "/generation_config.json", generation.dump(2) + "\n");
      !status.ok()) {
    return status;
  }

  // Tensors are drawn in a fixed order from one seeded generator, so a seed names a model.
  std::mt19937_64 random(seed);
  std::vector<std::vector<float>> storage;
  std::vector<TensorToWrite> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> tensor_shape, float mean,
                 float stddev) {
    int64_t count = 1;
    for (int64_t dim : tensor_shape) count *= dim;
    std::normal_distribution<float> normal(mean, stddev);
    std::vector<float> values(count);
    for (float& value : values) value = stddev == 0 ? mean : normal(random);
    storage.push_back(std::move(values));
    tensors.push_back({name, TensorDType::kF32, tensor_shape, storage.back().data(),
                       storage.back().size() * sizeof(float)});
  };
  storage.reserve(16 * shape.num_layers + 4);
  const float linear_std = 1.0f / std::sqrt(static_cast<float>(hidden));
  // Query/key weights several times larger than the usual init make scores spread over a
  // few units, so attention is peaked rather than uniform and the heads differ visibly.
  const float qk_std = 0.2f;
  add("model.embed_tokens.weight", {vocab, hidden}, 0.0f, 1.0f);
  for (int layer = 0; layer < shape.num_layers; ++layer) {
    const std::string prefix = absl::StrCat("model.layers.", layer, ".");
    add(prefix + "input_layernorm.weight", {hidden}, 1.0f, 0.0f);
    add(prefix + "self_attn.q_proj.weight", {heads * head_dim, hidden}, 0.0f, qk_std);
    add(prefix + "self_attn.q_proj.bias", {heads * head_dim}, 0.0f, 0.5f);
    add(prefix + "self_attn.k_proj.weight", {kv_heads * head_dim, hidden}, 0.0f, qk_std);
    add(prefix + "self_attn.k_proj.bias", {kv_heads * head_dim}, 0.0f, 0.5f);
    add(prefix + "self_attn.v_proj.weight", {kv_heads * head_dim, hidden}, 0.0f, linear_std);
    add(prefix + "self_attn.v_proj.bias", {kv_heads * head_dim}, 0.0f, 0.1f);
    add(prefix + "self_attn.o_proj.weight", {hidden, heads * head_dim}, 0.0f, linear_std);
    add(prefix + "post_attention_layernorm.weight", {hidden}, 1.0f, 0.0f);
    add(prefix + "mlp.gate_proj.weight", {inter, hidden}, 0.0f, linear_std);
    add(prefix + "mlp.up_proj.weight", {inter, hidden}, 0.0f, linear_std);
    add(prefix + "mlp.down_proj.weight", {hidden, inter}, 0.0f,
        1.0f / std::sqrt(static_cast<float>(inter)));
  }
  add("model.norm.weight", {hidden}, 1.0f, 0.0f);
  add("lm_head.weight", {vocab, hidden}, 0.0f, linear_std);
  if (auto status = WriteSafetensors(dir + "/model.safetensors", tensors,
                                     {{"format", "pt"}, {"attnscope_seed", std::to_string(seed)}});
      !status.ok()) {
    return status;
  }
  if (shape.with_tokenizer) return WriteTinyTokenizerFiles(dir);
  return absl::OkStatus();
}

}  // namespace attnscope
