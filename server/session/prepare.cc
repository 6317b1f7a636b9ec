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

absl::Status NoTokenizer(const std::string& what, const LoadedModel& model) {
  return absl::FailedPreconditionError(absl::StrCat(
      what, " needs tokenizer files (tokenizer.json or tokenizer.model) in the model folder ",
      model.model_dir, ", which has none"));
}

// The probe draws from [0, first special id at the top of the vocabulary): ordinary tokens.
int64_t OrdinaryVocabularyEnd(const LoadedModel& model) {
  int64_t end = model.config.vocab_size;
  if (const Tokenizer* tokenizer = model.tokenizer.get()) {
    end = std::min<int64_t>(end, tokenizer->vocab_size());
    while (end > 1 && tokenizer->IsSpecial(end - 1)) --end;
  }
  return end;
}

absl::Status TooMany(const std::string& field, uint64_t count, const char* unit,
                     const std::string& limit_name, uint64_t limit) {
  return FieldError(field, absl::StrCat(count, " ", unit),
                    absl::StrCat("exceeds the server limit ", limit_name, " = ", limit));
}

absl::Status CheckStrings(const std::vector<std::string>& strings, const std::string& field,
                          int max_count, const char* count_name, int max_bytes,
                          const char* bytes_name) {
  if (strings.size() > static_cast<size_t>(max_count)) {
    return TooMany(field, strings.size(), "entries", count_name, max_count);
  }
  for (size_t i = 0; i < strings.size(); ++i) {
    if (strings[i].size() > static_cast<size_t>(max_bytes)) {
      return TooMany(absl::StrCat(field, "[", i, "]"), strings[i].size(), "bytes", bytes_name,
                     max_bytes);
    }
  }
  return absl::OkStatus();
}

absl::Status CheckIndexList(const std::vector<int>& list, const std::string& field,
                            const RequestLimits& limits) {
  if (list.size() > static_cast<size_t>(limits.max_index_entries)) {
    return TooMany(field, list.size(), "entries", "limits.max_index_entries",
                   limits.max_index_entries);
  }
  return absl::OkStatus();
}

absl::Status PromptTokensOverLimit(uint64_t tokens, const RequestLimits& limits,
                                   const std::string& prefix = "") {
  // The input is the field to shorten.
  return WithRefusedField(
      FieldError(prefix + "prompt tokens", absl::StrCat(tokens),
                 absl::StrCat("exceeds the server limit limits.max_prompt_tokens = ",
                              limits.max_prompt_tokens)),
      prefix.empty() ? "input" : prefix.substr(0, prefix.size() - 1));
}

// prompt + max_new_tokens = `sum` over the limit `limit_name` = `limit`; max_new_tokens is the
// field to lower (the prompt's own size has its own check).
absl::Status TokenSumOverLimit(int prompt_tokens, int max_new_tokens, int64_t sum,
                               const char* limit_name, int64_t limit) {
  return WithRefusedField(FieldError("prompt tokens + generation.max_new_tokens",
                                     absl::StrCat(prompt_tokens, " + ", max_new_tokens, " = ", sum),
                                     absl::StrCat("exceeds ", limit_name, " = ", limit)),
                          "generation.max_new_tokens");
}

