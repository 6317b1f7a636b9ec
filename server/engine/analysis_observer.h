// AnalysisObserver: the engine sink behind `attnscope analyze --model` and AnalyzeHeads. It
// feeds every attention block the engine produces into analysis::StreamingAnalyzer (running
// per-head sums, never whole matrices) and builds the HeadReport at the end. torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "analysis/analyzer.h"
#include "analysis/report.h"
#include "server/engine/engine.h"

namespace attnscope {

class AnalysisObserver : public GenerationObserver {
 public:
  // Maps a token id to its string (the tokenizer's TokenString); null gives "".
  using TokenStringFn = std::function<std::string(int64_t)>;

  // `input` describes the prompt: its text and byte spans for term matching, its token
  // strings (filled from `token_string` when they do not match the prompt ids given to
  // OnStart). The capture spec must deliver all rows (CaptureRows::kAll).
  AnalysisObserver(analysis::AnalysisInput input, analysis::AnalysisOptions options,
                   TokenStringFn token_string);
  ~AnalysisObserver() override;

  absl::Status OnStart(const std::vector<int64_t>& prompt_ids) override;
  absl::Status OnAttention(const AttentionBlock& block) override;
  absl::Status OnToken(int64_t token_id, int position) override;

  // The report over everything seen; `generated_text` is the decoded continuation.
  virtual absl::StatusOr<analysis::HeadReport> Finish(const std::string& generated_text);

 protected:
  // Starts the analyzer on the input's ids when OnStart was skipped (Engine::Forward).
  absl::Status EnsureStarted();
  analysis::StreamingAnalyzer* analyzer() { return analyzer_.get(); }

 private:
  std::string TokenString(int64_t id) const;

  analysis::AnalysisInput input_;
  analysis::AnalysisOptions options_;
  TokenStringFn token_string_;
  std::unique_ptr<analysis::StreamingAnalyzer> analyzer_;
};

}  // namespace attnscope
