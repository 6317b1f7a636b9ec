// A ScoreAnswers request resolved against the model and checked against the limits BEFORE
// any model work; each failure names the field, the value and the limit. The input,
// interventions and patch source go through the session library's one validator
// (server/session/prepare.h); candidates and the sweep are ScoreAnswers' own.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "attnscope/v1/attnscope.pb.h"
#include "server/engine/interventions.h"
#include "server/session/prepare.h"

namespace attnscope::service {

using session::PreparedScore;

// Input, candidates (text tokenized as plain text), interventions or sweep, and the limits.
absl::StatusOr<PreparedScore> PrepareScore(const v1::ScoreRequest& request,
                                           const session::ModelView& model,
                                           const session::RequestLimits& limits);

}  // namespace attnscope::service
