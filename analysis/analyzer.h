// The analysis of one sequence, computed two ways that must agree:
// - StreamingAnalyzer consumes attention rows as the engine produces them (per layer the
//   prefill block, then one row per decode step) and keeps per-head running sums plus the
//   few rows and columns the term, top-k and detector parts need; never whole matrices.
// - AnalyzeMatrices computes the same report from whole [H, T, T] matrices (capture files).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "analysis/detectors.h"
#include "analysis/head_metrics.h"
#include "analysis/report.h"
#include "analysis/terms.h"

namespace attnscope::analysis {

// A position selected by a token-to-token query text.
struct QueryPosition {
  int query_index = 0;  // into AnalysisOptions::queries
  int position = 0;
};

struct AnalysisOptions {
  HeadMetricsOptions metrics;
  std::vector<std::string> terms = DefaultFinancialTerms();
  int top_terms = 5;                 // terms listed per head in term attention
  bool term_submatrix = false;       // include the [generated rows x term positions] values
  std::vector<std::string> queries;  // token-to-token query texts; empty: no top-k lists
  int max_query_positions = 3;       // per query: first positions whose token contains it
  int top_k_keys = 10;
  bool top_k_per_head = false;              // also a list per head, besides the head mean
  std::optional<InductionProbe> induction;  // score induction on this probe
};

// The prompt side of the input. Term matching uses `text` + `spans` when spans are given,
// else the prompt's token strings.
struct AnalysisInput {
  std::vector<int64_t> token_ids;   // the prompt (streaming) or every token (whole matrix)
  std::vector<std::string> tokens;  // token strings, same length as token_ids
  int prompt_length = 0;
  std::string text;              // the text the prompt was encoded from
  std::vector<TokenSpan> spans;  // byte spans of the prompt tokens in `text`
};

// A view of query rows [first_row, first_row + num_rows) x keys [0, key_length) of one layer
// for `num_heads` heads: float32 [num_heads, num_rows, key_length], full rows.
struct AttentionRows {
  int layer = 0;
  const int* heads = nullptr;  // query-head indices, in the data's order
  int num_heads = 0;
  int first_row = 0;
  int num_rows = 0;
  int key_length = 0;
  const float* data = nullptr;
};

// One layer's rows reduced elsewhere (the tensor reductions of
// server/engine/tensor_reductions.h, run where the probabilities are), merged in place of
// the rows themselves: what LayerAccumulator would have summed, per head.
struct ReducedHead {
  HeadSums all;              // every row
  HeadSums generated;        // rows >= prompt length
  double duplicate_sum = 0;  // mass on earlier same-id positions, over rows that have one
  int duplicate_rows = 0;
  double induction_sum = 0;  // A[i, i-n+1] over the probe's second repeat
  int induction_rows = 0;
  std::vector<float> term_values;                 // [generated rows, term positions]
  std::map<int, std::vector<double>> query_rows;  // query position -> its keys 0..position
};

struct ReducedRows {
  int layer = 0;
  std::vector<int> heads;  // query-head indices
  int first_row = 0;       // the rows [first_row, first_row + num_rows) were reduced
  int num_rows = 0;
  std::vector<ReducedHead> per_head;  // heads.size() entries
};

class StreamingAnalyzer {
 public:
  // `input.token_ids` is the prompt; prompt_length defaults to its size when 0.
  StreamingAnalyzer(AnalysisInput input, AnalysisOptions options);
  ~StreamingAnalyzer();

  // A token appended at the next position (a generated one). Call before its row arrives.
  void AddToken(int64_t id, const std::string& token);
  // Rows of one layer. Per layer, rows must arrive in order without gaps starting at 0, the
  // head list must not change, and every row needs its token added first.
  absl::Status AddRows(const AttentionRows& rows);
  // The same rows, already reduced (same ordering rules as AddRows).
  absl::Status AddReducedRows(const ReducedRows& rows);
  // The report; every captured layer must have a row for every token.
  absl::StatusOr<HeadReport> Finish(const std::string& generated_text) const;

  int num_tokens() const { return static_cast<int>(ids_.size()); }

  // What reductions run elsewhere need to know.
  const AnalysisOptions& options() const { return options_; }
  int prompt_length() const { return prompt_length_; }
  const std::vector<int64_t>& ids() const { return ids_; }
  const std::vector<int>& term_positions() const { return term_positions_; }
  const std::vector<QueryPosition>& query_positions() const { return query_positions_; }

 private:
  class LayerAccumulator;
  void NoteQueryPosition(int position);
  absl::StatusOr<LayerAccumulator*> LayerFor(int layer, const std::vector<int>& heads);

  AnalysisOptions options_;
  int prompt_length_ = 0;
  std::vector<int64_t> ids_;
  std::vector<std::string> tokens_;
  std::vector<TermMatch> terms_;
  std::vector<int> term_positions_;             // union of the matches' positions, ascending
  std::vector<QueryPosition> query_positions_;  // in arrival order
  std::map<int, std::unique_ptr<LayerAccumulator>> layers_;
};

// One layer's whole matrices: [heads.size(), seq_length, seq_length] row-major.
struct LayerMatrices {
  int layer = 0;
  std::vector<int> heads;
  int seq_length = 0;
  const float* data = nullptr;
};

// The same report from whole matrices; `input.token_ids` holds every token (prompt and
// generated) and every layer's seq_length must equal its size.
absl::StatusOr<HeadReport> AnalyzeMatrices(const AnalysisInput& input,
                                           const std::vector<LayerMatrices>& layers,
                                           const AnalysisOptions& options,
                                           const std::string& generated_text);

}  // namespace attnscope::analysis