absl::Status CheckInputSize(const PromptInput& input, const std::string& prefix,
                            const RequestLimits& limits) {
  const uint64_t max_bytes = limits.max_prompt_bytes();
  const std::string bytes_limit = "limits.max_prompt_bytes_per_token x limits.max_prompt_tokens";
  switch (input.kind) {
    case PromptInput::Kind::kText:
      if (input.text.size() > max_bytes) {
        return TooMany(prefix + "text", input.text.size(), "bytes", bytes_limit, max_bytes);
      }
      break;
    case PromptInput::Kind::kIds:
      // The ids are the prompt's tokens: the same message as after tokenization.
      if (input.ids.size() > static_cast<size_t>(limits.max_prompt_tokens)) {
        return PromptTokensOverLimit(input.ids.size(), limits, prefix);
      }
      break;
    case PromptInput::Kind::kChat: {
      // Every message renders to at least one token (its role markers).
      if (input.messages.size() > static_cast<size_t>(limits.max_prompt_tokens)) {
        return TooMany(prefix + "messages.messages", input.messages.size(), "messages",
                       "limits.max_prompt_tokens", limits.max_prompt_tokens);
      }
      uint64_t total = input.messages_json.size() + input.tools_json.size() +
                       input.documents_json.size() + input.template_kwargs_json.size() +
                       input.template_date.size();
      for (const ChatMessage& message : input.messages) {
        total += message.role.size() + message.content.size();
      }
      if (total > max_bytes) {
        return WithRefusedField(TooMany(prefix + "messages (every field's bytes together)", total,
                                        "bytes", bytes_limit, max_bytes),
                                prefix + "messages");
      }
      break;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckInterventionCount(const Request& request, const RequestLimits& limits) {
  if (request.interventions.size() > static_cast<size_t>(limits.max_interventions)) {
    return TooMany("interventions", request.interventions.size(), "interventions",
                   "limits.max_interventions", limits.max_interventions);
  }
  return absl::OkStatus();
}

absl::Status CheckRequestSizes(const Request& request, const RequestLimits& limits) {
  if (request.input) ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckInputSize(*request.input, "", limits));
  if (request.patch_source) {
    ATTNSCOPE_SESSION_RETURN_IF_ERROR(
        CheckInputSize(*request.patch_source, "interventions.patch_source.", limits));
  }
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckInterventionCount(request, limits));
  // Every intervention's lists together count as one index list and one term list.
  uint64_t indices = 0, terms = 0;
  for (size_t i = 0; i < request.interventions.size(); ++i) {
    const Intervention& item = request.interventions[i];
    indices += item.heads.size() + item.key_positions.size() + item.positions.size();
    terms += item.key_terms.size();
    for (size_t j = 0; j < item.key_terms.size(); ++j) {
      const std::string& term = item.key_terms[j];
      if (term.size() > static_cast<size_t>(limits.max_term_bytes)) {
        return WithRefusedField(
            TooMany("interventions key_terms entry", term.size(), "bytes", "limits.max_term_bytes",
                    limits.max_term_bytes),
            absl::StrCat(InterventionPath("interventions", i, item.kind), ".key_terms[", j, "]"));
      }
    }
  }
  if (indices > static_cast<uint64_t>(limits.max_index_entries)) {
    return WithRefusedField(
        TooMany("interventions (heads + key_positions + positions of every item)", indices,
                "entries", "limits.max_index_entries", limits.max_index_entries),
        "interventions.items");
  }
  if (terms > static_cast<uint64_t>(limits.max_terms)) {
    return WithRefusedField(TooMany("interventions (key_terms of every item)", terms, "entries",
                                    "limits.max_terms", limits.max_terms),
                            "interventions.items");
  }
  const GenerationSpec& generation = request.generation;
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckStrings(
      generation.stop_strings, "generation.stop_strings", limits.max_stop_strings,
      "limits.max_stop_strings", limits.max_stop_string_bytes, "limits.max_stop_string_bytes"));
  if (generation.eos_token_ids.size() > static_cast<size_t>(limits.max_eos_token_ids)) {
    return TooMany("generation.eos_token_ids", generation.eos_token_ids.size(), "entries",
                   "limits.max_eos_token_ids", limits.max_eos_token_ids);
  }
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(
      CheckIndexList(request.capture.layers, "capture.layers", limits));
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckIndexList(request.capture.heads, "capture.heads", limits));
  const AnalysisSpec& analysis = request.analysis;
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckIndexList(analysis.layers, "analysis.layers", limits));
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckIndexList(analysis.heads, "analysis.heads", limits));
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckStrings(analysis.terms, "analysis.terms", limits.max_terms,
                                                 "limits.max_terms", limits.max_term_bytes,
                                                 "limits.max_term_bytes"));
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckStrings(analysis.queries, "analysis.queries",
                                                 limits.max_queries, "limits.max_queries",
                                                 limits.max_term_bytes, "limits.max_term_bytes"));
  return absl::OkStatus();
}

