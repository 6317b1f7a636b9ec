#include "server/session/score_request_proto.h"

#include "server/session/intervention_wire.h"
#include "server/session/request_proto.h"

namespace attnscope::session {

absl::StatusOr<ScoreSpec> ScoreSpecFromProto(const v1::ScoreRequest& request,
                                             const RequestLimits& limits) {
  // Counted before the list is copied.
  const absl::Status count = CheckCandidateCount(request.candidates_size(), limits);
  if (!count.ok()) return count;
  ScoreSpec spec;
  absl::StatusOr<Request> parsed = FromProto(request);
  if (!parsed.ok()) return parsed.status();
  spec.request = *std::move(parsed);
  if (request.has_sweep()) {
    absl::StatusOr<SweepSpec> sweep = SweepFromWire(request.sweep());
    if (!sweep.ok()) return sweep.status();
    spec.sweep = *std::move(sweep);
  }
  for (const v1::Candidate& wire : request.candidates()) {
    CandidateRequest candidate;
    if (wire.kind_case() == v1::Candidate::kText) {
      candidate.kind = CandidateRequest::Kind::kText;
      candidate.text = wire.text();
    } else if (wire.kind_case() == v1::Candidate::kIds) {
      candidate.kind = CandidateRequest::Kind::kIds;
      candidate.ids.assign(wire.ids().ids().begin(), wire.ids().ids().end());
    }
    spec.candidates.push_back(std::move(candidate));
  }
  return spec;
}

absl::StatusOr<PreparedScore> PrepareScore(const v1::ScoreRequest& request,
                                           const LoadedModel& model, const RequestLimits& limits) {
  absl::StatusOr<ScoreSpec> spec = ScoreSpecFromProto(request, limits);
  if (!spec.ok()) return spec.status();
  return PrepareScore(*spec, model, limits);
}

}  // namespace attnscope::session
