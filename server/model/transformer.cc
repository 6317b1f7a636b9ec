#include "server/model/transformer.h"

#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/json/bounded_json.h"
#include "server/model/safetensors.h"

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
#define ATTNSCOPE_HAVE_SDPA 1
#endif

namespace attnscope {

namespace {

bool FileExists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

absl::StatusOr<at::ScalarType> FileDType(TensorDType dtype) {
  switch (dtype) {
    case TensorDType::kF32:
      return at::kFloat;
    case TensorDType::kF16:
      return at::kHalf;
    case TensorDType::kBF16:
      return at::kBFloat16;
    default:
      return absl::InvalidArgumentError(absl::StrCat("dtype ", TensorDTypeName(dtype),
                                                     " is not a weight dtype (F32, F16, BF16)"));
  }
}

// The checkpoint's tensors by name, across one file or the shards of an index.
class CheckpointTensors {
 public:
  absl::Status Open(const std::string& model_dir) {
    const std::string index_path = model_dir + "/model.safetensors.index.json";
    std::vector<std::string> files;
    std::map<std::string, std::string> weight_map;
    if (FileExists(index_path)) {
      std::ifstream in(index_path);
      std::stringstream text;
      text << in.rdbuf();
      absl::StatusOr<nlohmann::json> parsed = ParseBoundedJson(text.str(), index_path);
      if (!parsed.ok()) return parsed.status();
      try {
        const nlohmann::json& index = *parsed;
        for (auto it = index.at("weight_map").begin(); it != index.at("weight_map").end(); ++it) {
          weight_map[it.key()] = it.value().get<std::string>();
        }
      } catch (const nlohmann::json::exception& error) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": malformed weight_map: ", error.what()));
      }
      std::set<std::string> unique;
      for (const auto& [name, file] : weight_map) {
        if (file.find('/') != std::string::npos || file.find("..") != std::string::npos) {
          return absl::InvalidArgumentError(
              absl::StrCat(index_path, ": shard name '", file, "' must be a plain file name"));
        }
        unique.insert(file);
      }
      files.assign(unique.begin(), unique.end());
    } else if (FileExists(model_dir + "/model.safetensors")) {
      files.push_back("model.safetensors");
    } else {
      return absl::NotFoundError(
          absl::StrCat("model folder ", model_dir,
                       ": neither model.safetensors nor model.safetensors.index.json"));
    }
    for (const auto& file : files) {
      auto opened = SafetensorsFile::Open(model_dir + "/" + file);
      if (!opened.ok()) return opened.status();
      for (const auto& info : (*opened)->tensors()) {
        if (by_name_.count(info.name)) {
          return absl::InvalidArgumentError(absl::StrCat(model_dir, "/", file, ": tensor '",
                                                         info.name, "' also appears in ",
                                                         by_name_[info.name].first->path()));
        }
        if (!weight_map.empty()) {
          auto mapped = weight_map.find(info.name);
          if (mapped == weight_map.end() || mapped->second != file) {
            return absl::InvalidArgumentError(
                absl::StrCat(model_dir, "/", file, ": tensor '", info.name,
                             "' is not listed for this shard in model.safetensors.index.json"));
          }
        }
        by_name_[info.name] = {opened->get(), &info};
        owner_[info.name] = files_.size();  // index of the file about to be pushed
      }
      files_.push_back(std::shared_ptr<SafetensorsFile>(std::move(*opened)));
    }
    for (const auto& [name, file] : weight_map) {
      if (!by_name_.count(name)) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": tensor '", name, "' is listed for ", file, " but missing there"));
      }
    }
    return absl::OkStatus();
  }

  // Loads `name` with `shape`, converted to dtype on device; each name at most once.
  absl::StatusOr<at::Tensor> Take(const std::string& name, const std::vector<int64_t>& shape,
                                  at::Device device, at::ScalarType dtype) {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) {
      return absl::NotFoundError(absl::StrCat("checkpoint is missing tensor '", name, "'"));
    }
    const auto& [file, info] = it->second;
    if (!taken_.insert(name).second) {
      return absl::InternalError(absl::StrCat("tensor '", name, "' loaded twice"));
    }
    if (info->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          file->path(), ": tensor '", name, "' has shape [", absl::StrJoin(info->shape, ","),
          "], expected [", absl::StrJoin(shape, ","), "] from config.json"));
    }
    auto file_dtype = FileDType(info->dtype);
    if (!file_dtype.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file->path(), ": tensor '", name, "': ", file_dtype.status().message()));
    }
    const uint8_t* data = file->Data(*info);
    const bool aligned = reinterpret_cast<uintptr_t>(data) % TensorDTypeSize(info->dtype) == 0;
    if (device.is_cpu() && *file_dtype == dtype && aligned) {
      // Zero copy: the weight is the read-only mapping itself (never written), kept alive by
      // the tensor, so resident memory is the file's pages once, not the file plus a copy.
      std::shared_ptr<SafetensorsFile> keep_mapped = files_[owner_.at(name)];
      return at::from_blob(
          const_cast<uint8_t*>(data), info->shape, [keep_mapped](void*) {},
          at::TensorOptions().dtype(*file_dtype));
    }
    // Otherwise from_blob views the mapping and the one copy is made straight into the run
    // dtype on the target device.
    at::Tensor view = at::from_blob(const_cast<uint8_t*>(data), info->shape,
                                    at::TensorOptions().dtype(*file_dtype));
    return view.to(device, dtype, /*non_blocking=*/false, /*copy=*/true).contiguous();
  }

  // Tensors present in the files but never taken (rotary inv_freq buffers are derived).
  std::vector<std::string> Untaken() const {
    std::vector<std::string> names;
    for (const auto& [name, entry] : by_name_) {
      const bool derived_buffer =
          name.size() > 20 && name.compare(name.size() - 20, 20, "rotary_emb.inv_freq") == 0;
      if (!taken_.count(name) && !derived_buffer) names.push_back(name);
    }
    return names;
  }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<SafetensorsFile*, const TensorInfo*>> by_name_;
  std::map<std::string, size_t> owner_;  // tensor name -> index into files_
  std::set<std::string> taken_;
};

