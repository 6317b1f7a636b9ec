#include "server/session/prepare.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/status/field_error.h"

namespace attnscope::session {
namespace {

#define ATTNSCOPE_SESSION_RETURN_IF_ERROR(expr) \
  do {                                          \
    const absl::Status status_ = (expr);        \
    if (!status_.ok()) return status_;          \
  } while (0)

absl::Status NoTokenizer(const std::string& what, const ModelView& model) {
  return absl::FailedPreconditionError(absl::StrCat(
      what, " needs tokenizer files (tokenizer.json or tokenizer.model) in the model folder ",
      model.model_dir, ", which has none"));
}

// The probe draws from [0, first special id at the top of the vocabulary): ordinary tokens.
int64_t OrdinaryVocabularyEnd(const ModelView& model) {
  int64_t end = model.config->vocab_size;
  if (const Tokenizer* tokenizer = model.tokenizer()) {
    end = std::min<int64_t>(end, tokenizer->vocab_size());
    while (end > 1 && tokenizer->IsSpecial(end - 1)) --end;
  }
  return end;
}

}  // namespace

absl::StatusOr<GenerationParams> ValidateGenerationParams(const GenerationSpec& p,
                                                          const ModelView& model,
                                                          const RequestLimits& limits) {
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckGenerationSpec(p));
  if (p.max_new_tokens > limits.max_new_tokens) {
    return FieldError(
        "generation.max_new_tokens", absl::StrCat(p.max_new_tokens),
        absl::StrCat("exceeds the server limit limits.max_new_tokens = ", limits.max_new_tokens));
  }
  GenerationParams params;
  params.max_new_tokens = p.prompt_only           ? 0
                          : p.max_new_tokens == 0 ? limits.default_max_new_tokens
                                                  : p.max_new_tokens;
  params.greedy = !p.sample;
  params.temperature = p.temperature == 0 ? 1.0f : p.temperature;
  params.top_k = p.top_k;
  params.top_p = p.top_p == 0 ? 1.0f : p.top_p;
  params.repetition_penalty = p.repetition_penalty == 0 ? 1.0f : p.repetition_penalty;
  params.seed = p.seed;
  const int64_t vocab = model.config->vocab_size;
  for (size_t i = 0; i < p.eos_token_ids.size(); ++i) {
    const int64_t id = p.eos_token_ids[i];
    if (id < 0 || id >= vocab) {
      return FieldError(absl::StrCat("generation.eos_token_ids[", i, "]"), absl::StrCat(id),
                        absl::StrCat("must be in [0, vocab_size = ", vocab, ")"));
    }
    params.eos_token_ids.push_back(id);
  }
  params.ignore_eos = p.ignore_eos;
  params.save_logits = p.save_logits;
  params.stop_strings = p.stop_strings;
  if (!params.stop_strings.empty()) {
    if (model.tokenizer() == nullptr) return NoTokenizer("generation.stop_strings", model);
    const Tokenizer* tokenizer = model.tokenizer();
    // Stop strings match the text without special tokens.
    params.decode = [tokenizer](const std::vector<int64_t>& ids) {
      return tokenizer->Decode(ids, /*skip_special_tokens=*/true);
    };
  }
  return params;
}

absl::StatusOr<CaptureSpec> ValidateCaptureSpec(const CaptureRequest& spec,
                                                const ModelConfig& config,
                                                const std::string& field_prefix) {
  CaptureSpec capture;
  capture.dtype = spec.dtype;
  capture.rows = spec.rows;
  // A bad index is a bad argument of this request (ResolveIndices says OUT_OF_RANGE).
  absl::StatusOr<std::vector<int>> layers =
      ResolveIndices(spec.layers, config.num_hidden_layers, field_prefix + ".layers");
  if (!layers.ok()) {
    return WithRefusedField(absl::InvalidArgumentError(layers.status().message()),
                            field_prefix + ".layers");
  }
  absl::StatusOr<std::vector<int>> heads =
      ResolveIndices(spec.heads, config.num_attention_heads, field_prefix + ".heads");
  if (!heads.ok()) {
    return WithRefusedField(absl::InvalidArgumentError(heads.status().message()),
                            field_prefix + ".heads");
  }
  if (!spec.disabled) {
    capture.layers = *std::move(layers);
    capture.heads = *std::move(heads);
  }
  return capture;
}