uint64_t AnalysisReplyBytesBound(const PreparedAnalysis& prepared) {
  // Generous per-entry sizes of the report JSON plus the proto summaries: a token string
  // with its id (JSON-escaped, up to 64 bytes), a head's two metric sets, a top-k key, a
  // submatrix value (a JSON double is at most 24 characters, then a comma).
  constexpr uint64_t kTokenBytes = 64, kHeadBytes = 1024, kListBytes = 160, kKeyBytes = 112,
                     kTermBytes = 96, kValueBytes = 26;
  const analysis::AnalysisOptions& options = prepared.options;
  const uint64_t prompt = prepared.prompt.ids.size();
  const uint64_t generated = static_cast<uint64_t>(prepared.params.max_new_tokens);
  const uint64_t tokens = prompt + generated;
  const uint64_t heads = static_cast<uint64_t>(prepared.capture.layers.size()) *
                         static_cast<uint64_t>(prepared.capture.heads.size());
  uint64_t bytes = 2 * tokens * kTokenBytes + prepared.prompt.text.size() + heads * kHeadBytes;
  uint64_t per_head_terms = kHeadBytes + static_cast<uint64_t>(options.top_terms) * kTermBytes;
  if (options.term_submatrix) per_head_terms += generated * prompt * kValueBytes;
  bytes += heads * per_head_terms;
  // One top-k list per layer and query position (and per head with top_k_per_head).
  const uint64_t query_positions =
      static_cast<uint64_t>(options.queries.size()) *
      std::min<uint64_t>(static_cast<uint64_t>(std::max(options.max_query_positions, 0)), prompt);
  const uint64_t lists_per_position =
      1 + (options.top_k_per_head ? prepared.capture.heads.size() : 0);
  bytes += prepared.capture.layers.size() * query_positions * lists_per_position *
           (kListBytes + static_cast<uint64_t>(options.top_k_keys) * kKeyBytes);
  return bytes;
}

uint64_t MaxRequestBytes(const RequestLimits& limits) {
  // Worst-case protobuf encodings: a tag and a length (<= 6 bytes) per string or list, <= 11
  // bytes per varint (10) with its share of a packed field, 16 bytes of framing per chat
  // message.
  const uint64_t prompt_tokens = static_cast<uint64_t>(limits.max_prompt_tokens);
  const uint64_t text = limits.max_prompt_bytes() + 6;
  const uint64_t ids = 11 * prompt_tokens + 6;
  const uint64_t chat = limits.max_prompt_bytes() + 16 * prompt_tokens + 5 * 6;
  // The prompt and the patch source are inputs each.
  const uint64_t inputs = 2 * std::max({text, ids, chat});
  const uint64_t stop =
      static_cast<uint64_t>(limits.max_stop_strings) * (limits.max_stop_string_bytes + 6);
  const uint64_t eos = 11 * static_cast<uint64_t>(limits.max_eos_token_ids) + 6;
  const uint64_t index_list = 11 * static_cast<uint64_t>(limits.max_index_entries) + 6;
  const uint64_t terms =
      static_cast<uint64_t>(limits.max_terms) * (static_cast<uint64_t>(limits.max_term_bytes) + 6);
  const uint64_t queries = static_cast<uint64_t>(limits.max_queries) *
                           (static_cast<uint64_t>(limits.max_term_bytes) + 6);
  // Every intervention's lists together are one index list and one term list
  // (CheckRequestSizes).
  constexpr uint64_t kItemScalars = 64;  // an intervention's layer, mode, rows, framing
  const uint64_t interventions =
      static_cast<uint64_t>(limits.max_interventions) * kItemScalars + index_list + terms;
  const uint64_t candidate_tokens = static_cast<uint64_t>(limits.max_candidate_tokens);
  // A candidate's text is refused over 64 bytes per allowed token (prepare_score.cc).
  const uint64_t candidates = static_cast<uint64_t>(limits.max_candidates) *
                              (std::max(64 * candidate_tokens, 11 * candidate_tokens) + 12);
  constexpr uint64_t kScalarsAndTag = 4096;  // every scalar field and the client_tag
  // GenerateRequest has capture's two lists where AnalyzeRequest has analysis' two, so the
  // analysis bound covers both; ScoreRequest has candidates and the sweep's two lists.
  const uint64_t analyze =
      inputs + stop + eos + 2 * index_list + terms + queries + interventions + kScalarsAndTag;
  const uint64_t score = inputs + candidates + 2 * index_list + interventions + kScalarsAndTag;
  return std::max(analyze, score);
}

