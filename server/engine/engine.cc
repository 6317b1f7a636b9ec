#include "server/engine/engine.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "server/engine/device_attention.h"
#include "server/engine/intervention_plan.h"
#include "server/engine/sampler.h"
#include "server/model/device_copy.h"
#include "server/model/transformer.h"

namespace attnscope {

namespace {

using Clock = std::chrono::steady_clock;

// Generate and Forward check interventions again for their structure (layers, heads,
// positions); the caller has applied the server's count limits already.
constexpr InterventionLimits kRecheckLimits{1 << 20, 1, 1, 1};

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Routes the transformer's per-layer probabilities (float32, on the layer's device) to the
// observer, dropping rows outside the capture's row selection. A device consumer gets them
// as tensors where they are. Otherwise the rows are converted to the wire dtype there (for an
// observer that reads wire bytes) and copied to the host through a HostCopyQueue: at once on
// the CPU; on CUDA on a side stream into pinned buffers, delivered at Flush() (once per
// token, after the sampled id), so the next layer's compute overlaps the copy.
class CaptureRouter {
 public:
  CaptureRouter(const CaptureSpec& spec, int num_layers, int num_heads, int prompt_length,
                GenerationObserver* observer, at::Device device)
      : spec_(spec),
        prompt_length_(prompt_length),
        observer_(observer),
        consumer_(observer != nullptr ? observer->device_attention() : nullptr),
        wire_(observer != nullptr && observer->accepts_wire_rows()) {
    request_.layer_captured.assign(num_layers, false);
    for (int layer : spec.layers) request_.layer_captured[layer] = true;
    // Every head in order needs no selection; otherwise the index lives on the device.
    if (static_cast<int>(spec.heads.size()) != num_heads || !IsIdentity(spec.heads)) {
      std::vector<int64_t> heads(spec.heads.begin(), spec.heads.end());
      request_.heads = HostToDevice(at::tensor(heads, at::kLong), device);
    }
    request_.on_probs = [this](int layer, int first_row, const at::Tensor& probs) {
      return Deliver(layer, first_row, probs);
    };
  }
  const AttentionCaptureRequest* request() const { return spec_.enabled() ? &request_ : nullptr; }

  // Delivers every pending copy; the observer's first error, if any.
  absl::Status Flush() {
    if (!copies_.Drain()) return status_;
    return absl::OkStatus();
  }

 private:
  static bool IsIdentity(const std::vector<int>& heads) {
    for (size_t i = 0; i < heads.size(); ++i) {
      if (heads[i] != static_cast<int>(i)) return false;
    }
    return true;
  }

  absl::Status Deliver(int layer, int first_row, const at::Tensor& probs) {
    // probs: [heads, rows, key_len] float32 on the layer's device.
    int begin = first_row, end = first_row + static_cast<int>(probs.size(1));
    if (spec_.rows == CaptureRows::kPromptOnly) end = std::min(end, prompt_length_);
    if (spec_.rows == CaptureRows::kGeneratedOnly) begin = std::max(begin, prompt_length_);
    if (begin >= end) return absl::OkStatus();
    at::Tensor rows = probs.narrow(1, begin - first_row, end - begin);
    if (consumer_ != nullptr) return consumer_->OnDeviceAttention(layer, spec_.heads, begin, rows);
    if (wire_) rows = rows.to(ToScalarType(spec_.dtype));  // before the rows leave the device
    const int key_length = static_cast<int>(probs.size(2));
    const bool delivered =
        copies_.Enqueue(rows, [this, layer, begin, end, key_length](const at::Tensor& host) {
          AttentionBlock block;
          block.layer = layer;
          block.heads = &spec_.heads;
          block.first_row = begin;
          block.num_rows = end - begin;
          block.key_length = key_length;
          if (wire_) {
            block.wire_data = host.data_ptr();
            block.wire_dtype = spec_.dtype;
          }
          if (host.scalar_type() == at::kFloat) block.data = host.data_ptr<float>();
          status_ = observer_->OnAttention(block);
          return status_.ok();
        });
    return delivered ? absl::OkStatus() : status_;
  }

