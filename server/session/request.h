// One request type for every path through the product: the command line's flags (local and
// remote mode) and the service's proto messages both become a session::Request, which is
// checked by one validator (prepare.h) with one set of defaults. The wire conversion lives in
// request_proto.h, the flag parser in client/cpp/request_flags.h.
//
// Fields keep the wire's conventions so that conversion is lossless: 0 (or empty) means "the
// default", and the defaults are resolved in exactly one place (prepare.cc), from the
// constants below and from analysis::AnalysisOptions.
//
// Proto-free and torch-free: a build without gRPC (the CUDA check machine) uses it too.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/capture/capture_spec.h"
#include "server/engine/interventions.h"
#include "server/engine/prompt.h"

namespace attnscope::session {

// Tokens generated when a request leaves max_new_tokens at 0 (the server's
// limits.default_max_new_tokens starts from it; local mode uses it as is).
inline constexpr int kDefaultMaxNewTokens = 32;

// Bounds a request is checked against before any model work (config/server.yaml `limits`).
struct RequestLimits {
  int max_prompt_tokens = 4096;
  int max_new_tokens = 1024;
  int max_total_tokens = 4096;
  uint64_t max_capture_bytes = 4ull << 30;  // worst-case layers x heads x T x T x dtype bytes
  int default_max_new_tokens = kDefaultMaxNewTokens;  // when a request leaves it at 0
  // Largest unary reply (an AnalyzeHeads report with term submatrices grows with prompt
  // length x layers x heads); a bigger one is refused with RESOURCE_EXHAUSTED naming this key.
  uint64_t max_reply_bytes = 64ull << 20;
  // Causal interventions and answer scoring (ScoreAnswers).
  int max_interventions = 64;     // interventions of one request
  int max_candidates = 16;        // ScoreAnswers candidates
  int max_candidate_tokens = 32;  // tokens of one candidate
  int max_sweep_heads = 4096;     // ablated heads (layers x heads) of one sweep
  // Sizes checked in O(1) before any parsing, tokenizing or chat rendering
  // (CheckRequestSizes). Text and the chat's total bytes may be this many bytes per
  // max_prompt_tokens (a token is rarely longer than 16 bytes); ids and chat messages count
  // against max_prompt_tokens itself.
  int max_prompt_bytes_per_token = 16;
  int max_stop_strings = 16;
  int max_stop_string_bytes = 256;
  int max_eos_token_ids = 64;
  int max_index_entries = 1024;  // each of capture/analysis layers and heads
  int max_terms = 256;           // analysis.terms
  int max_queries = 64;          // analysis.queries
  int max_term_bytes = 256;      // each term and query

  uint64_t max_prompt_bytes() const {
    return static_cast<uint64_t>(max_prompt_bytes_per_token) *
           static_cast<uint64_t>(max_prompt_tokens);
  }

  // Local mode: only the model's own bounds (max_position_embeddings) apply.
  static RequestLimits Unbounded() {
    RequestLimits limits;
    limits.max_prompt_tokens = std::numeric_limits<int>::max();
    limits.max_new_tokens = std::numeric_limits<int>::max();
    limits.max_total_tokens = std::numeric_limits<int>::max();
    limits.max_capture_bytes = std::numeric_limits<uint64_t>::max();
    limits.max_reply_bytes = std::numeric_limits<uint64_t>::max();
    limits.max_interventions = std::numeric_limits<int>::max();
    limits.max_candidates = std::numeric_limits<int>::max();
    limits.max_candidate_tokens = std::numeric_limits<int>::max();
    limits.max_sweep_heads = std::numeric_limits<int>::max();
    limits.max_prompt_bytes_per_token = std::numeric_limits<int>::max();
    limits.max_stop_strings = std::numeric_limits<int>::max();
    limits.max_stop_string_bytes = std::numeric_limits<int>::max();
    limits.max_eos_token_ids = std::numeric_limits<int>::max();
    limits.max_index_entries = std::numeric_limits<int>::max();
    limits.max_terms = std::numeric_limits<int>::max();
    limits.max_queries = std::numeric_limits<int>::max();
    limits.max_term_bytes = std::numeric_limits<int>::max();
    return limits;
  }
};

// How to generate (attnscope.v1.GenerationParams).
struct GenerationSpec {
  int max_new_tokens = 0;  // 0: limits.default_max_new_tokens
  bool prompt_only = false;
  bool sample = false;           // false: greedy; the sampling fields are still checked
  float temperature = 0;         // 0: 1.0
  int top_k = 0;                 // 0: off
  float top_p = 0;               // 0: 1.0 (off)
  float repetition_penalty = 0;  // 0: 1.0 (off)
  uint64_t seed = 0;
  std::vector<std::string> stop_strings;
  std::vector<int64_t> eos_token_ids;  // empty: the model's
  bool ignore_eos = false;
  bool save_logits = false;  // local capture files only; not on the wire
};

// What GenerateWithAttention captures (attnscope.v1.CaptureSpec), before resolution against
// the model.
struct CaptureRequest {
  std::vector<int> layers;  // negatives from the end; empty: all
  std::vector<int> heads;   // negatives from the end; empty: all
  DType dtype = DType::kFloat32;
  CaptureRows rows = CaptureRows::kAll;
  bool disabled = false;
};

struct InductionProbeSpec {
  int length = 0;  // the probe is `length` random ordinary tokens twice; >= 2
  uint64_t seed = 0;
};

// What AnalyzeHeads computes (attnscope.v1.AnalysisSpec); 0 / empty: the analyzer's default.
struct AnalysisSpec {
  std::vector<int> layers;
  std::vector<int> heads;
  std::vector<std::string> terms;  // empty: the default financial terms
  std::vector<std::string> queries;
  int query_positions = 0;
  int top_k = 0;
  int beginning_k = 0;
  int top_terms = 0;
  double self_threshold = 0;
  double focused_entropy_threshold = 0;
  bool include_term_submatrix = false;
  bool top_k_per_head = false;
  std::optional<InductionProbeSpec> induction_probe;  // replaces the input
};

struct Request {
  std::optional<PromptInput> input;  // absent: refused, unless an induction probe replaces it
  GenerationSpec generation;
  CaptureRequest capture;  // capture requests
  AnalysisSpec analysis;   // analysis requests
  std::string client_tag;
  // Causal interventions (server/engine/interventions.h), as given (unresolved), and the
  // input whose head outputs patches copy.
  std::vector<Intervention> interventions;
  std::optional<PromptInput> patch_source;
};

// The checks that need no model: signs, ranges, NaN, empty stop strings, the probe's length.
// The command line runs them before it sends a request, the session again on arrival, so a
// value one mode refuses the other refuses with the same message.
absl::Status CheckGenerationSpec(const GenerationSpec& generation);
absl::Status CheckAnalysisSpec(const AnalysisSpec& analysis);

}  // namespace attnscope::session
