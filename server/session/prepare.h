// A session::Request checked against the loaded model and the limits, and turned into engine
// inputs, BEFORE any model work. The one validator of the product: the service and the
// command line's local mode both call it. Each failure is a status whose message names the
// field (wire names: generation.max_new_tokens, capture.layers, ...), the bad value and the
// limit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "analysis/analyzer.h"
#include "server/capture/capture_spec.h"
#include "server/engine/engine.h"
#include "server/engine/prompt.h"
#include "server/model/model_config.h"
#include "server/session/loaded_model.h"
#include "server/session/request.h"
#include "server/tokenizer/tokenizer.h"

namespace attnscope::session {

struct PreparedGeneration {
  PreparedPrompt prompt;
  GenerationParams params;
  CaptureSpec capture;  // resolved against the model; empty layers when disabled
  int max_new_tokens = 0;
  uint64_t estimated_capture_bytes = 0;
  InterventionSet interventions;  // resolved and checked
};

struct PreparedAnalysis {
  PreparedPrompt prompt;    // the probe's ids (and token strings) for a probe
  GenerationParams params;  // max_new_tokens 0 for a probe
  CaptureSpec capture;      // analysis.layers / analysis.heads, float32, every row
  analysis::AnalysisOptions options;
  analysis::AnalysisInput input;
  bool probe = false;             // one uncached forward over the prompt, nothing generated
  InterventionSet interventions;  // resolved and checked
};

// A ScoreAnswers request or `attnscope score|sweep` resolved and checked (PrepareScore in
// prepare_score.h, shared by the service and the command line's local mode): candidates
// tokenized, interventions resolved.
struct PreparedScore {
  PreparedPrompt prompt;
  std::vector<Candidate> candidates;
  InterventionSet interventions;
  bool sweep_mode = false;
  SweepSpec sweep;  // resolved when sweep_mode
};

InterventionLimits InterventionLimitsOf(const RequestLimits& limits);

// The request's interventions against its prepared prompt: the count against the limit
// first, then knockout terms matched in the prompt's text (or token strings), the patch
// source prepared like an input, and ValidateInterventions over `max_length` tokens
// (prompt + generated or candidate tokens).
absl::StatusOr<InterventionSet> PrepareInterventions(const Request& request,
                                                     const PreparedPrompt& prompt, int max_length,
                                                     const LoadedModel& model,
                                                     const RequestLimits& limits);

// Checks the sampling parameters and resolves max_new_tokens (the configured default for 0).
absl::StatusOr<GenerationParams> ValidateGenerationParams(const GenerationSpec& spec,
                                                          const LoadedModel& model,
                                                          const RequestLimits& limits);

// Resolves layers and heads (negatives from the end). Messages name the fields as
// `field_prefix`.layers etc. (analysis requests pass "analysis").
absl::StatusOr<CaptureSpec> ValidateCaptureSpec(const CaptureRequest& spec,
                                                const ModelConfig& config,
                                                const std::string& field_prefix = "capture");

// Checks that the input is present and non-empty and that ids are inside the vocabulary,
// then prepares it (server/engine/prompt.h).
absl::StatusOr<PreparedPrompt> ResolvePromptInput(const std::optional<PromptInput>& input,
                                                  const LoadedModel& model);

// Every size of the request (text bytes, ids, chat messages and bytes of the prompt and of the
// patch source, stop strings, eos ids, index lists, terms, queries, the interventions' count,
// lists and terms) against the limits, each in O(1) or O(count after the count was checked):
// run before anything tokenizes or renders the input.
absl::Status CheckRequestSizes(const Request& request, const RequestLimits& limits);

// request.interventions' count against limits.max_interventions.
absl::Status CheckInterventionCount(const Request& request, const RequestLimits& limits);

// An upper bound of the AnalyzeHeads reply's bytes (report JSON + proto summaries, from
// generous per-entry sizes), from the prepared request alone; PrepareAnalysis refuses it over
// limits.max_reply_bytes before generation. The built reply is still measured before it is
// sent.
uint64_t AnalysisReplyBytesBound(const PreparedAnalysis& prepared);

// The largest serialized request the limits admit (plus room for every scalar field): the
// server's gRPC receive limit, so that nothing much larger is ever parsed.
uint64_t MaxRequestBytes(const RequestLimits& limits);

// Prompt length, total length and capture size against the limits.
absl::Status CheckTokenLimits(int prompt_tokens, int max_new_tokens, const ModelConfig& config,
                              const RequestLimits& limits);
absl::Status CheckCaptureBytes(const CaptureSpec& capture, int total_tokens,
                               const RequestLimits& limits, uint64_t* estimate);

// The analyzer's options for `spec`: 0 / empty fields take analysis::AnalysisOptions's
// defaults (the one place they are written). Checks the spec first (CheckAnalysisSpec).
absl::StatusOr<analysis::AnalysisOptions> ResolveAnalysisOptions(const AnalysisSpec& spec);

// Everything for a capture, in the order: parameters, capture spec, input, limits.
absl::StatusOr<PreparedGeneration> PrepareGeneration(const Request& request,
                                                     const LoadedModel& model,
                                                     const RequestLimits& limits);

// Everything for an analysis: parameters, layers/heads, analysis options with their
// defaults, the probe (drawn from the ordinary vocabulary) or the input, limits.
absl::StatusOr<PreparedAnalysis> PrepareAnalysis(const Request& request, const LoadedModel& model,
                                                 const RequestLimits& limits);

}  // namespace attnscope::session
