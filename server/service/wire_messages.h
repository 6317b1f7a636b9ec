// Session results as attnscope.v1 messages: the service's handlers build their replies here
// and only move them (the request side is server/session/request_proto.h).
#pragma once

#include <cstdint>
#include <string>

#include "attnscope/v1/attnscope.pb.h"
#include "server/session/prepare.h"
#include "server/session/session.h"

namespace attnscope::service {

// The loaded model as GetModelInfo and the stream's Header describe it.
void FillModelInfo(const session::LoadedModel& model, v1::ModelInfo* info);

struct StreamTotals {
  uint64_t chunks = 0;
  uint64_t attention_bytes = 0;
  uint32_t data_crc32 = 0;
};

// The stream's first message: prompt, model, resolved capture, estimates.
v1::GenerateResponse MakeHeader(const session::PreparedGeneration& prepared,
                                const session::LoadedModel& model, const std::string& request_id,
                                uint64_t max_chunk_bytes, double queue_seconds);

// The stream's last message. `total_seconds` runs from the request's arrival.
v1::GenerateResponse MakeFinal(const session::CaptureOutcome& outcome, double queue_seconds,
                               double total_seconds, const StreamTotals& totals);

// AnalyzeHeads's reply: report_json plus the typed tables and the resolved interventions.
v1::AnalyzeResponse MakeAnalyzeResponse(const session::AnalysisOutcome& outcome,
                                        const std::string& request_id, double queue_seconds,
                                        double total_seconds,
                                        const session::PreparedAnalysis& prepared);

// ScoreAnswers' result message: prompt ids, resolved interventions, the scores (and the sweep's
// cells in sweep mode). `model_seconds` is reported as prefill_seconds.
v1::ScoreResponse MakeScoreResponse(const session::PreparedScore& prepared,
                                    const SweepResult& outcome, const std::string& request_id,
                                    double queue_seconds, double model_seconds,
                                    double total_seconds);

}  // namespace attnscope::service
