// A ScoreAnswers request (attnscope.v1) into the session library's ScoreSpec and through the
// one score preparation (prepare_score.h). Needs the proto, so only gRPC builds have it.
#pragma once

#include "absl/status/statusor.h"
#include "attnscope/v1/attnscope.pb.h"
#include "server/session/prepare_score.h"

namespace attnscope::session {

absl::StatusOr<ScoreSpec> ScoreSpecFromProto(const v1::ScoreRequest& request,
                                             const RequestLimits& limits);

// ScoreSpecFromProto, then PrepareScore.
absl::StatusOr<PreparedScore> PrepareScore(const v1::ScoreRequest& request,
                                           const LoadedModel& model, const RequestLimits& limits);

}  // namespace attnscope::session
