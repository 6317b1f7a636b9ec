// Qwen2 / Llama decoder in libtorch, following transformers' modeling_qwen2.py (4.41) and
// modeling_llama.py: RMSNorm computed in fp32, rotary embedding with rotate_half, grouped-query
// attention (KV heads shared by n_rep query heads), SwiGLU MLP, q/k/v bias for Qwen2.
// The difference between the two lives in ModelConfig fields, not in code paths.
//
// Attention probabilities exist, per query head, inside Attention(); a layer listed in the
// capture request hands them to the callback there (the "kq_soft_max" point), as fp32 on the
// host for the requested heads. Layers not captured take the fast path.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/model_config.h"

namespace attnscope {

// Weights of one decoder layer; names in comments are the checkpoint's.
struct DecoderLayerWeights {
  at::Tensor input_layernorm;  // model.layers.N.input_layernorm.weight [hidden]
  at::Tensor q_proj, q_bias;   // self_attn.q_proj.{weight,bias} [heads*dim, hidden]
  at::Tensor k_proj, k_bias;   // [kv_heads*dim, hidden]
  at::Tensor v_proj, v_bias;
  at::Tensor o_proj, o_bias;            // [hidden, heads*dim]; bias only for Llama attention_bias
  at::Tensor post_attention_layernorm;  // [hidden]
  at::Tensor gate_proj, up_proj, down_proj, gate_bias, up_bias, down_bias;  // biases: mlp_bias
  at::Device device = at::kCPU;
};

// Keys and values of every layer for one sequence, preallocated to its maximum length.
struct KVCache {
  std::vector<at::Tensor> keys;  // per layer [kv_heads, capacity, head_dim]
  std::vector<at::Tensor> values;
  int length = 0;  // tokens stored
  int capacity = 0;
};

// Which layers hand their probabilities out, and for which query heads.
struct AttentionCaptureRequest {
  std::vector<bool> layer_captured;  // [num_layers]
  at::Tensor heads;                  // int64 index tensor of captured query heads (CPU)
  // probs: [captured heads, q_len, key_len] float32, contiguous, on the host.
  std::function<absl::Status(int layer, int first_row, const at::Tensor& probs)> on_probs;
};

class Transformer {
 public:
  // Strict load: every parameter exactly once with its shape checked; a missing or unexpected
  // tensor is an error naming it. `layer_devices` (optional, one per layer) places
  // consecutive layers on several devices.
  static absl::StatusOr<std::unique_ptr<Transformer>> Load(
      const std::string& model_dir, const ModelConfig& config, at::Device device,
      at::ScalarType dtype, const std::vector<at::Device>& layer_devices = {});

  const ModelConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }

  KVCache NewCache(int capacity) const;

  // Runs `ids` (positions cache->length ...) through the model, appending to the cache.
  // Returns float32 logits [ids.size(), vocab] on the model's device, or only the last
  // position's [1, vocab] when `all_logits` is false (the lm_head over a long prompt costs as
  // much as several layers, and generation needs just the last row).
  absl::StatusOr<at::Tensor> Forward(const std::vector<int64_t>& ids, KVCache* cache,
                                     const AttentionCaptureRequest* capture,
                                     bool all_logits = true);

 private:
  Transformer(ModelConfig config, at::Device device, at::ScalarType dtype);
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  at::Tensor Mlp(const DecoderLayerWeights& layer, const at::Tensor& x) const;
  absl::StatusOr<at::Tensor> Attention(int layer_index, const DecoderLayerWeights& layer,
                                       const at::Tensor& x, const at::Tensor& cos,
                                       const at::Tensor& sin, KVCache* cache,
                                       const AttentionCaptureRequest* capture);
  void RotaryTables(int start, int count, at::Device device, at::Tensor* cos,
                    at::Tensor* sin) const;

  ModelConfig config_;
  at::Device device_;
  at::ScalarType dtype_;
  at::Tensor embed_tokens_;  // model.embed_tokens.weight [vocab, hidden]
  std::vector<DecoderLayerWeights> layers_;
  at::Tensor norm_;      // model.norm.weight
  at::Tensor lm_head_;   // lm_head.weight, or embed_tokens when tied
  at::Tensor inv_freq_;  // float32 [head_dim / 2], on the host
};

// "float32" | "bfloat16" | "float16" -> scalar type.
absl::StatusOr<at::ScalarType> ParseRunDType(const std::string& name);

}  // namespace attnscope