at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return bias.defined() ? at::linear(x, weight, bias) : at::linear(x, weight);
}

}  // namespace

absl::StatusOr<at::ScalarType> ParseRunDType(const std::string& name) {
  if (name == "float32" || name == "fp32") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16") return at::kHalf;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype '", name, "' is not one of float32, bfloat16, float16"));
}

Transformer::Transformer(ModelConfig config, at::Device device, at::ScalarType dtype)
    : config_(std::move(config)), device_(device), dtype_(dtype) {}

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::Load(
    const std::string& model_dir, const ModelConfig& config, at::Device device,
    at::ScalarType dtype, const std::vector<at::Device>& layer_devices) {
  if (!layer_devices.empty() &&
      static_cast<int>(layer_devices.size()) != config.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer_devices has ", layer_devices.size(),
                                                   " entries for ", config.num_hidden_layers,
                                                   " layers"));
  }
  CheckpointTensors checkpoint;
  if (auto status = checkpoint.Open(model_dir); !status.ok()) return status;
  std::unique_ptr<Transformer> model(new Transformer(config, device, dtype));

  const int64_t hidden = config.hidden_size, dim = config.head_dim;
  const int64_t q_out = config.num_attention_heads * dim, kv_out = config.num_key_value_heads * dim;
  const int64_t inter = config.intermediate_size, vocab = config.vocab_size;
  absl::Status status;
  auto take = [&](const std::string& name, std::vector<int64_t> shape, at::Device on) {
    if (!status.ok()) return at::Tensor();
    auto tensor = checkpoint.Take(name, shape, on, dtype);
    if (!tensor.ok()) {
      status = tensor.status();
      return at::Tensor();
    }
    return *tensor;
  };
  const at::Device last_device = layer_devices.empty() ? device : layer_devices.back();
  model->embed_tokens_ = take("model.embed_tokens.weight", {vocab, hidden},
                              layer_devices.empty() ? device : layer_devices.front());
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    const std::string prefix = absl::StrCat("model.layers.", i, ".");
    DecoderLayerWeights layer;
    layer.device = layer_devices.empty() ? device : layer_devices[i];
    const at::Device on = layer.device;
    layer.input_layernorm = take(prefix + "input_layernorm.weight", {hidden}, on);
    layer.q_proj = take(prefix + "self_attn.q_proj.weight", {q_out, hidden}, on);
    layer.k_proj = take(prefix + "self_attn.k_proj.weight", {kv_out, hidden}, on);
    layer.v_proj = take(prefix + "self_attn.v_proj.weight", {kv_out, hidden}, on);
    layer.o_proj = take(prefix + "self_attn.o_proj.weight", {hidden, q_out}, on);
    if (config.attention_bias) {
      layer.q_bias = take(prefix + "self_attn.q_proj.bias", {q_out}, on);
      layer.k_bias = take(prefix + "self_attn.k_proj.bias", {kv_out}, on);
      layer.v_bias = take(prefix + "self_attn.v_proj.bias", {kv_out}, on);
      // Qwen2 has q/k/v bias but no o_proj bias; Llama's attention_bias covers o_proj too.
      if (config.architecture == "LlamaForCausalLM") {
        layer.o_bias = take(prefix + "self_attn.o_proj.bias", {hidden}, on);
      }
    }
    layer.post_attention_layernorm = take(prefix + "post_attention_layernorm.weight", {hidden}, on);
    layer.gate_proj = take(prefix + "mlp.gate_proj.weight", {inter, hidden}, on);
    layer.up_proj = take(prefix + "mlp.up_proj.weight", {inter, hidden}, on);
    layer.down_proj = take(prefix + "mlp.down_proj.weight", {hidden, inter}, on);
    if (config.mlp_bias) {
      layer.gate_bias = take(prefix + "mlp.gate_proj.bias", {inter}, on);
      layer.up_bias = take(prefix + "mlp.up_proj.bias", {inter}, on);
      layer.down_bias = take(prefix + "mlp.down_proj.bias", {hidden}, on);
    }
    model->layers_.push_back(std::move(layer));
  }
  model->norm_ = take("model.norm.weight", {hidden}, last_device);
  if (config.tie_word_embeddings) {
    model->lm_head_ = model->embed_tokens_.to(last_device);
  } else {
    model->lm_head_ = take("lm_head.weight", {vocab, hidden}, last_device);
  }
  if (!status.ok())
    return absl::Status(status.code(), absl::StrCat(model_dir, ": ", status.message()));
  auto untaken = checkpoint.Untaken();
  if (!untaken.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_dir, ": unexpected tensor(s) not used by ", config.architecture,
                     (config.tie_word_embeddings ? " with tied embeddings" : ""), ": ",
                     absl::StrJoin(untaken.begin(),
                                   untaken.begin() + std::min<size_t>(untaken.size(), 5), ", ")));
  }
  // Equivalent in modeling_qwen2.py: Qwen2RotaryEmbedding.inv_freq (computed in fp32).
  model->inv_freq_ =
      1.0 / at::pow(config.rope_theta,
                    at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) /
                        static_cast<double>(dim));
  model->inv_freq_ = model->inv_freq_.to(at::kFloat);
  return model;
}

