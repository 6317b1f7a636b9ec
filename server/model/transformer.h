// Qwen2 / Llama decoder in libtorch, following transformers' modeling_qwen2.py (4.41) and
// modeling_llama.py: RMSNorm computed in fp32, rotary embedding with rotate_half, grouped-query
// attention (KV heads shared by n_rep query heads), SwiGLU MLP, q/k/v bias for Qwen2.
// The difference between the two lives in ModelConfig fields, not in code paths.
//
// Attention probabilities exist, per query head, inside Attention(); a layer listed in the
// capture request hands them to the callback there (the "kq_soft_max" point), as fp32 on the
// layer's device for the requested heads. Layers not captured take the fast path.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/capture/dtype.h"
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
  at::Tensor heads;  // int64 index of the captured query heads (best on the model's device);
                     // undefined: every head, in order
  // probs: [captured heads, q_len, key_len] float32 on the layer's device, never written again.
  std::function<absl::Status(int layer, int first_row, const at::Tensor& probs)> on_probs;
};

// Edits of one layer inside a forward, resolved to indices (the engine builds them from an
// InterventionSet). Head outputs are softmax(QK^T)V per query head, [heads, rows, head_dim],
// the input of o_proj; positions are absolute token positions.
struct LayerEdits {
  std::vector<int64_t> zero_heads;  // output replaced by 0
  std::vector<int64_t> mean_heads;  // output replaced by its mean over the prompt positions
  at::Tensor means;  // [mean_heads, head_dim]: set by the forward that covers the prompt
  struct Knockout {
    std::vector<int64_t> heads;
    int64_t row_begin = 0, row_end = 0;  // query positions [begin, end)
    std::vector<int64_t> keys;           // key positions whose scores become -inf
  };
  std::vector<Knockout> knockouts;
  struct Patch {
    std::vector<int64_t> heads;      // outputs copied from patch_source ...
    std::vector<int64_t> positions;  // ... at these prompt positions (ascending)
  };
  std::vector<Patch> patches;
  at::Tensor patch_source;  // [heads, source length, head_dim]
  // The layer's input hidden state [rows, hidden] and head outputs [heads, rows, dim] of a
  // batch-1 forward, kept for a patch source or a sweep's shared prefix.
  bool record = false;
  at::Tensor recorded_input, recorded_output;

  bool edits_scores() const { return !knockouts.empty(); }
};

// What one forward does besides the plain causal run.
struct ForwardOptions {
  const AttentionCaptureRequest* capture = nullptr;
  std::vector<LayerEdits>* edits = nullptr;  // one per layer when set
  int prompt_length = 0;                     // positions below it are the prompt
  // Rotary position of each token; empty: cache->length, cache->length + 1, ...
  std::vector<int64_t> positions;
  // bool [count, count], true where a query may not see a key (uncached forwards only; packs
  // several continuations of one prompt into one forward); undefined: causal.
  at::Tensor blocked;
  // Rows whose logits are returned; empty: every row (all_logits) or the last.
  std::vector<int64_t> logit_rows;
  bool all_logits = true;
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
  absl::StatusOr<at::Tensor> Forward(const std::vector<int64_t>& ids, KVCache* cache,
                                     const ForwardOptions& options);

  // A batch of hidden states [B, T, hidden] leaving layer `layer` - 1 (or the embedding)
  // runs layers layer..N-1 uncached, with options.positions / options.blocked, and the
  // logits of options.logit_rows come back, [B, rows, vocab] float32. The last layer computes
  // queries, o_proj and MLP for those rows only. Used by head sweeps.
  at::Tensor ForwardBatchFrom(int layer, at::Tensor hidden, const ForwardOptions& options);
  // The rest of layer `layer` after attention: o_proj of head outputs [B, heads, T, dim],
  // residual `input` [B, T, hidden] (the layer's input), then the MLP block.
  at::Tensor FinishLayer(int layer, const at::Tensor& input, const at::Tensor& head_outputs);

 private:
  Transformer(ModelConfig config, at::Device device, at::ScalarType dtype);
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  at::Tensor Mlp(const DecoderLayerWeights& layer, const at::Tensor& x) const;
  struct AttentionInputs;
  // Head outputs [B, heads, rows, dim] of one layer for x [B, T, hidden] (normed).
  absl::StatusOr<at::Tensor> Attention(int layer_index, const DecoderLayerWeights& layer,
                                       const at::Tensor& x, const AttentionInputs& in);
  void RotaryTables(const std::vector<int64_t>& positions, at::Device device, at::Tensor* cos,
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

// The one DType -> at::ScalarType conversion (run dtype, weight dtype, capture wire dtype).
at::ScalarType ToScalarType(DType dtype);

}  // namespace attnscope
