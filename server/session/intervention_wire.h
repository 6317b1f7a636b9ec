// Interventions, candidates and scores between the engine's types and the wire
// (attnscope.v1). Shared by the service and the command line's remote mode so both read and
// write the same fields the same way. torch-free.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "attnscope/v1/attnscope.pb.h"
#include "server/engine/interventions.h"

namespace attnscope {

// The items of `wire` (patch_source is an input: the caller resolves it). An item with no
// kind or an unknown enum value is INVALID_ARGUMENT naming it.
absl::StatusOr<std::vector<Intervention>> InterventionsFromWire(const v1::Interventions& wire);
void InterventionsToWire(const std::vector<Intervention>& items,
                         google::protobuf::RepeatedPtrField<v1::Intervention>* wire);

absl::StatusOr<SweepSpec> SweepFromWire(const v1::Sweep& wire);
v1::Sweep SweepToWire(const SweepSpec& sweep);

void ScoreResultToWire(const ScoreResult& result, v1::ScoreResult* wire);
ScoreResult ScoreResultFromWire(const v1::ScoreResult& wire);
void SweepCellsToWire(const std::vector<SweepCell>& cells, v1::ScoreResult* wire);
std::vector<SweepCell> SweepCellsFromWire(const v1::ScoreResult& wire);

}  // namespace attnscope
