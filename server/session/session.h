// The session library: a prepared request (prepare.h) run on the loaded model. The command
// line's local mode calls it in-process and the service's handlers call it from their engine
// jobs, so a capture or an analysis is computed by the same code whichever way it was asked
// for; the callers only choose the sink (a capture file, a gRPC stream, a report reply).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "analysis/report.h"
#include "server/capture/capture_file.h"
#include "server/engine/engine.h"
#include "server/engine/prompt.h"
#include "server/session/loaded_model.h"
#include "server/session/prepare.h"

namespace attnscope::session {

// Loads the engine, then the tokenizer and chat template when their files exist (a malformed
// file is an error: no partial start). The model type itself is in loaded_model.h, torch-free,
// so that validation runs on it without an engine.
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const EngineOptions& options);

struct CaptureOutcome {
  GenerationResult result;
  std::string generated_text;  // decoded continuation without special tokens; "" w/o tokenizer
  CaptureMetadata metadata;    // the capture file's metadata for this run
};

// Generates with `prepared` and delivers attention blocks, tokens and continue checks to
// `sink` (CaptureFileObserver for a file, the service's stream observer for gRPC).
absl::StatusOr<CaptureOutcome> RunCapture(const LoadedModel& model,
                                          const PreparedGeneration& prepared,
                                          GenerationObserver* sink);

struct AnalysisOutcome {
  analysis::HeadReport report;
  GenerationResult result;  // a probe: its ids, stop_reason "probe", nothing generated
  std::string generated_text;
  int generated_tokens = 0;
};

// Runs the analysis (a probe's one uncached forward, or a generation) with the rows streamed
// into per-head accumulators; `check_continue` (may be empty) stops it (cancel, deadline).
absl::StatusOr<AnalysisOutcome> RunAnalysis(const LoadedModel& model,
                                            const PreparedAnalysis& prepared,
                                            std::function<absl::Status()> check_continue);

// The candidates' scores under the prepared interventions (cells empty), or in sweep_mode the
// single-head ablation sweep, `progress` after each batch (its error stops the sweep).
absl::StatusOr<SweepResult> RunScore(const LoadedModel& model, const PreparedScore& prepared,
                                     const SweepProgress& progress,
                                     const InterventionLimits& limits = InterventionLimits());

}  // namespace attnscope::session
