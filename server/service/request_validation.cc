#include "server/service/request_validation.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/service/status_util.h"

namespace attnscope::service {
namespace {

absl::Status Invalid(const std::string& field, const std::string& value, const std::string& limit) {
  return absl::InvalidArgumentError(absl::StrCat(field, " = ", value, ": ", limit));
}

std::string FloatText(float value) {
  if (std::isnan(value)) return "NaN";
  return absl::StrCat(value);
}

absl::Status NoTokenizer(const std::string& what, const ModelView& model) {
  return absl::FailedPreconditionError(absl::StrCat(
      what, " needs tokenizer files (tokenizer.json or tokenizer.model) in the model folder ",
      model.model_dir, ", which has none"));
}

}  // namespace

absl::StatusOr<GenerationParams> ValidateGenerationParams(const v1::GenerationParams& p,
                                                          const ModelView& model,
                                                          const ServerLimits& limits) {
  GenerationParams params;
  if (p.max_new_tokens() < 0) {
    return Invalid("generation.max_new_tokens", absl::StrCat(p.max_new_tokens()),
                   "must be >= 0 (0 means the server default)");
  }
  if (p.max_new_tokens() > limits.max_new_tokens) {
    return Invalid(
        "generation.max_new_tokens", absl::StrCat(p.max_new_tokens()),
        absl::StrCat("exceeds the server limit limits.max_new_tokens = ", limits.max_new_tokens));
  }
  params.max_new_tokens = p.prompt_only()           ? 0
                          : p.max_new_tokens() == 0 ? limits.default_max_new_tokens
                                                    : p.max_new_tokens();
  params.greedy = !p.sample();
  // Sampling fields are checked even when greedy, so that a bad value never passes silently.
  if (!std::isfinite(p.temperature()) || p.temperature() < 0) {
    return Invalid("generation.temperature", FloatText(p.temperature()),
                   "must be a finite number > 0 (0 means 1.0)");
  }
  params.temperature = p.temperature() == 0 ? 1.0f : p.temperature();
  if (p.top_k() < 0) {
    return Invalid("generation.top_k", absl::StrCat(p.top_k()), "must be >= 0 (0 means off)");
  }
  params.top_k = p.top_k();
  if (!(p.top_p() >= 0 && p.top_p() <= 1)) {  // NaN fails both comparisons
    return Invalid("generation.top_p", FloatText(p.top_p()),
                   "must be in (0, 1] (0 means 1.0, off)");
  }
  params.top_p = p.top_p() == 0 ? 1.0f : p.top_p();
  if (!std::isfinite(p.repetition_penalty()) || p.repetition_penalty() < 0) {
    return Invalid("generation.repetition_penalty", FloatText(p.repetition_penalty()),
                   "must be a finite number > 0 (0 means 1.0, off)");
  }
  params.repetition_penalty = p.repetition_penalty() == 0 ? 1.0f : p.repetition_penalty();
  params.seed = p.seed();
  const int64_t vocab = model.config->vocab_size;
  for (int i = 0; i < p.eos_token_ids_size(); ++i) {
    const int64_t id = p.eos_token_ids(i);
    if (id < 0 || id >= vocab) {
      return Invalid(absl::StrCat("generation.eos_token_ids[", i, "]"), absl::StrCat(id),
                     absl::StrCat("must be in [0, vocab_size = ", vocab, ")"));
    }
    params.eos_token_ids.push_back(id);
  }
  if (p.ignore_eos()) {
    params.ignore_eos = true;
  }
  for (int i = 0; i < p.stop_strings_size(); ++i) {
    if (p.stop_strings(i).empty()) {
      return Invalid(absl::StrCat("generation.stop_strings[", i, "]"), "\"\"", "must not be empty");
    }
    params.stop_strings.push_back(p.stop_strings(i));
  }
  if (!params.stop_strings.empty()) {
    if (model.tokenizer() == nullptr) return NoTokenizer("generation.stop_strings", model);
    const Tokenizer* tokenizer = model.tokenizer();
    // As the command line: stop strings match the text without special tokens.
    params.decode = [tokenizer](const std::vector<int64_t>& ids) {
      return tokenizer->Decode(ids, /*skip_special_tokens=*/true);
    };
  }
  return params;
}

absl::StatusOr<CaptureSpec> ValidateCaptureSpec(const v1::CaptureSpec& spec,
                                                const ModelConfig& config,
                                                const std::string& field_prefix) {
  CaptureSpec capture;
  switch (spec.dtype()) {
    case v1::DTYPE_UNSPECIFIED:
    case v1::DTYPE_FLOAT32:
      capture.dtype = CaptureDType::kFloat32;
      break;
    case v1::DTYPE_FLOAT16:
      capture.dtype = CaptureDType::kFloat16;
      break;
    case v1::DTYPE_BFLOAT16:
      capture.dtype = CaptureDType::kBFloat16;
      break;
    default:
      return Invalid(field_prefix + ".dtype", absl::StrCat(static_cast<int>(spec.dtype())),
                     "unknown dtype; must be DTYPE_FLOAT32 (1), DTYPE_FLOAT16 (2) or "
                     "DTYPE_BFLOAT16 (3)");
  }
  switch (spec.rows()) {
    case v1::ROWS_ALL:
      capture.rows = CaptureRows::kAll;
      break;
    case v1::ROWS_PROMPT_ONLY:
      capture.rows = CaptureRows::kPromptOnly;
      break;
    case v1::ROWS_GENERATED_ONLY:
      capture.rows = CaptureRows::kGeneratedOnly;
      break;
    default:
      return Invalid(field_prefix + ".rows", absl::StrCat(static_cast<int>(spec.rows())),
                     "unknown row selection; must be ROWS_ALL (0), ROWS_PROMPT_ONLY (1) or "
                     "ROWS_GENERATED_ONLY (2)");
  }
  std::vector<int> layers(spec.layers().begin(), spec.layers().end());
  std::vector<int> heads(spec.heads().begin(), spec.heads().end());
  // A bad index is a bad argument of this request (ResolveIndices says OUT_OF_RANGE).
  absl::StatusOr<std::vector<int>> resolved_layers =
      ResolveIndices(layers, config.num_hidden_layers, field_prefix + ".layers");
  if (!resolved_layers.ok()) {
    return absl::InvalidArgumentError(resolved_layers.status().message());
  }
  absl::StatusOr<std::vector<int>> resolved_heads =
      ResolveIndices(heads, config.num_attention_heads, field_prefix + ".heads");
  if (!resolved_heads.ok()) {
    return absl::InvalidArgumentError(resolved_heads.status().message());
  }
  if (!spec.disabled()) {
    capture.layers = *std::move(resolved_layers);
    capture.heads = *std::move(resolved_heads);
  }
  return capture;
}

absl::StatusOr<PreparedPrompt> ResolvePromptInput(const PromptInput& input,
                                                  const ModelView& model) {
  switch (input.kind) {
    case PromptInput::Kind::kText:
      if (input.text.empty()) return Invalid("text", "\"\"", "the prompt must not be empty");
      break;
    case PromptInput::Kind::kChat:
      if (input.messages.empty()) {
        return Invalid("messages.messages", "[]",
                       "the conversation must hold at least one message");
      }
      break;
    case PromptInput::Kind::kIds: {
      if (input.ids.empty()) return Invalid("ids.ids", "[]", "the prompt must not be empty");
      const int64_t vocab = model.config->vocab_size;
      for (size_t i = 0; i < input.ids.size(); ++i) {
        if (input.ids[i] < 0 || input.ids[i] >= vocab) {
          return Invalid(absl::StrCat("ids.ids[", i, "]"), absl::StrCat(input.ids[i]),
                         absl::StrCat("must be in [0, vocab_size = ", vocab, ")"));
        }
      }
      break;
    }
  }
  static const ModelTextTools kNoTools;
  absl::StatusOr<PreparedPrompt> prompt =
      PreparePrompt(input, model.tools != nullptr ? *model.tools : kNoTools);
  if (!prompt.ok()) return prompt.status();
  if (prompt->ids.empty()) return Invalid("input", "(no tokens)", "the prompt has no tokens");
  return prompt;
}

absl::Status CheckTokenLimits(int prompt_tokens, int max_new_tokens, const ModelConfig& config,
                              const ServerLimits& limits) {
  if (prompt_tokens > limits.max_prompt_tokens) {
    return Invalid("prompt tokens", absl::StrCat(prompt_tokens),
                   absl::StrCat("exceeds the server limit limits.max_prompt_tokens = ",
                                limits.max_prompt_tokens));
  }
  const int64_t total = static_cast<int64_t>(prompt_tokens) + max_new_tokens;
  if (total > limits.max_total_tokens) {
    return Invalid("prompt tokens + generation.max_new_tokens",
                   absl::StrCat(prompt_tokens, " + ", max_new_tokens, " = ", total),
                   absl::StrCat("exceeds the server limit limits.max_total_tokens = ",
                                limits.max_total_tokens));
  }
  if (config.max_position_embeddings > 0 && total > config.max_position_embeddings) {
    return Invalid("prompt tokens + generation.max_new_tokens",
                   absl::StrCat(prompt_tokens, " + ", max_new_tokens, " = ", total),
                   absl::StrCat("exceeds the model's max_position_embeddings = ",
                                config.max_position_embeddings));
  }
  return absl::OkStatus();
}

absl::Status CheckCaptureBytes(const CaptureSpec& capture, int total_tokens,
                               const ServerLimits& limits, uint64_t* estimate) {
  *estimate = capture.enabled() ? EstimateCaptureBytes(capture, total_tokens) : 0;
  if (*estimate > limits.max_capture_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("capture size = ", *estimate, " bytes (", capture.layers.size(), " layers x ",
                     capture.heads.size(), " heads x ", total_tokens, " x ", total_tokens,
                     " tokens x ", CaptureDTypeSize(capture.dtype),
                     " bytes): exceeds the server limit "
                     "limits.max_capture_bytes = ",
                     limits.max_capture_bytes,
                     "; capture fewer layers or heads, a 2-byte dtype or fewer tokens"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PreparedGeneration> PrepareGeneration(const v1::GenerateRequest& request,
                                                     const ModelView& model,
                                                     const ServerLimits& limits) {
  PreparedGeneration prepared;
  absl::StatusOr<GenerationParams> params =
      ValidateGenerationParams(request.generation(), model, limits);
  if (!params.ok()) return params.status();
  prepared.params = *std::move(params);
  prepared.max_new_tokens = prepared.params.max_new_tokens;
  absl::StatusOr<CaptureSpec> capture = ValidateCaptureSpec(request.capture(), *model.config);
  if (!capture.ok()) return capture.status();
  prepared.capture = *std::move(capture);
  absl::StatusOr<PreparedPrompt> prompt = ResolveRequestInput(request, model);
  if (!prompt.ok()) return prompt.status();
  prepared.prompt = *std::move(prompt);
  const int prompt_tokens = static_cast<int>(prepared.prompt.ids.size());
  ATTNSCOPE_RETURN_IF_ERROR(
      CheckTokenLimits(prompt_tokens, prepared.max_new_tokens, *model.config, limits));
  ATTNSCOPE_RETURN_IF_ERROR(CheckCaptureBytes(prepared.capture,
                                              prompt_tokens + prepared.max_new_tokens, limits,
                                              &prepared.estimated_capture_bytes));
  return prepared;
}

}  // namespace attnscope::service
