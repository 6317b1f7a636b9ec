// Causal interventions inside the forward: head ablation (zero / mean), attention knockout
// and activation patching, plus the candidates and sweeps of answer scoring. Typed and
// declarative, so any client can send them and the server never runs uploaded code.
//
// Where each edit acts, in Hugging Face terms (modeling_qwen2.py's Qwen2Attention):
// - ablation and patching replace one query head's attention output (the [rows, head_dim]
//   slice of o_proj's input, i.e. softmax(QK^T)V of that head) before o_proj;
// - knockout sets chosen attention scores to -inf before the softmax, so the rest of each
//   row renormalises (the captured attention shows the edited pattern).
//
// Positions and rows are absolute token positions of the sequence (prompt then generated or
// candidate tokens). torch-free: the command line, the service and the tests include it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/model/model_config.h"

namespace attnscope {

enum class AblationMode { kZero, kMean };
enum class KnockoutRows { kAll, kGenerated, kRange };

struct Intervention {
  enum class Kind { kAblate, kKnockout, kPatch };
  Kind kind = Kind::kAblate;
  int layer = 0;           // negatives count from the end until resolved
  std::vector<int> heads;  // query heads; empty: every head of the layer
  // kAblate. kMean: the head's output averaged over the prompt positions of the same run.
  AblationMode mode = AblationMode::kZero;
  // kKnockout: query rows (all, the generated / candidate rows at positions >= prompt length,
  // or absolute positions [row_begin, row_end)) and the key positions whose scores are -inf.
  KnockoutRows rows = KnockoutRows::kAll;
  int row_begin = 0, row_end = 0;
  std::vector<int> key_positions;
  // Words or terms of the input whose tokens are knocked out as keys (the analysis term
  // matcher); ResolveKnockoutTerms adds their positions to key_positions.
  std::vector<std::string> key_terms;
  // kPatch: prompt positions whose head outputs come from the patch source; empty: all.
  std::vector<int> positions;
};

// A request's interventions. Each (layer, head) may be named by at most one intervention:
// two edits of one head's output (or an ablation and a knockout whose effect it would erase)
// would be ambiguous, so they are refused.
struct InterventionSet {
  std::vector<Intervention> items;
  // The input whose head outputs patches copy (runs once, without interventions); needed
  // exactly when a patch is present, and as long as the target prompt.
  std::vector<int64_t> patch_source_ids;

  bool empty() const { return items.empty(); }
  bool has_patches() const;
};

// Bounds checked before any model work.
struct InterventionLimits {
  int max_interventions = 64;
  int max_candidates = 16;
  int max_candidate_tokens = 32;
  int max_sweep_heads = 4096;  // (layers x heads) variants of one sweep, each a forward
};

// Answers to score: ids per candidate (text is what they came from, for display).
struct Candidate {
  std::string text;
  std::vector<int64_t> ids;
};

struct CandidateScore {
  std::string text;
  std::vector<int64_t> token_ids;
  std::vector<double> token_logprobs;  // log-softmax of the logits predicting each token
  double logprob = 0;                  // sum of token_logprobs
  int first_token_rank = 0;            // 1 = the most likely next token after the prompt
};

struct ScoreResult {
  std::vector<CandidateScore> candidates;
  bool has_logit_diff = false;  // two or more candidates
  double logit_diff = 0;        // candidates[0].logprob - candidates[1].logprob
};

// Ablate each selected head alone and score the candidates.
struct SweepSpec {
  std::vector<int> layers;  // empty: all
  std::vector<int> heads;   // empty: all
  AblationMode mode = AblationMode::kZero;
};

struct SweepCell {
  int layer = 0;
  int head = 0;
  double logit_diff = 0;  // with this head ablated
  double delta = 0;       // logit_diff - clean logit_diff
};

struct SweepResult {
  ScoreResult clean;
  std::vector<SweepCell> cells;  // by layer, then head
};

// Called after each batch of sweep variants with (done, total); a non-OK status stops the
// sweep (cancellation, deadline).
using SweepProgress = std::function<absl::Status(int done, int total)>;

// Resolves layers and heads (negatives from the end, sorted, deduplicated) and checks every
// field against the model and the sequence: `prompt_length` tokens, at most `max_length` in
// all (prompt + generated or candidate tokens). Errors name the field as
// `field`[i].<name>, the value and the limit, and refuse (server/status/field_error.h) its
// .proto path: `field`.items[i].<kind>.<name>[j], `field`.patch_source. Term keys must be
// resolved first.
absl::Status ValidateInterventions(InterventionSet* set, const ModelConfig& config,
                                   int prompt_length, int max_length,
                                   const InterventionLimits& limits,
                                   const std::string& field = "interventions");

// The .proto path of the i-th intervention's kind message: "interventions.items[2].knockout".
std::string InterventionPath(const std::string& field, size_t index, Intervention::Kind kind);

// Adds the token positions of each knockout's key_terms to its key_positions, matching the
// words of `text` (token byte spans `spans`) or, without text, the token strings `tokens`.
// A term that matches nothing is an error naming it.
absl::Status ResolveKnockoutTerms(InterventionSet* set, const std::string& text,
                                  const std::vector<std::pair<int64_t, int64_t>>& spans,
                                  const std::vector<std::string>& tokens,
                                  const std::string& field = "interventions");

// Candidates: at least one (two for a sweep), each with 1..max_candidate_tokens ids inside
// the vocabulary, and prompt + longest candidate within `max_length`.
absl::Status ValidateCandidates(const std::vector<Candidate>& candidates, int prompt_length,
                                int max_length, const ModelConfig& config,
                                const InterventionLimits& limits, bool for_sweep,
                                const std::string& field = "candidates");

// Resolves the sweep's layers and heads and checks its size against the limit.
absl::Status ValidateSweep(SweepSpec* sweep, const ModelConfig& config,
                           const InterventionLimits& limits, const std::string& field = "sweep");

const char* AblationModeName(AblationMode mode);  // "zero", "mean"
const char* KnockoutRowsName(KnockoutRows rows);  // "all", "generated", "range"
// One line per intervention, resolved ("ablate layer 1 heads 0,2 zero").
std::string DescribeIntervention(const Intervention& item);

// The `--json` documents of `attnscope score` and `attnscope sweep` (local and remote
// modes print the same bytes for the same numbers).
std::string ScoreResultToJson(const ScoreResult& result);
std::string SweepResultToJson(const SweepResult& result);

}  // namespace attnscope
