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
#include "server/model/device_copy.h"
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
    absl::StatusOr<DType> weight_dtype = FromTensorDType(info->dtype, "weight dtype");
    if (!weight_dtype.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file->path(), ": tensor '", name, "': ", weight_dtype.status().message()));
    }
    const at::ScalarType file_dtype = ToScalarType(*weight_dtype);
    const uint8_t* data = file->Data(*info);
    const bool aligned = reinterpret_cast<uintptr_t>(data) % TensorDTypeSize(info->dtype) == 0;
    if (device.is_cpu() && file_dtype == dtype && aligned) {
      // Zero copy: the weight is the read-only mapping itself (never written), kept alive by
      // the tensor, so resident memory is the file's pages once, not the file plus a copy.
      std::shared_ptr<SafetensorsFile> keep_mapped = files_[owner_.at(name)];
      return at::from_blob(
          const_cast<uint8_t*>(data), info->shape, [keep_mapped](void*) {},
          at::TensorOptions().dtype(file_dtype));
    }
    // Otherwise from_blob views the mapping and the one copy is made straight into the run
    // dtype on the target device.
    at::Tensor view = at::from_blob(const_cast<uint8_t*>(data), info->shape,
                                    at::TensorOptions().dtype(file_dtype));
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

at::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return at::kHalf;
    case DType::kBFloat16:
      return at::kBFloat16;
    case DType::kFloat32:
      break;
  }
  return at::kFloat;
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