absl::StatusOr<PreparedPrompt> ResolvePromptInput(const std::optional<PromptInput>& input,
                                                  const ModelView& model) {
  if (!input) {
    return WithRefusedField(
        absl::InvalidArgumentError("input: empty request: set one of text, messages or ids"),
        "input");
  }
  switch (input->kind) {
    case PromptInput::Kind::kText:
      if (input->text.empty()) return FieldError("text", "\"\"", "the prompt must not be empty");
      break;
    case PromptInput::Kind::kChat:
      if (input->messages.empty()) {
        return FieldError("messages.messages", "[]",
                          "the conversation must hold at least one message");
      }
      break;
    case PromptInput::Kind::kIds: {
      if (input->ids.empty()) return FieldError("ids.ids", "[]", "the prompt must not be empty");
      const int64_t vocab = model.config->vocab_size;
      for (size_t i = 0; i < input->ids.size(); ++i) {
        if (input->ids[i] < 0 || input->ids[i] >= vocab) {
          return FieldError(absl::StrCat("ids.ids[", i, "]"), absl::StrCat(input->ids[i]),
                            absl::StrCat("must be in [0, vocab_size = ", vocab, ")"));
        }
      }
      break;
    }
  }
  static const ModelTextTools kNoTools;
  absl::StatusOr<PreparedPrompt> prompt =
      PreparePrompt(*input, model.tools != nullptr ? *model.tools : kNoTools);
  if (!prompt.ok()) return prompt.status();
  if (prompt->ids.empty()) return FieldError("input", "(no tokens)", "the prompt has no tokens");
  return prompt;
}

absl::Status CheckTokenLimits(int prompt_tokens, int max_new_tokens, const ModelConfig& config,
                              const RequestLimits& limits) {
  if (prompt_tokens > limits.max_prompt_tokens) {
    // The input is the field to shorten.
    return WithRefusedField(
        FieldError("prompt tokens", absl::StrCat(prompt_tokens),
                   absl::StrCat("exceeds the server limit limits.max_prompt_tokens = ",
                                limits.max_prompt_tokens)),
        "input");
  }
  const int64_t total = static_cast<int64_t>(prompt_tokens) + max_new_tokens;
  if (total > limits.max_total_tokens) {
    return WithRefusedField(
        FieldError("prompt tokens + generation.max_new_tokens",
                   absl::StrCat(prompt_tokens, " + ", max_new_tokens, " = ", total),
                   absl::StrCat("exceeds the server limit limits.max_total_tokens = ",
                                limits.max_total_tokens)),
        "generation.max_new_tokens");
  }
  // The engine's own formula (what its KV cache holds), so that admitted means runnable.
  const int64_t positions = SequencePositions(prompt_tokens, max_new_tokens);
  if (config.max_position_embeddings > 0 && positions > config.max_position_embeddings) {
    return WithRefusedField(
        FieldError("prompt tokens + generation.max_new_tokens",
                   absl::StrCat(prompt_tokens, " + ", max_new_tokens, " = ", positions),
                   absl::StrCat("exceeds the model's max_position_embeddings = ",
                                config.max_position_embeddings)),
        "generation.max_new_tokens");
  }
  return absl::OkStatus();
}

absl::Status CheckCaptureBytes(const CaptureSpec& capture, int total_tokens,
                               const RequestLimits& limits, uint64_t* estimate) {
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

absl::StatusOr<analysis::AnalysisOptions> ResolveAnalysisOptions(const AnalysisSpec& spec) {
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckAnalysisSpec(spec));
  analysis::AnalysisOptions options;
  if (spec.beginning_k > 0) options.metrics.beginning_columns = spec.beginning_k;
  if (spec.self_threshold > 0) options.metrics.self_threshold = spec.self_threshold;
  if (spec.focused_entropy_threshold > 0) {
    options.metrics.focused_entropy = spec.focused_entropy_threshold;
  }
  if (!spec.terms.empty()) options.terms = spec.terms;
  options.queries = spec.queries;
  if (spec.query_positions > 0) options.max_query_positions = spec.query_positions;
  if (spec.top_k > 0) options.top_k_keys = spec.top_k;
  if (spec.top_terms > 0) options.top_terms = spec.top_terms;
  options.top_k_per_head = spec.top_k_per_head;
  options.term_submatrix = spec.include_term_submatrix;
  return options;
}

absl::StatusOr<PreparedGeneration> PrepareGeneration(const Request& request, const ModelView& model,
                                                     const RequestLimits& limits) {
  PreparedGeneration prepared;
  absl::StatusOr<GenerationParams> params =
      ValidateGenerationParams(request.generation, model, limits);
  if (!params.ok()) return params.status();
  prepared.params = *std::move(params);
  prepared.max_new_tokens = prepared.params.max_new_tokens;
  absl::StatusOr<CaptureSpec> capture = ValidateCaptureSpec(request.capture, *model.config);
  if (!capture.ok()) return capture.status();
  prepared.capture = *std::move(capture);
  absl::StatusOr<PreparedPrompt> prompt = ResolvePromptInput(request.input, model);
  if (!prompt.ok()) return prompt.status();
  prepared.prompt = *std::move(prompt);
  const int prompt_tokens = static_cast<int>(prepared.prompt.ids.size());
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(
      CheckTokenLimits(prompt_tokens, prepared.max_new_tokens, *model.config, limits));
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckCaptureBytes(prepared.capture,
                                                      prompt_tokens + prepared.max_new_tokens,
                                                      limits, &prepared.estimated_capture_bytes));
  absl::StatusOr<InterventionSet> interventions = PrepareInterventions(
      request, prepared.prompt,
      static_cast<int>(SequencePositions(prompt_tokens, prepared.max_new_tokens)), model, limits);
  if (!interventions.ok()) return interventions.status();
  prepared.interventions = *std::move(interventions);
  return prepared;
}

