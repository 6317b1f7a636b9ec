// HeadReport: everything one analysis finds, its JSON document (the shape the command
// line's --json and the Python client read) and the notebook-style text tables.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "analysis/detectors.h"
#include "analysis/head_metrics.h"
#include "analysis/terms.h"
#include "nlohmann/json.hpp"

namespace attnscope::analysis {

struct HeadEntry {
  int head = 0;                               // query-head index in the model
  HeadMetrics metrics;                        // over all rows
  std::optional<HeadMetrics> generated_rows;  // rows i >= prompt length; absent when none
};

struct LayerReport {
  int layer = 0;
  LayerStats stats;
  std::vector<HeadEntry> heads;
};

struct TermMass {
  std::string term;
  double mass = 0;  // mean over generated rows of the attention on the term's positions
};

// Attention from the generated rows to the positions of the matched terms, one head.
struct TermAttention {
  int layer = 0;
  int head = 0;
  double mean = 0;  // mean of A[i, p] over generated rows i and term positions p
  double max = 0;
  std::vector<TermMass> top_terms;  // by mass, descending, at most AnalysisOptions::top_terms
  // Only when AnalysisOptions::term_submatrix: [rows.size(), positions.size()] row-major.
  bool has_submatrix = false;
  std::vector<int> rows;
  std::vector<int> positions;
  std::vector<float> submatrix;
};

struct KeyWeight {
  int position = 0;
  std::string token;
  double weight = 0;
};

// The keys a query position attends to most, for one head or the mean over the layer's heads.
struct TopKList {
  int layer = 0;
  std::optional<int> head;  // nullopt: mean over the captured heads (JSON null)
  std::string query;
  int query_position = 0;
  std::string query_token;
  std::vector<KeyWeight> keys;  // descending weight; ties by position
};

struct DetectorReport {
  std::vector<HeadScore> previous_token;   // ranked
  std::vector<HeadScore> duplicate_token;  // ranked; empty when no token repeats
  std::vector<HeadScore> induction;        // ranked; only with a probe
  std::optional<InductionProbe> probe;
};

struct HeadReport {
  std::vector<std::string> tokens;  // every position's token string
  int prompt_length = 0;
  std::string generated_text;
  std::vector<LayerReport> layers;  // ascending layer
  std::vector<TermMatch> terms;
  std::vector<TermAttention> term_attention;
  std::vector<TopKList> top_k;
  DetectorReport detectors;
};

nlohmann::json HeadMetricsToJson(const HeadMetrics& metrics);
// {"tokens", "prompt_length", "generated_text", "layers", "terms", "term_attention",
//  "top_k", "detectors"}; see docs-fragments/analysis.md for every field.
nlohmann::json ReportToJson(const HeadReport& report);
// The inverse of ReportToJson (for clients that receive report_json, e.g. the remote
// `analyze --server` text mode). Missing or mistyped fields are InvalidArgument naming them.
absl::StatusOr<HeadReport> ReportFromJson(const nlohmann::json& document);
// Readable tables like the notebook's printout: per-layer statistics, the head
// specialisation table, terms, term attention, top-k lists and detector rankings.
std::string FormatReportText(const HeadReport& report);

}  // namespace attnscope::analysis