KVCache Transformer::NewCache(int capacity) const {
  KVCache cache;
  cache.capacity = capacity;
  for (const auto& layer : layers_) {
    auto options = at::TensorOptions().dtype(dtype_).device(layer.device);
    cache.keys.push_back(
        at::empty({config_.num_key_value_heads, capacity, config_.head_dim}, options));
    cache.values.push_back(
        at::empty({config_.num_key_value_heads, capacity, config_.head_dim}, options));
  }
  return cache;
}

void Transformer::RotaryTables(int start, int count, at::Device device, at::Tensor* cos,
                               at::Tensor* sin) const {
  // Equivalent in modeling_qwen2.py: Qwen2RotaryEmbedding.forward: freqs = outer(t, inv_freq),
  // emb = cat(freqs, freqs), cos/sin in fp32, then cast to the activations' dtype.
  at::Tensor positions =
      at::arange(start, start + count, at::TensorOptions().dtype(at::kLong)).to(at::kFloat);
  at::Tensor freqs = at::outer(positions, inv_freq_);  // [count, dim/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);        // [count, dim]
  *cos = emb.cos().to(device, dtype_);
  *sin = emb.sin().to(device, dtype_);
}

at::Tensor Transformer::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  // Equivalent in modeling_qwen2.py: Qwen2RMSNorm (variance in fp32, weight applied after
  // casting back).
  at::Tensor hidden = x.to(at::kFloat);
  at::Tensor variance = hidden.pow(2).mean(-1, /*keepdim=*/true);
  hidden = hidden * at::rsqrt(variance + config_.rms_norm_eps);
  return weight * hidden.to(x.scalar_type());
}

