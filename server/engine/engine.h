// The generation engine: prefill, KV-cached decode, sampling, stop rules, and attention
// capture delivered to a sink as rows are produced. Knows nothing of gRPC.
//
// This header is torch-free on purpose: the command line, the service and the tests include
// it without paying for libtorch's headers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/capture/capture_spec.h"
#include "server/engine/interventions.h"
#include "server/model/model_config.h"

namespace attnscope {

// Where and in which precision the model runs.
struct EngineOptions {
  std::string model_dir;          // Hugging Face snapshot folder
  std::string device = "cpu";     // "cpu", "cuda", "cuda:1"
  DType dtype = DType::kFloat32;  // run dtype
  // CUDA devices over which consecutive layers are spread; empty means all on `device`.
  std::vector<std::string> layer_devices;
};

struct GenerationParams {
  int max_new_tokens = 32;
  bool greedy = true;               // false: sample with the fields below
  float temperature = 1.0f;         // > 0 when sampling
  int top_k = 0;                    // 0: off
  float top_p = 1.0f;               // in (0, 1]
  float repetition_penalty = 1.0f;  // 1: off; HF semantics (divide positive logits)
  uint64_t seed = 0;
  std::vector<int64_t> eos_token_ids;  // empty: the model's generation_config eos ids
  bool ignore_eos = false;             // true: run max_new_tokens whatever is sampled
  // Stop once the decoded continuation contains one of these; needs `decode`.
  std::vector<std::string> stop_strings;
  std::function<std::string(const std::vector<int64_t>&)> decode;
  bool save_logits = false;  // keep the logits row of every position (file sink)
};

// One slice of the [H_sel, T, T] attention tensor of one layer: query rows
// [first_row, first_row + num_rows) by keys [0, key_length), for the captured heads.
// Data is float32 on the host, layout [heads.size(), num_rows, key_length], and holds the
// full rows (causal zeros included); it is valid only during the call.
// For an observer that accepts_wire_rows(), `wire_data` holds the same values already in the
// capture's dtype (converted where they were computed, round to nearest even), and `data` is
// set only when that dtype is float32.
struct AttentionBlock {
  int layer = 0;
  const std::vector<int>* heads = nullptr;  // query-head indices, in capture order
  int first_row = 0;
  int num_rows = 0;
  int key_length = 0;
  const float* data = nullptr;
  const void* wire_data = nullptr;
  DType wire_dtype = DType::kFloat32;
};

class DeviceAttentionConsumer;  // server/engine/device_attention.h (libtorch)

// Receives what the engine produces. Returning a non-OK status stops generation at once
// with that status (that is how cancellation, deadlines and stalled readers stop a request).
class GenerationObserver {
 public:
  virtual ~GenerationObserver() = default;
  // Called once, before any model work, with the prompt ids.
  virtual absl::Status OnStart(const std::vector<int64_t>& prompt_ids) { return absl::OkStatus(); }
  // The prefill block per layer (rows 0..P-1), then one row per layer per decode step.
  virtual absl::Status OnAttention(const AttentionBlock& block) { return absl::OkStatus(); }
  // A newly sampled token (position = its index in the full sequence).
  virtual absl::Status OnToken(int64_t token_id, int position) { return absl::OkStatus(); }
  // Checked before every forward step; non-OK stops (cancellation, deadline).
  virtual absl::Status CheckContinue() { return absl::OkStatus(); }
  // Non-null: captured probabilities go to this consumer as tensors where they were computed
  // (AnalyzeHeads' reductions), and OnAttention is not called.
  virtual DeviceAttentionConsumer* device_attention() { return nullptr; }
  // True when OnAttention reads AttentionBlock::wire_data (the capture dtype), so rows leave
  // the device already converted (half the bytes of float32 for float16/bfloat16).
  virtual bool accepts_wire_rows() const { return false; }
};

struct GenerationResult {
  std::vector<int64_t> token_ids;  // prompt then generated
  int prompt_length = 0;
  std::string stop_reason;    // "eos", "max_new_tokens", "stop_string"
  std::vector<float> logits;  // [T, vocab] when save_logits, else empty
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Spreads `num_layers` consecutive layers over `devices` in contiguous, near-equal runs
// (["cuda:0", "cuda:1"] over 28 layers: 0-13 on cuda:0, 14-27 on cuda:1). Empty devices: {}.
std::vector<std::string> AssignLayerDevices(int num_layers,
                                            const std::vector<std::string>& devices);

// Positions a generation occupies: the prompt and every generated token (the last one runs
// through the model too when its attention row or logits are kept). The KV cache holds this
// many, it must not exceed max_position_embeddings, and request validation checks the same
// number, so that whatever validation admits the engine can run.
inline int64_t SequencePositions(int64_t prompt_tokens, int64_t max_new_tokens) {
  return prompt_tokens + max_new_tokens;
}

class ModelRunner;  // defined in engine.cc; holds libtorch state
struct LayerEdits;  // server/model/transformer.h (libtorch)

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const EngineOptions& options);
  ~Engine();

