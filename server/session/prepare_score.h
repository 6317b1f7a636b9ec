// A score or sweep request (ScoreAnswers, `attnscope score|sweep`) resolved against the model
// and checked against the limits BEFORE any model work: the one preparation both the service
// (through score_request_proto.h) and the command line's local mode call. Each failure names
// the field, the value and the limit. Proto-free, so a build without gRPC has it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/interventions.h"
#include "server/session/prepare.h"
#include "server/session/request.h"

namespace attnscope::session {

// A candidate continuation as the request names it: text (tokenized as plain text here) or
// token ids. kUnset is refused (a wire Candidate with neither field set).
struct CandidateRequest {
  enum class Kind { kUnset, kText, kIds };
  Kind kind = Kind::kUnset;
  std::string text;
  std::vector<int64_t> ids;
};

struct ScoreSpec {
  Request request;  // input, interventions, patch source
  std::vector<CandidateRequest> candidates;
  std::optional<SweepSpec> sweep;  // set: a sweep (no interventions)
};

// The candidate count against limits.max_candidates (callers converting a large wire list
// check it first, before copying).
absl::Status CheckCandidateCount(int count, const RequestLimits& limits);

// Input, candidates, interventions or sweep, and the limits.
absl::StatusOr<PreparedScore> PrepareScore(const ScoreSpec& spec, const LoadedModel& model,
                                           const RequestLimits& limits);

}  // namespace attnscope::session