at::Tensor Transformer::Mlp(const DecoderLayerWeights& layer, const at::Tensor& x) const {
  // Equivalent in modeling_qwen2.py: Qwen2MLP: down(act(gate(x)) * up(x)).
  at::Tensor gate = at::silu(Linear(x, layer.gate_proj, layer.gate_bias));
  return Linear(gate * Linear(x, layer.up_proj, layer.up_bias), layer.down_proj, layer.down_bias);
}

absl::StatusOr<at::Tensor> Transformer::Attention(int layer_index, const DecoderLayerWeights& layer,
                                                  const at::Tensor& x, const at::Tensor& cos,
                                                  const at::Tensor& sin, KVCache* cache,
                                                  const AttentionCaptureRequest* capture) {
  const int64_t q_len = x.size(0), heads = config_.num_attention_heads;
  const int64_t kv_heads = config_.num_key_value_heads, dim = config_.head_dim;
  const int64_t n_rep = heads / kv_heads;
  const int start = cache->length;
  const int64_t key_len = start + q_len;

  at::Tensor q = Linear(x, layer.q_proj, layer.q_bias).view({q_len, heads, dim}).transpose(0, 1);
  at::Tensor k = Linear(x, layer.k_proj, layer.k_bias).view({q_len, kv_heads, dim}).transpose(0, 1);
  at::Tensor v = Linear(x, layer.v_proj, layer.v_bias).view({q_len, kv_heads, dim}).transpose(0, 1);
  // [heads, q_len, dim]; rotary on q and k (apply_rotary_pos_emb).
  q = q * cos + RotateHalf(q) * sin;
  k = k * cos + RotateHalf(k) * sin;
  cache->keys[layer_index].narrow(1, start, q_len).copy_(k);
  cache->values[layer_index].narrow(1, start, q_len).copy_(v);
  at::Tensor keys = cache->keys[layer_index].narrow(1, 0, key_len);  // [kv, key_len, dim]
  at::Tensor values = cache->values[layer_index].narrow(1, 0, key_len);

  const bool captured = capture != nullptr && capture->layer_captured[layer_index];
  at::Tensor output;  // [heads, q_len, dim]
#ifdef ATTNSCOPE_HAVE_SDPA
  if (!captured && (q_len == 1 || start == 0)) {
    // Fast path: fused attention; K/V repeated to the query heads (repeat_kv).
    at::Tensor k_rep = keys.repeat_interleave(n_rep, 0);
    at::Tensor v_rep = values.repeat_interleave(n_rep, 0);
    output = at::scaled_dot_product_attention(q.unsqueeze(0), k_rep.unsqueeze(0),
                                              v_rep.unsqueeze(0), {}, 0.0,
                                              /*is_causal=*/q_len > 1)
                 .squeeze(0);
  }
#endif
  if (!output.defined()) {
    // Eager path (modeling_qwen2.py's Qwen2Attention): the query heads that share a KV head
    // are stacked so K/V are never materialised n_rep times.
    at::Tensor q_grouped = q.reshape({kv_heads, n_rep * q_len, dim});
    at::Tensor scores =
        at::matmul(q_grouped, keys.transpose(1, 2)) / std::sqrt(static_cast<double>(dim));
    scores = scores.view({heads, q_len, key_len});  // [heads, q_len, key_len]
    if (q_len > 1) {
      // Query i (absolute position start + i) may see keys 0..start + i.
      at::Tensor mask =
          at::ones({q_len, key_len}, at::TensorOptions().dtype(at::kBool).device(x.device()))
              .triu(start + 1);
      scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
    }
    at::Tensor probs = at::softmax(scores, -1, at::kFloat);  // fp32 [heads, q_len, key_len]
    if (captured) {
      at::Tensor selected = probs.index_select(0, capture->heads.to(probs.device()));
      at::Tensor host = selected.to(at::kCPU).contiguous();
      if (auto status = capture->on_probs(layer_index, start, host); !status.ok()) return status;
    }
    at::Tensor probs_grouped = probs.to(dtype_).view({kv_heads, n_rep * q_len, key_len});
    output = at::matmul(probs_grouped, values).view({heads, q_len, dim});
  }
  at::Tensor merged = output.transpose(0, 1).reshape({q_len, heads * dim});  // [q_len, hidden]
  return Linear(merged, layer.o_proj, layer.o_bias);
}

