#include "server/service/score_validation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/service/status_util.h"
#include "server/session/intervention_wire.h"
#include "server/session/request_proto.h"
#include "server/status/field_error.h"

namespace attnscope::service {

absl::StatusOr<PreparedScore> PrepareScore(const v1::ScoreRequest& request,
                                           const session::ModelView& model,
                                           const session::RequestLimits& limits) {
  PreparedScore prepared;
  const InterventionLimits bounds = session::InterventionLimitsOf(limits);
  if (request.candidates_size() > limits.max_candidates) {
    return FieldError(
        "candidates", absl::StrCat(request.candidates_size(), " candidates"),
        absl::StrCat("exceeds the server limit limits.max_candidates = ", limits.max_candidates));
  }
  prepared.sweep_mode = request.has_sweep();
  if (prepared.sweep_mode) {
    if (request.interventions().items_size() > 0) {
      return FieldError("interventions",
                        absl::StrCat(request.interventions().items_size(), " interventions"),
                        "a sweep ablates one head at a time from the clean run and does not "
                        "combine with interventions");
    }
    absl::StatusOr<SweepSpec> sweep = SweepFromWire(request.sweep());
    if (!sweep.ok()) return sweep.status();
    prepared.sweep = *std::move(sweep);
    ATTNSCOPE_RETURN_IF_ERROR(ValidateSweep(&prepared.sweep, *model.config, bounds));
  }
  absl::StatusOr<session::Request> parsed = session::FromProto(request);
  if (!parsed.ok()) return parsed.status();
  ATTNSCOPE_RETURN_IF_ERROR(session::CheckRequestSizes(*parsed, limits));
  absl::StatusOr<PreparedPrompt> prompt = session::ResolvePromptInput(parsed->input, model);
  if (!prompt.ok()) return prompt.status();
  prepared.prompt = *std::move(prompt);
  const int prompt_tokens = static_cast<int>(prepared.prompt.ids.size());
  ATTNSCOPE_RETURN_IF_ERROR(session::CheckTokenLimits(prompt_tokens, 0, *model.config, limits));

  static const ModelTextTools kNoTools;
  const ModelTextTools& tools = model.tools != nullptr ? *model.tools : kNoTools;
  for (int i = 0; i < request.candidates_size(); ++i) {
    const v1::Candidate& wire = request.candidates(i);
    Candidate candidate;
    if (wire.kind_case() == v1::Candidate::kText) {
      // Bounded before tokenizing (64 bytes per allowed token is far more than any vocabulary).
      if (wire.text().size() > static_cast<size_t>(limits.max_candidate_tokens) * 64) {
        return FieldError(absl::StrCat("candidates[", i, "].text"),
                          absl::StrCat(wire.text().size(), " bytes"),
                          absl::StrCat("too long for limits.max_candidate_tokens = ",
                                       limits.max_candidate_tokens));
      }
      candidate.text = wire.text();
      absl::StatusOr<std::vector<int64_t>> ids = EncodeContinuation(wire.text(), tools);
      if (!ids.ok()) return ids.status();
      candidate.ids = *std::move(ids);
    } else if (wire.kind_case() == v1::Candidate::kIds) {
      candidate.ids.assign(wire.ids().ids().begin(), wire.ids().ids().end());
      if (model.tokenizer() != nullptr &&
          static_cast<int>(candidate.ids.size()) <= limits.max_candidate_tokens) {
        candidate.text = model.tokenizer()->Decode(candidate.ids);
      }
    } else {
      return FieldError(absl::StrCat("candidates[", i, "]"), "{}",
                        "set text or ids; a candidate must not be empty");
    }
    prepared.candidates.push_back(std::move(candidate));
  }
  int longest = 0;
  for (const Candidate& c : prepared.candidates) {
    longest = std::max(longest, static_cast<int>(c.ids.size()));
  }
  const int max_length = std::min(limits.max_total_tokens, model.config->max_position_embeddings);
  ATTNSCOPE_RETURN_IF_ERROR(ValidateCandidates(prepared.candidates, prompt_tokens, max_length,
                                               *model.config, bounds, prepared.sweep_mode));
  absl::StatusOr<InterventionSet> interventions = session::PrepareInterventions(
      *parsed, prepared.prompt, prompt_tokens + longest, model, limits);
  if (!interventions.ok()) return interventions.status();
  prepared.interventions = *std::move(interventions);
  return prepared;
}

}  // namespace attnscope::service