  const ModelConfig& config() const { return config_; }
  const EngineOptions& options() const { return options_; }

  // Runs prefill and decode. With a non-empty capture spec, attention rows for every token,
  // the last generated one included, reach `observer` (one extra forward step runs the last
  // token so that it has a row; its logits are discarded). Thread-compatible: the service
  // serialises calls.
  // `interventions` (validated here again) act in every forward step of the run.
  absl::StatusOr<GenerationResult> Generate(const std::vector<int64_t>& prompt_ids,
                                            const GenerationParams& params,
                                            const CaptureSpec& capture,
                                            GenerationObserver* observer,
                                            const InterventionSet* interventions = nullptr);

  // One uncached forward over `ids`: logits [T, vocab] (row-major) and, for captured layers,
  // attention through the observer. Used by tests and by analysis probes.
  absl::StatusOr<std::vector<float>> Forward(const std::vector<int64_t>& ids,
                                             const CaptureSpec& capture,
                                             GenerationObserver* observer,
                                             const InterventionSet* interventions = nullptr);

  // Log-probabilities of each candidate continuation after the prompt, under the
  // interventions (may be null). All candidates run in one forward: their tokens are packed
  // after the prompt, each seeing the prompt and its own earlier tokens only.
  absl::StatusOr<ScoreResult> Score(const std::vector<int64_t>& prompt_ids,
                                    const std::vector<Candidate>& candidates,
                                    const InterventionSet* interventions,
                                    const InterventionLimits& limits = InterventionLimits());

  // Ablates each (layer, head) of the sweep alone and scores the first two candidates. One
  // clean forward keeps every swept layer's input and head outputs; each variant then runs
  // only its own layer's o_proj + MLP and the layers above, `batch` variants per forward.
  // `progress` runs after each batch; its error stops the sweep. Batch 4: on the
  // Qwen2-0.5B shape at 256 tokens (one CPU thread) batches of 2 and 4 cost 5-7% less CPU time
  // per variant than batches of 8 (whose [8 x 256, 4864] MLP activations leave the cache) or
  // 1 (one measurement, 2026-12-01).
  absl::StatusOr<SweepResult> Sweep(const std::vector<int64_t>& prompt_ids,
                                    const std::vector<Candidate>& candidates, SweepSpec sweep,
                                    const SweepProgress& progress,
                                    const InterventionLimits& limits = InterventionLimits(),
                                    int batch = 4);

 private:
  Engine(EngineOptions options, ModelConfig config, std::unique_ptr<ModelRunner> runner);
  // Forward, Generate and Score: a copy of `interventions` (null: none) validated for a
  // sequence of `prompt_length` tokens and at most `max_length` in all, planned into per-layer
  // edits (empty when there are none). May throw from libtorch: callers run it in their try.
  absl::StatusOr<std::vector<LayerEdits>> PlanRequestInterventions(
      const InterventionSet* interventions, int prompt_length, int max_length,
      const InterventionLimits& limits);
  EngineOptions options_;
  ModelConfig config_;
  std::unique_ptr<ModelRunner> runner_;
};

}  // namespace attnscope