absl::StatusOr<GenerationParams> ValidateGenerationParams(const GenerationSpec& p,
                                                          const LoadedModel& model,
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
  const int64_t vocab = model.config.vocab_size;
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
    if (model.tokenizer == nullptr) return NoTokenizer("generation.stop_strings", model);
    const Tokenizer* tokenizer = model.tokenizer.get();
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
                                                  const LoadedModel& model) {
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
      const int64_t vocab = model.config.vocab_size;
      for (size_t i = 0; i < input->ids.size(); ++i) {
        if (input->ids[i] < 0 || input->ids[i] >= vocab) {
          return FieldError(absl::StrCat("ids.ids[", i, "]"), absl::StrCat(input->ids[i]),
                            absl::StrCat("must be in [0, vocab_size = ", vocab, ")"));
        }
      }
      break;
    }
  }
  absl::StatusOr<PreparedPrompt> prompt =
      PreparePrompt(*input, model.tokenizer.get(), model.chat_config());
  if (!prompt.ok()) {
    // A refusal of the input (a chat the template rejects, a special token in a message) names
    // it; FAILED_PRECONDITION (the model has no tokenizer or template) is no field's fault.
    if (prompt.status().code() != absl::StatusCode::kInvalidArgument ||
        RefusedField(prompt.status())) {
      return prompt.status();
    }
    return WithRefusedField(prompt.status(),
                            input->kind == PromptInput::Kind::kChat ? "messages" : "text");
  }
  if (prompt->ids.empty()) return FieldError("input", "(no tokens)", "the prompt has no tokens");
  return prompt;
}

absl::Status CheckTokenLimits(int prompt_tokens, int max_new_tokens, const ModelConfig& config,
                              const RequestLimits& limits) {
  if (prompt_tokens > limits.max_prompt_tokens) return PromptTokensOverLimit(prompt_tokens, limits);
  const int64_t total = static_cast<int64_t>(prompt_tokens) + max_new_tokens;
  if (total > limits.max_total_tokens) {
    return TokenSumOverLimit(prompt_tokens, max_new_tokens, total,
                             "the server limit limits.max_total_tokens", limits.max_total_tokens);
  }
  // The engine's own formula (what its KV cache holds), so that admitted means runnable.
  const int64_t positions = SequencePositions(prompt_tokens, max_new_tokens);
  if (config.max_position_embeddings > 0 && positions > config.max_position_embeddings) {
    return TokenSumOverLimit(prompt_tokens, max_new_tokens, positions,
                             "the model's max_position_embeddings", config.max_position_embeddings);
  }
  return absl::OkStatus();
}