absl::StatusOr<PreparedAnalysis> PrepareAnalysis(const Request& request, const ModelView& model,
                                                 const RequestLimits& limits) {
  const AnalysisSpec& spec = request.analysis;
  PreparedAnalysis prepared;
  absl::StatusOr<GenerationParams> params =
      ValidateGenerationParams(request.generation, model, limits);
  if (!params.ok()) return params.status();
  prepared.params = *std::move(params);
  // Analysis reads every row in float32, whatever a capture would store.
  CaptureRequest capture_request;
  capture_request.layers = spec.layers;
  capture_request.heads = spec.heads;
  absl::StatusOr<CaptureSpec> capture =
      ValidateCaptureSpec(capture_request, *model.config, "analysis");
  if (!capture.ok()) return capture.status();
  prepared.capture = *std::move(capture);
  absl::StatusOr<analysis::AnalysisOptions> options = ResolveAnalysisOptions(spec);
  if (!options.ok()) return options.status();
  prepared.options = *std::move(options);

  PreparedPrompt& prompt = prepared.prompt;
  if (spec.induction_probe) {
    const int n = spec.induction_probe->length;
    // The probe is n random tokens twice: check its length before building it (a huge n
    // would allocate gigabytes first).
    const int64_t probe_tokens = 2 * static_cast<int64_t>(n);
    if (probe_tokens > limits.max_prompt_tokens) {
      return FieldError("analysis.induction_probe.length", absl::StrCat(n),
                        absl::StrCat("the probe has 2 x length = ", probe_tokens,
                                     " tokens, which exceeds the server limit "
                                     "limits.max_prompt_tokens = ",
                                     limits.max_prompt_tokens));
    }
    prompt.ids = analysis::MakeInductionProbe(n, spec.induction_probe->seed, 0,
                                              OrdinaryVocabularyEnd(model));
    prepared.options.induction = analysis::InductionProbe{n, 0};
    prepared.params.max_new_tokens = 0;  // the probe scores its own rows; nothing to generate
    prepared.probe = true;
    if (const Tokenizer* tokenizer = model.tokenizer()) {
      for (int64_t id : prompt.ids) prompt.tokens.push_back(tokenizer->TokenString(id));
    }
  } else {
    absl::StatusOr<PreparedPrompt> resolved = ResolvePromptInput(request.input, model);
    if (!resolved.ok()) return resolved.status();
    prompt = *std::move(resolved);
  }
  const int prompt_tokens = static_cast<int>(prompt.ids.size());
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(
      CheckTokenLimits(prompt_tokens, prepared.params.max_new_tokens, *model.config, limits));

  analysis::AnalysisInput& input = prepared.input;
  input.token_ids = prompt.ids;
  input.tokens = prompt.tokens;
  input.prompt_length = prompt_tokens;
  input.text = prompt.text;
  for (const auto& [begin, end] : prompt.spans) {
    input.spans.push_back({static_cast<int>(begin), static_cast<int>(end)});
  }
  absl::StatusOr<InterventionSet> interventions = PrepareInterventions(
      request, prompt,
      static_cast<int>(SequencePositions(prompt_tokens, prepared.params.max_new_tokens)), model,
      limits);
  if (!interventions.ok()) return interventions.status();
  prepared.interventions = *std::move(interventions);
  return prepared;
}

InterventionLimits InterventionLimitsOf(const RequestLimits& limits) {
  InterventionLimits out;
  out.max_interventions = limits.max_interventions;
  out.max_candidates = limits.max_candidates;
  out.max_candidate_tokens = limits.max_candidate_tokens;
  out.max_sweep_heads = limits.max_sweep_heads;
  return out;
}

absl::StatusOr<InterventionSet> PrepareInterventions(const Request& request,
                                                     const PreparedPrompt& prompt, int max_length,
                                                     const ModelView& model,
                                                     const RequestLimits& limits) {
  InterventionSet set;
  // The count first: nothing is resolved or tokenized for an oversized list.
  if (static_cast<int64_t>(request.interventions.size()) > limits.max_interventions) {
    return FieldError("interventions", absl::StrCat(request.interventions.size(), " interventions"),
                      absl::StrCat("exceeds the server limit limits.max_interventions = ",
                                   limits.max_interventions));
  }
  set.items = request.interventions;
  if (request.patch_source) {
    absl::StatusOr<PreparedPrompt> source = ResolvePromptInput(request.patch_source, model);
    if (!source.ok()) {
      const std::optional<std::string> inner = RefusedField(source.status());
      return WithRefusedField(
          absl::Status(source.status().code(),
                       absl::StrCat("patch_source: ", source.status().message())),
          inner ? absl::StrCat("patch_source.", *inner) : "patch_source");
    }
    set.patch_source_ids = source->ids;
  }
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(
      ResolveKnockoutTerms(&set, prompt.text, prompt.spans, prompt.tokens));
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(
      ValidateInterventions(&set, *model.config, static_cast<int>(prompt.ids.size()), max_length,
                            InterventionLimitsOf(limits)));
  return set;
}

}  // namespace attnscope::session