absl::StatusOr<at::Tensor> Transformer::Forward(const std::vector<int64_t>& ids, KVCache* cache,
                                                const AttentionCaptureRequest* capture,
                                                bool all_logits) {
  const int count = static_cast<int>(ids.size());
  if (count == 0) return absl::InvalidArgumentError("Forward: no tokens");
  if (cache->length + count > cache->capacity) {
    return absl::OutOfRangeError(absl::StrCat("sequence of ", cache->length + count,
                                              " tokens exceeds the KV cache of ", cache->capacity));
  }
  for (int64_t id : ids) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", id, " is outside the vocabulary [0, ", config_.vocab_size, ")"));
    }
  }
  at::NoGradGuard no_grad;
  at::Tensor index =
      at::tensor(ids, at::TensorOptions().dtype(at::kLong)).to(embed_tokens_.device());
  at::Tensor hidden = embed_tokens_.index_select(0, index);  // [count, hidden]
  at::Tensor cos, sin;
  at::Device current = embed_tokens_.device();
  RotaryTables(cache->length, count, current, &cos, &sin);
  for (int i = 0; i < config_.num_hidden_layers; ++i) {
    const DecoderLayerWeights& layer = layers_[i];
    if (layer.device != current) {
      current = layer.device;
      hidden = hidden.to(current);
      cos = cos.to(current);
      sin = sin.to(current);
    }
    // Equivalent in modeling_qwen2.py: Qwen2DecoderLayer.forward.
    at::Tensor residual = hidden;
    auto attended =
        Attention(i, layer, RmsNorm(hidden, layer.input_layernorm), cos, sin, cache, capture);
    if (!attended.ok()) return attended.status();
    hidden = residual + *attended;
    hidden = hidden + Mlp(layer, RmsNorm(hidden, layer.post_attention_layernorm));
  }
  cache->length += count;
  if (!all_logits) hidden = hidden.narrow(0, count - 1, 1);
  hidden = RmsNorm(hidden.to(norm_.device()), norm_);
  return at::linear(hidden, lm_head_).to(at::kFloat);  // [count, vocab]
}

}  // namespace attnscope