absl::Status CheckCaptureBytes(const CaptureSpec& capture, int total_tokens,
                               const RequestLimits& limits, uint64_t* estimate) {
  *estimate = capture.enabled() ? EstimateCaptureBytes(capture, total_tokens) : 0;
  if (*estimate > limits.max_capture_bytes) {
    // Layers, heads, tokens and dtype together make the size: the refused field is the spec.
    return WithRefusedField(absl::ResourceExhaustedError(absl::StrCat(
                                "capture size = ", *estimate, " bytes (", capture.layers.size(),
                                " layers x ", capture.heads.size(), " heads x ", total_tokens,
                                " x ", total_tokens, " tokens x ", DTypeSize(capture.dtype),
                                " bytes): exceeds the server limit "
                                "limits.max_capture_bytes = ",
                                limits.max_capture_bytes,
                                "; capture fewer layers or heads, a 2-byte dtype or fewer tokens")),
                            "capture");
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

absl::StatusOr<PreparedGeneration> PrepareGeneration(const Request& request,
                                                     const LoadedModel& model,
                                                     const RequestLimits& limits) {
  PreparedGeneration prepared;
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckRequestSizes(request, limits));
  absl::StatusOr<GenerationParams> params =
      ValidateGenerationParams(request.generation, model, limits);
  if (!params.ok()) return params.status();
  prepared.params = *std::move(params);
  prepared.max_new_tokens = prepared.params.max_new_tokens;
  absl::StatusOr<CaptureSpec> capture = ValidateCaptureSpec(request.capture, model.config);
  if (!capture.ok()) return capture.status();
  prepared.capture = *std::move(capture);
  absl::StatusOr<PreparedPrompt> prompt = ResolvePromptInput(request.input, model);
  if (!prompt.ok()) return prompt.status();
  prepared.prompt = *std::move(prompt);
  const int prompt_tokens = static_cast<int>(prepared.prompt.ids.size());
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(
      CheckTokenLimits(prompt_tokens, prepared.max_new_tokens, model.config, limits));
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

absl::StatusOr<PreparedAnalysis> PrepareAnalysis(const Request& request, const LoadedModel& model,
                                                 const RequestLimits& limits) {
  const AnalysisSpec& spec = request.analysis;
  PreparedAnalysis prepared;
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckRequestSizes(request, limits));
  absl::StatusOr<GenerationParams> params =
      ValidateGenerationParams(request.generation, model, limits);
  if (!params.ok()) return params.status();
  prepared.params = *std::move(params);
  // Analysis reads every row in float32, whatever a capture would store.
  CaptureRequest capture_request;
  capture_request.layers = spec.layers;
  capture_request.heads = spec.heads;
  absl::StatusOr<CaptureSpec> capture =
      ValidateCaptureSpec(capture_request, model.config, "analysis");
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
    if (const Tokenizer* tokenizer = model.tokenizer.get()) {
      for (int64_t id : prompt.ids) prompt.tokens.push_back(tokenizer->TokenString(id));
    }
  } else {
    absl::StatusOr<PreparedPrompt> resolved = ResolvePromptInput(request.input, model);
    if (!resolved.ok()) return resolved.status();
    prompt = *std::move(resolved);
  }
  const int prompt_tokens = static_cast<int>(prompt.ids.size());
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(
      CheckTokenLimits(prompt_tokens, prepared.params.max_new_tokens, model.config, limits));

  // The reply's size is known from the request: refuse it now, not after generation built it.
  const uint64_t reply_bound = AnalysisReplyBytesBound(prepared);
  if (reply_bound > limits.max_reply_bytes) {
    // The analysis spec's lists and switches make the size: the refused field is the spec.
    return WithRefusedField(
        absl::ResourceExhaustedError(absl::StrCat(
            "the AnalyzeHeads reply could reach ", reply_bound, " bytes (", prompt_tokens,
            " prompt + ", prepared.params.max_new_tokens, " new tokens, ",
            prepared.capture.layers.size(), " layers x ", prepared.capture.heads.size(), " heads, ",
            prepared.options.queries.size(), " analysis.queries",
            prepared.options.top_k_per_head ? ", top_k_per_head" : "",
            prepared.options.term_submatrix ? ", include_term_submatrix" : "",
            "): over the server limit limits.max_reply_bytes = ", limits.max_reply_bytes,
            "; ask for fewer queries, layers or heads, a smaller top_k, or no top_k_per_head / "
            "include_term_submatrix")),
        "analysis");
  }

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
                                                     const LoadedModel& model,
                                                     const RequestLimits& limits) {
  InterventionSet set;
  // The count first: nothing is resolved or tokenized for an oversized list.
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(CheckInterventionCount(request, limits));
  set.items = request.interventions;
  if (request.patch_source) {
    absl::StatusOr<PreparedPrompt> source = ResolvePromptInput(request.patch_source, model);
    if (!source.ok()) {
      const std::optional<std::string> inner = RefusedField(source.status());
      const std::string path = "interventions.patch_source";
      absl::Status refusal(source.status().code(),
                           absl::StrCat("patch_source: ", source.status().message()));
      if (!inner) return refusal;  // not the source's fault (the model has no tokenizer)
      return WithRefusedField(refusal, *inner == "input" ? path : absl::StrCat(path, ".", *inner));
    }
    set.patch_source_ids = source->ids;
  }
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(
      ResolveKnockoutTerms(&set, prompt.text, prompt.spans, prompt.tokens));
  ATTNSCOPE_SESSION_RETURN_IF_ERROR(
      ValidateInterventions(&set, model.config, static_cast<int>(prompt.ids.size()), max_length,
                            InterventionLimitsOf(limits)));
  return set;
}

}  // namespace attnscope::session
