#include "server/session/prepare_score.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/engine/prompt.h"
#include "server/status/field_error.h"

namespace attnscope::session {
namespace {

absl::StatusOr<Candidate> PrepareCandidate(const CandidateRequest& wanted, int index,
                                           const LoadedModel& model, const RequestLimits& limits) {
  Candidate candidate;
  switch (wanted.kind) {
    case CandidateRequest::Kind::kText: {
      // Bounded before tokenizing (64 bytes per allowed token is far more than any vocabulary).
      if (wanted.text.size() > static_cast<size_t>(limits.max_candidate_tokens) * 64) {
        return FieldError(absl::StrCat("candidates[", index, "].text"),
                          absl::StrCat(wanted.text.size(), " bytes"),
                          absl::StrCat("too long for limits.max_candidate_tokens = ",
                                       limits.max_candidate_tokens));
      }
      candidate.text = wanted.text;
      absl::StatusOr<std::vector<int64_t>> ids =
          EncodeContinuation(wanted.text, model.tokenizer.get());
      if (!ids.ok()) return ids.status();
      candidate.ids = *std::move(ids);
      return candidate;
    }
    case CandidateRequest::Kind::kIds:
      candidate.ids = wanted.ids;
      // Decoded for display only within the limit, and only ids the vocabulary has (the
      // candidate's own validation names a bad id).
      if (model.tokenizer != nullptr &&
          static_cast<int>(candidate.ids.size()) <= limits.max_candidate_tokens &&
          std::all_of(candidate.ids.begin(), candidate.ids.end(),
                      [&](int64_t id) { return id >= 0 && id < model.config.vocab_size; })) {
        candidate.text = model.tokenizer->Decode(candidate.ids);
      }
      return candidate;
    default:
      return FieldError(absl::StrCat("candidates[", index, "]"), "{}",
                        "set text or ids; a candidate must not be empty");
  }
}

}  // namespace

absl::Status CheckCandidateCount(int count, const RequestLimits& limits) {
  if (count > limits.max_candidates) {
    return FieldError(
        "candidates", absl::StrCat(count, " candidates"),
        absl::StrCat("exceeds the server limit limits.max_candidates = ", limits.max_candidates));
  }
  return absl::OkStatus();
}

absl::StatusOr<PreparedScore> PrepareScore(const ScoreSpec& spec, const LoadedModel& model,
                                           const RequestLimits& limits) {
  PreparedScore prepared;
  const InterventionLimits bounds = InterventionLimitsOf(limits);
  absl::Status checked = CheckCandidateCount(static_cast<int>(spec.candidates.size()), limits);
  if (!checked.ok()) return checked;
  prepared.sweep_mode = spec.sweep.has_value();
  if (prepared.sweep_mode) {
    if (!spec.request.interventions.empty()) {
      return FieldError("interventions",
                        absl::StrCat(spec.request.interventions.size(), " interventions"),
                        "a sweep ablates one head at a time from the clean run and does not "
                        "combine with interventions");
    }
    prepared.sweep = *spec.sweep;
    checked = ValidateSweep(&prepared.sweep, model.config, bounds);
    if (!checked.ok()) return checked;
  }
  checked = CheckRequestSizes(spec.request, limits);
  if (!checked.ok()) return checked;
  absl::StatusOr<PreparedPrompt> prompt = ResolvePromptInput(spec.request.input, model);
  if (!prompt.ok()) return prompt.status();
  prepared.prompt = *std::move(prompt);
  const int prompt_tokens = static_cast<int>(prepared.prompt.ids.size());
  checked = CheckTokenLimits(prompt_tokens, 0, model.config, limits);
  if (!checked.ok()) return checked;

  for (size_t i = 0; i < spec.candidates.size(); ++i) {
    absl::StatusOr<Candidate> candidate =
        PrepareCandidate(spec.candidates[i], static_cast<int>(i), model, limits);
    if (!candidate.ok()) return candidate.status();
    prepared.candidates.push_back(*std::move(candidate));
  }
  int longest = 0;
  for (const Candidate& c : prepared.candidates) {
    longest = std::max(longest, static_cast<int>(c.ids.size()));
  }
  const int max_length = std::min(limits.max_total_tokens, model.config.max_position_embeddings);
  checked = ValidateCandidates(prepared.candidates, prompt_tokens, max_length, model.config, bounds,
                               prepared.sweep_mode);
  if (!checked.ok()) return checked;
  absl::StatusOr<InterventionSet> interventions =
      PrepareInterventions(spec.request, prepared.prompt, prompt_tokens + longest, model, limits);
  if (!interventions.ok()) return interventions.status();
  prepared.interventions = *std::move(interventions);
  return prepared;
}

}  // namespace attnscope::session