  const CaptureSpec& spec_;
  int prompt_length_;
  GenerationObserver* observer_;
  DeviceAttentionConsumer* consumer_;
  bool wire_;
  AttentionCaptureRequest request_;
  HostCopyQueue copies_;
  absl::Status status_;
};

std::vector<float> RowToHost(const at::Tensor& logits, int64_t row) {
  at::Tensor host = logits[row].to(at::kCPU).contiguous();
  return std::vector<float>(host.data_ptr<float>(), host.data_ptr<float>() + host.numel());
}

// The next token from one logits row on the model's device. Greedy decoding without a
// repetition penalty takes the argmax there (the first maximum, as the host sampler does), so
// the step's one synchronisation with the host moves a single id; otherwise the row comes to
// the host sampler (seeded, transformers' semantics).
int64_t NextToken(const at::Tensor& logits, int64_t row, const GenerationParams& params,
                  Sampler* sampler, const std::vector<int64_t>& history) {
  if (params.greedy && params.repetition_penalty == 1.0f) {
    return logits[row].argmax().item<int64_t>();
  }
  std::vector<float> host = RowToHost(logits, row);
  return sampler->Next(host, history);
}

absl::Status ValidateCapture(const CaptureSpec& capture, const ModelConfig& config) {
  for (int layer : capture.layers) {
    if (layer < 0 || layer >= config.num_hidden_layers) {
      return absl::OutOfRangeError(absl::StrCat("layers: index ", layer, " is out of range [0, ",
                                                config.num_hidden_layers, ")"));
    }
  }
  for (int head : capture.heads) {
    if (head < 0 || head >= config.num_attention_heads) {
      return absl::OutOfRangeError(absl::StrCat("heads: index ", head, " is out of range [0, ",
                                                config.num_attention_heads, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> AssignLayerDevices(int num_layers,
                                            const std::vector<std::string>& devices) {
  std::vector<std::string> assignment;
  if (devices.empty()) return assignment;
  const int64_t parts = static_cast<int64_t>(devices.size());
  for (int64_t i = 0; i < num_layers; ++i) assignment.push_back(devices[i * parts / num_layers]);
  return assignment;
}

Engine::Engine(EngineOptions options, ModelConfig config, std::unique_ptr<ModelRunner> runner)
    : options_(std::move(options)), config_(std::move(config)), runner_(std::move(runner)) {}

Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const EngineOptions& options) {
  auto config = LoadModelConfig(options.model_dir);
  if (!config.ok()) return config.status();
  const at::ScalarType dtype = ToScalarType(options.dtype);
  std::vector<at::Device> layer_devices;
  try {
    at::Device device(options.device);
    if (device.is_cuda() && !at::hasCUDA()) {
      return absl::FailedPreconditionError(
          absl::StrCat("device '", options.device, "': this build or machine has no CUDA"));
    }
    if (device.is_cpu() && dtype == at::kHalf) {
      return absl::InvalidArgumentError(
          "dtype float16 is not supported on CPU; use float32 or bfloat16");
    }
    for (const auto& name : AssignLayerDevices(config->num_hidden_layers, options.layer_devices)) {
      at::Device layer_device(name);
      if (layer_device.is_cuda() && !at::hasCUDA()) {
        return absl::FailedPreconditionError(
            absl::StrCat("layer_devices: '", name, "': this build or machine has no CUDA"));
      }
      layer_devices.push_back(layer_device);
    }
    auto model = Transformer::Load(options.model_dir, *config, device, dtype, layer_devices);
    if (!model.ok()) return model.status();
    return std::unique_ptr<Engine>(
        new Engine(options, *config, std::make_unique<ModelRunner>(std::move(*model))));
  } catch (const std::exception& error) {
    return absl::InternalError(absl::StrCat("loading ", options.model_dir, ": ", error.what()));
  }
}

absl::StatusOr<std::vector<LayerEdits>> Engine::PlanRequestInterventions(
    const InterventionSet* interventions, int prompt_length, int max_length,
    const InterventionLimits& limits) {
  InterventionSet resolved;
  if (interventions != nullptr) resolved = *interventions;
  if (auto status = ValidateInterventions(&resolved, config_, prompt_length, max_length, limits);
      !status.ok()) {
    return status;
  }
  if (resolved.empty()) return std::vector<LayerEdits>();
  return PlanInterventions(*runner_->model, resolved, prompt_length);
}

absl::StatusOr<std::vector<float>> Engine::Forward(const std::vector<int64_t>& ids,
                                                   const CaptureSpec& capture,
                                                   GenerationObserver* observer,
                                                   const InterventionSet* interventions) {
  GenerationObserver default_observer;
  if (observer == nullptr) observer = &default_observer;
  if (auto status = ValidateCapture(capture, config_); !status.ok()) return status;
  const int length = static_cast<int>(ids.size());
  try {
    auto planned = PlanRequestInterventions(interventions, length, length, kRecheckLimits);
    if (!planned.ok()) return planned.status();
    std::vector<LayerEdits> edits = *std::move(planned);
    Transformer& model = *runner_->model;
    KVCache cache = model.NewCache(length);
    CaptureRouter router(capture, config_.num_hidden_layers, config_.num_attention_heads, length,
                         observer, model.device());
    ForwardOptions options;
    options.capture = router.request();
    options.edits = edits.empty() ? nullptr : &edits;
    options.prompt_length = length;
    auto logits = model.Forward(ids, &cache, options);
    if (!logits.ok()) return logits.status();
    at::Tensor host = logits->to(at::kCPU).contiguous();
    if (absl::Status flushed = router.Flush(); !flushed.ok()) return flushed;
    return std::vector<float>(host.data_ptr<float>(), host.data_ptr<float>() + host.numel());
  } catch (const std::exception& error) {
    return absl::InternalError(absl::StrCat("forward failed: ", error.what()));
  }
}

absl::StatusOr<GenerationResult> Engine::Generate(const std::vector<int64_t>& prompt_ids,
                                                  const GenerationParams& params,
                                                  const CaptureSpec& capture,
                                                  GenerationObserver* observer,
                                                  const InterventionSet* interventions) {
  GenerationObserver default_observer;
  if (observer == nullptr) observer = &default_observer;
  if (prompt_ids.empty()) return absl::InvalidArgumentError("input: the prompt has no tokens");
  if (params.max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens: ", params.max_new_tokens, " is negative"));
  }
  if (!params.greedy && !(params.temperature > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature: ", params.temperature, " must be > 0 when sampling"));
  }
  if (!(params.top_p > 0 && params.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p: ", params.top_p, " is outside (0, 1]"));
  }
  if (auto status = ValidateCapture(capture, config_); !status.ok()) return status;
  const int64_t capacity =
      SequencePositions(static_cast<int64_t>(prompt_ids.size()), params.max_new_tokens);
  if (capacity > config_.max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat(
        "prompt (", prompt_ids.size(), ") + max_new_tokens (", params.max_new_tokens,
        ") exceeds the model's max_position_embeddings ", config_.max_position_embeddings));
  }
  const std::vector<int64_t>& eos_ids =
      params.eos_token_ids.empty() ? config_.eos_token_ids : params.eos_token_ids;
  const int prompt_length = static_cast<int>(prompt_ids.size());
  try {
    auto planned = PlanRequestInterventions(interventions, prompt_length,
                                            static_cast<int>(capacity), kRecheckLimits);
    if (!planned.ok()) return planned.status();
    std::vector<LayerEdits> edits = *std::move(planned);
    Transformer& model = *runner_->model;
    GenerationResult result;
    result.prompt_length = prompt_length;
    result.token_ids = prompt_ids;
    if (auto status = observer->OnStart(prompt_ids); !status.ok()) return status;
    if (auto status = observer->CheckContinue(); !status.ok()) return status;

    KVCache cache = model.NewCache(static_cast<int>(capacity));
    CaptureRouter router(capture, config_.num_hidden_layers, config_.num_attention_heads,
                         prompt_length, observer, model.device());
    const AttentionCaptureRequest* capture_request = router.request();
    const bool capture_generated = capture.enabled() && capture.rows != CaptureRows::kPromptOnly;

    auto start = Clock::now();
    ForwardOptions options;
    options.capture = capture_request;
    options.edits = edits.empty() ? nullptr : &edits;
    options.prompt_length = prompt_length;
    options.all_logits = params.save_logits;
    auto logits = model.Forward(prompt_ids, &cache, options);
    if (!logits.ok()) return logits.status();
    const int vocab = config_.vocab_size;
    auto keep_logits = [&](const at::Tensor& rows) {
      if (!params.save_logits) return;
      at::Tensor host = rows.to(at::kCPU).contiguous();
      result.logits.insert(result.logits.end(), host.data_ptr<float>(),
                           host.data_ptr<float>() + host.numel());
    };
    keep_logits(*logits);
    Sampler sampler(params);
    // Sampling synchronises with the device (the step's one wait); the captured rows copied
    // meanwhile are delivered right after, before the token is announced.
    int64_t token = params.max_new_tokens > 0 ? NextToken(*logits, logits->size(0) - 1, params,
                                                          &sampler, result.token_ids)
                                              : 0;
    if (absl::Status flushed = router.Flush(); !flushed.ok()) return flushed;
    result.prefill_seconds = SecondsSince(start);

    start = Clock::now();
    std::string stop_reason = "max_new_tokens";
    for (int step = 0; step < params.max_new_tokens; ++step) {
      result.token_ids.push_back(token);
      const int position = static_cast<int>(result.token_ids.size()) - 1;
      if (auto status = observer->OnToken(token, position); !status.ok()) return status;

      bool stop = step + 1 == params.max_new_tokens;
      if (!params.ignore_eos && std::find(eos_ids.begin(), eos_ids.end(), token) != eos_ids.end()) {
        stop_reason = "eos";
        stop = true;
      } else if (!params.stop_strings.empty() && params.decode) {
        const std::string text = params.decode(
            std::vector<int64_t>(result.token_ids.begin() + prompt_length, result.token_ids.end()));
        for (const auto& stop_string : params.stop_strings) {
          if (!stop_string.empty() && text.find(stop_string) != std::string::npos) {
            stop_reason = "stop_string";
            stop = true;
          }
        }
      }
      // The last token also runs through the model when its attention row (or its logits)
      // is wanted; its logits are not used for sampling.
      if (stop && !capture_generated && !params.save_logits) break;
      if (auto status = observer->CheckContinue(); !status.ok()) return status;
      options.all_logits = true;
      auto step_logits = model.Forward({token}, &cache, options);
      if (!step_logits.ok()) return step_logits.status();
      keep_logits(*step_logits);
      if (!stop) token = NextToken(*step_logits, 0, params, &sampler, result.token_ids);
      if (absl::Status flushed = router.Flush(); !flushed.ok()) return flushed;
      if (stop) break;
    }
    SynchronizeDevice(model.device());  // queued device work (reductions) counts in the time
    result.stop_reason = stop_reason;
    if (params.save_logits) result.logits.resize(result.token_ids.size() * vocab);
    result.decode_seconds = SecondsSince(start);
    return result;
  } catch (const std::exception& error) {
    return absl::InternalError(absl::StrCat("generation failed: ", error.what()));
  }
}

}  // namespace attnscope