void Transformer::RotaryTables(const std::vector<int64_t>& positions, at::Device device,
                               at::Tensor* cos, at::Tensor* sin) const {
  // Equivalent in modeling_qwen2.py: Qwen2RotaryEmbedding.forward: freqs = outer(t, inv_freq),
  // emb = cat(freqs, freqs), cos/sin in fp32, then cast to the activations' dtype.
  at::Tensor t = at::tensor(positions, at::TensorOptions().dtype(at::kLong)).to(at::kFloat);
  at::Tensor freqs = at::outer(t, inv_freq_);    // [count, dim/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);  // [count, dim]
  *cos = HostToDevice(emb.cos().to(dtype_), device);
  *sin = HostToDevice(emb.sin().to(dtype_), device);
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

namespace {

at::Tensor IndexTensor(const std::vector<int64_t>& values, at::Device device) {
  return at::tensor(values, at::TensorOptions().dtype(at::kLong)).to(device);
}

at::Tensor BoolTensor(const std::vector<uint8_t>& values, at::Device device) {
  return at::tensor(std::vector<int64_t>(values.begin(), values.end()),
                    at::TensorOptions().dtype(at::kLong))
      .to(device)
      .to(at::kBool);
}

// Ablation and patching on head outputs [B, heads, rows, dim] whose rows sit at the absolute
// positions `row_positions`.
absl::Status EditHeadOutputs(LayerEdits& edits, const std::vector<int64_t>& row_positions,
                             int prompt_length, at::Tensor& output) {
  const at::Device device = output.device();
  if (edits.record) edits.recorded_output = output[0].clone();
  if (!edits.mean_heads.empty()) {
    if (!edits.means.defined()) {
      // Prompt rows come first in any forward that starts at position 0.
      if (row_positions.empty() || row_positions[0] != 0 ||
          static_cast<int64_t>(row_positions.size()) < prompt_length) {
        return absl::InternalError("mean ablation: the first forward must cover the prompt");
      }
      edits.means = output[0]
                        .index_select(0, IndexTensor(edits.mean_heads, device))
                        .narrow(1, 0, prompt_length)
                        .to(at::kFloat)
                        .mean(1)
                        .to(output.scalar_type());  // [mean heads, dim]
    }
    for (size_t k = 0; k < edits.mean_heads.size(); ++k) {
      at::Tensor slot = output.select(1, edits.mean_heads[k]);  // [B, rows, dim]
      slot.copy_(edits.means[k].view({1, 1, -1}).expand_as(slot));
    }
  }
  if (!edits.zero_heads.empty()) {
    output.index_fill_(1, IndexTensor(edits.zero_heads, device), 0);
  }
  for (const LayerEdits::Patch& patch : edits.patches) {
    std::vector<int64_t> rows, sources;
    for (size_t i = 0; i < row_positions.size(); ++i) {
      if (std::binary_search(patch.positions.begin(), patch.positions.end(), row_positions[i])) {
        rows.push_back(static_cast<int64_t>(i));
        sources.push_back(row_positions[i]);
      }
    }
    if (!rows.empty()) {
      at::Tensor row_index = IndexTensor(rows, device), source_index = IndexTensor(sources, device);
      for (int64_t head : patch.heads) {
        at::Tensor values = edits.patch_source[head].to(device).index_select(0, source_index);
        output.select(1, head).index_copy_(1, row_index,
                                           values.unsqueeze(0).expand({output.size(0), -1, -1}));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

struct Transformer::AttentionInputs {
  at::Tensor cos, sin;       // [T, dim] for the T rows of x
  KVCache* cache = nullptr;  // batch 1; null: the keys are this forward's own rows
  int start = 0;             // cache position of x's first row
  const AttentionCaptureRequest* capture = nullptr;
  LayerEdits* edits = nullptr;
  int prompt_length = 0;
  const std::vector<int64_t>* positions = nullptr;  // of x's rows; null: start + i
  at::Tensor blocked;                               // [T, T] bool, or undefined: causal
  std::vector<int64_t> query_rows;                  // rows of x to attend from; empty: all
};

absl::StatusOr<at::Tensor> Transformer::Attention(int layer_index, const DecoderLayerWeights& layer,
                                                  const at::Tensor& x, const AttentionInputs& in) {
  const int64_t batch = x.size(0), count = x.size(1), heads = config_.num_attention_heads;
  const int64_t kv_heads = config_.num_key_value_heads, dim = config_.head_dim;
  const int64_t n_rep = heads / kv_heads;
  const int start = in.start;
  const at::Device device = x.device();

  at::Tensor k = Linear(x, layer.k_proj, layer.k_bias)
                     .view({batch, count, kv_heads, dim})
                     .transpose(1, 2);  // [B, kv, T, dim]
  at::Tensor v =
      Linear(x, layer.v_proj, layer.v_bias).view({batch, count, kv_heads, dim}).transpose(1, 2);
  k = k * in.cos + RotateHalf(k) * in.sin;  // apply_rotary_pos_emb
  at::Tensor keys = k, values = v;
  if (in.cache != nullptr) {
    in.cache->keys[layer_index].narrow(1, start, count).copy_(k[0]);
    in.cache->values[layer_index].narrow(1, start, count).copy_(v[0]);
    keys = in.cache->keys[layer_index].narrow(1, 0, start + count).unsqueeze(0);
    values = in.cache->values[layer_index].narrow(1, 0, start + count).unsqueeze(0);
  }
  const int64_t key_len = keys.size(2);

  // Query rows and their absolute positions.
  std::vector<int64_t> rows = in.query_rows;
  if (rows.empty()) {
    for (int64_t i = 0; i < count; ++i) rows.push_back(i);
  }
  std::vector<int64_t> row_positions;
  for (int64_t row : rows)
    row_positions.push_back(in.positions ? (*in.positions)[row] : start + row);
  const bool subset = !in.query_rows.empty();
  at::Tensor row_index = subset ? IndexTensor(rows, device) : at::Tensor();
  at::Tensor xq = subset ? x.index_select(1, row_index) : x;
  at::Tensor cos = subset ? in.cos.index_select(0, row_index) : in.cos;
  at::Tensor sin = subset ? in.sin.index_select(0, row_index) : in.sin;
  const int64_t q_len = xq.size(1);
  at::Tensor q =
      Linear(xq, layer.q_proj, layer.q_bias).view({batch, q_len, heads, dim}).transpose(1, 2);
  q = q * cos + RotateHalf(q) * sin;  // [B, heads, q_len, dim]

  const bool captured = in.capture != nullptr && in.capture->layer_captured[layer_index];
  const bool knocked_out = in.edits != nullptr && in.edits->edits_scores();
  at::Tensor output;  // [B, heads, q_len, dim]
#ifdef ATTNSCOPE_HAVE_SDPA
  if (!captured && !knocked_out && !subset && !in.blocked.defined() && (q_len == 1 || start == 0)) {
    // Fast path: fused attention; K/V repeated to the query heads (repeat_kv: expand and
    // reshape, which never waits for the device as repeat_interleave's size check can).
    at::Tensor k_rep = keys.unsqueeze(2)
                           .expand({batch, kv_heads, n_rep, key_len, dim})
                           .reshape({batch, heads, key_len, dim});
    at::Tensor v_rep = values.unsqueeze(2)
                           .expand({batch, kv_heads, n_rep, key_len, dim})
                           .reshape({batch, heads, key_len, dim});
    output = at::scaled_dot_product_attention(q, k_rep, v_rep, {}, 0.0, /*is_causal=*/q_len > 1);
  }
#endif
  if (!output.defined()) {
    // Eager path (modeling_qwen2.py's Qwen2Attention): the query heads that share a KV head
    // are stacked so K/V are never materialised n_rep times.
    at::Tensor q_grouped = q.reshape({batch, kv_heads, n_rep * q_len, dim});
    at::Tensor scores =
        at::matmul(q_grouped, keys.transpose(2, 3)) / std::sqrt(static_cast<double>(dim));
    scores = scores.view({batch, heads, q_len, key_len});
    at::Tensor mask;  // [q_len, key_len], true where the query may not see the key
    if (in.blocked.defined()) {
      mask = subset ? in.blocked.index_select(0, row_index) : in.blocked;
    } else if (count > 1 || subset) {
      // Query at cache index start + i may see keys 0..start + i.
      at::Tensor query_index =
          subset ? row_index + start
                 : at::arange(start, start + count,
                              at::TensorOptions().dtype(at::kLong).device(device));
      mask = at::arange(key_len, at::TensorOptions().dtype(at::kLong).device(device))
                 .unsqueeze(0)
                 .gt(query_index.unsqueeze(1));
    }
    const float kBlocked = -std::numeric_limits<float>::infinity();
    if (mask.defined()) scores = scores.masked_fill(mask, kBlocked);
    if (knocked_out) {
      // Key j sits at position positions[j] in a packed forward, at cache index j otherwise.
      for (const LayerEdits::Knockout& knockout : in.edits->knockouts) {
        std::vector<uint8_t> row_hit(q_len), key_hit(key_len);
        for (int64_t i = 0; i < q_len; ++i) {
          row_hit[i] =
              row_positions[i] >= knockout.row_begin && row_positions[i] < knockout.row_end;
        }
        for (int64_t j = 0; j < key_len; ++j) {
          const int64_t position = in.positions != nullptr && start == 0 &&
                                           j < static_cast<int64_t>(in.positions->size())
                                       ? (*in.positions)[j]
                                       : j;
          key_hit[j] = std::binary_search(knockout.keys.begin(), knockout.keys.end(), position);
        }
        at::Tensor hit = BoolTensor(row_hit, device)
                             .unsqueeze(1)
                             .logical_and(BoolTensor(key_hit, device).unsqueeze(0));
        for (int64_t head : knockout.heads) scores.select(1, head).masked_fill_(hit, kBlocked);
      }
    }
    at::Tensor probs = at::softmax(scores, -1, at::kFloat);  // fp32 [B, heads, q_len, key_len]
    if (captured) {
      // Handed over where they are: the engine decides what leaves the device, and when.
      at::Tensor selected = in.capture->heads.defined()
                                ? probs[0].index_select(0, in.capture->heads.to(probs.device()))
                                : probs[0];
      if (auto status = in.capture->on_probs(layer_index, start, selected); !status.ok()) {
        return status;
      }
    }
    at::Tensor probs_grouped = probs.to(dtype_).view({batch, kv_heads, n_rep * q_len, key_len});
    output = at::matmul(probs_grouped, values).view({batch, heads, q_len, dim});
  }
  if (in.edits != nullptr) {
    if (auto status = EditHeadOutputs(*in.edits, row_positions, in.prompt_length, output);
        !status.ok()) {
      return status;
    }
  }
  return output;
}

at::Tensor Transformer::FinishLayer(int layer_index, const at::Tensor& input,
                                    const at::Tensor& head_outputs) {
  // Equivalent in modeling_qwen2.py: the rest of Qwen2DecoderLayer.forward after self_attn.
  const DecoderLayerWeights& layer = layers_[layer_index];
  const int64_t batch = head_outputs.size(0), rows = head_outputs.size(2);
  at::Tensor merged = head_outputs.transpose(1, 2).reshape(
      {batch, rows, config_.num_attention_heads * config_.head_dim});
  at::Tensor hidden = input + Linear(merged, layer.o_proj, layer.o_bias);
  return hidden + Mlp(layer, RmsNorm(hidden, layer.post_attention_layernorm));
}

absl::StatusOr<at::Tensor> Transformer::Forward(const std::vector<int64_t>& ids, KVCache* cache,
                                                const AttentionCaptureRequest* capture,
                                                bool all_logits) {
  ForwardOptions options;
  options.capture = capture;
  options.all_logits = all_logits;
  return Forward(ids, cache, options);
}

absl::StatusOr<at::Tensor> Transformer::Forward(const std::vector<int64_t>& ids, KVCache* cache,
                                                const ForwardOptions& options) {
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
  if (!options.positions.empty() &&
      (static_cast<int>(options.positions.size()) != count || cache->length != 0)) {
    return absl::InternalError("Forward: explicit positions need an uncached forward of them all");
  }
  if (options.edits != nullptr &&
      static_cast<int>(options.edits->size()) != config_.num_hidden_layers) {
    return absl::InternalError("Forward: edits must have one entry per layer");
  }
  at::NoGradGuard no_grad;
  std::vector<int64_t> positions = options.positions;
  if (positions.empty()) {
    for (int i = 0; i < count; ++i) positions.push_back(cache->length + i);
  }
  at::Tensor index =
      HostToDevice(at::tensor(ids, at::TensorOptions().dtype(at::kLong)), embed_tokens_.device());
  at::Tensor hidden = embed_tokens_.index_select(0, index).unsqueeze(0);  // [1, count, hidden]
  AttentionInputs in;
  at::Device current = embed_tokens_.device();
  RotaryTables(positions, current, &in.cos, &in.sin);
  in.cache = cache;
  in.start = cache->length;
  in.capture = options.capture;
  in.prompt_length = options.prompt_length;
  in.positions = &positions;
  if (options.blocked.defined()) in.blocked = options.blocked.to(current);
  for (int i = 0; i < config_.num_hidden_layers; ++i) {
    const DecoderLayerWeights& layer = layers_[i];
    if (layer.device != current) {
      current = layer.device;
      hidden = hidden.to(current);
      in.cos = in.cos.to(current);
      in.sin = in.sin.to(current);
      if (in.blocked.defined()) in.blocked = in.blocked.to(current);
    }
    in.edits = options.edits != nullptr ? &(*options.edits)[i] : nullptr;
    if (in.edits != nullptr && in.edits->record) in.edits->recorded_input = hidden[0];
    // Equivalent in modeling_qwen2.py: Qwen2DecoderLayer.forward.
    auto attended = Attention(i, layer, RmsNorm(hidden, layer.input_layernorm), in);
    if (!attended.ok()) return attended.status();
    hidden = FinishLayer(i, hidden, *attended);
  }
  cache->length += count;
  hidden = hidden[0];
  if (!options.logit_rows.empty()) {
    hidden = hidden.index_select(0, IndexTensor(options.logit_rows, hidden.device()));
  } else if (!options.all_logits) {
    hidden = hidden.narrow(0, count - 1, 1);
  }
  hidden = RmsNorm(hidden.to(norm_.device()), norm_);
  return at::linear(hidden, lm_head_).to(at::kFloat);  // [rows, vocab]
}

at::Tensor Transformer::ForwardBatchFrom(int first_layer, at::Tensor hidden,
                                         const ForwardOptions& options) {
  at::NoGradGuard no_grad;
  const int64_t count = hidden.size(1);
  std::vector<int64_t> positions = options.positions;
  if (positions.empty()) {
    for (int64_t i = 0; i < count; ++i) positions.push_back(i);
  }
  AttentionInputs in;
  at::Device current = hidden.device();
  RotaryTables(positions, current, &in.cos, &in.sin);
  in.positions = &positions;
  if (options.blocked.defined()) in.blocked = options.blocked.to(current);
  const int last = config_.num_hidden_layers - 1;
  for (int i = first_layer; i <= last; ++i) {
    const DecoderLayerWeights& layer = layers_[i];
    if (layer.device != current) {
      current = layer.device;
      hidden = hidden.to(current);
      in.cos = in.cos.to(current);
      in.sin = in.sin.to(current);
      if (in.blocked.defined()) in.blocked = in.blocked.to(current);
    }
    // Only the logit rows of the last layer's output are read: their queries are enough.
    if (i == last) in.query_rows = options.logit_rows;
    at::Tensor heads = *Attention(i, layer, RmsNorm(hidden, layer.input_layernorm), in);
    at::Tensor residual =
        i == last ? hidden.index_select(1, IndexTensor(options.logit_rows, current)) : hidden;
    hidden = FinishLayer(i, residual, heads);
  }
  if (first_layer > last) {
    hidden = hidden.index_select(1, IndexTensor(options.logit_rows, hidden.device()));
  }
  hidden = RmsNorm(hidden.to(norm_.device()), norm_);
  return at::linear(hidden, lm_head_).to(at::kFloat);  // [B, rows, vocab]
}

}  // namespace attnscope
