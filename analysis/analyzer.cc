#include "analysis/analyzer.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"

namespace attnscope::analysis {

namespace {

// Term matches of the prompt, restricted to prompt positions.
std::vector<TermMatch> MatchInputTerms(const AnalysisInput& input, int prompt_length,
                                       const std::vector<std::string>& terms) {
  std::vector<TermMatch> matches;
  if (!input.spans.empty()) {
    matches = FindTermsInText(input.text, input.spans, terms);
  } else {
    const size_t count = std::min<size_t>(input.tokens.size(), prompt_length);
    matches = FindTermsInTokens(
        std::vector<std::string>(input.tokens.begin(), input.tokens.begin() + count), terms);
  }
  for (TermMatch& match : matches) {
    match.positions.erase(std::remove_if(match.positions.begin(), match.positions.end(),
                                         [&](int p) { return p >= prompt_length; }),
                          match.positions.end());
  }
  return matches;
}

std::vector<int> UnionOfPositions(const std::vector<TermMatch>& matches) {
  std::set<int> positions;
  for (const TermMatch& match : matches)
    positions.insert(match.positions.begin(), match.positions.end());
  return std::vector<int>(positions.begin(), positions.end());
}

// Term attention of one head from its [rows x positions] submatrix.
TermAttention BuildTermAttention(int layer, int head, const std::vector<int>& rows,
                                 const std::vector<int>& positions,
                                 const std::vector<float>& values,
                                 const std::vector<TermMatch>& matches,
                                 const AnalysisOptions& options) {
  TermAttention result;
  result.layer = layer;
  result.head = head;
  const size_t columns = positions.size();
  double sum = 0, max_value = 0;
  for (float v : values) {
    sum += v;
    max_value = std::max(max_value, static_cast<double>(v));
  }
  result.mean = values.empty() ? 0.0 : sum / values.size();
  result.max = max_value;
  // Mass per distinct term: mean over rows of the sum over that term's positions.
  std::vector<std::string> term_order;
  std::map<std::string, std::set<int>> term_columns;
  for (const TermMatch& match : matches) {
    if (!term_columns.count(match.term)) term_order.push_back(match.term);
    auto& columns_of_term = term_columns[match.term];
    for (int p : match.positions) {
      const auto it = std::lower_bound(positions.begin(), positions.end(), p);
      if (it != positions.end() && *it == p) columns_of_term.insert(it - positions.begin());
    }
  }
  for (const std::string& term : term_order) {
    double mass = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      for (int c : term_columns[term]) mass += values[r * columns + c];
    }
    result.top_terms.push_back({term, rows.empty() ? 0.0 : mass / rows.size()});
  }
  std::stable_sort(result.top_terms.begin(), result.top_terms.end(),
                   [](const TermMass& a, const TermMass& b) { return a.mass > b.mass; });
  if (static_cast<int>(result.top_terms.size()) > options.top_terms) {
    result.top_terms.resize(std::max(options.top_terms, 0));
  }
  if (options.term_submatrix) {
    result.has_submatrix = true;
    result.rows = rows;
    result.positions = positions;
    result.submatrix = values;
  }
  return result;
}

// The top-k keys of one query row (`values` holds keys 0..length-1).
TopKList BuildTopK(int layer, std::optional<int> head, const QueryPosition& query,
                   const std::vector<double>& values, const std::vector<std::string>& tokens,
                   const AnalysisOptions& options) {
  const int position = query.position;
  TopKList list;
  list.layer = layer;
  list.head = head;
  list.query = options.queries[query.query_index];
  list.query_position = position;
  list.query_token = tokens[position];
  std::vector<int> order(values.size());
  for (size_t j = 0; j < order.size(); ++j) order[j] = static_cast<int>(j);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return values[a] > values[b]; });
  const int count = std::min<int>(options.top_k_keys, static_cast<int>(order.size()));
  for (int n = 0; n < count; ++n) {
    list.keys.push_back({order[n], tokens[order[n]], values[order[n]]});
  }
  return list;
}

// The top-k lists of one layer from its query rows: per query position, the head mean and,
// when asked, each head. rows[h][q] holds query q's keys 0..position.
void AppendTopKLists(int layer, const std::vector<int>& heads,
                     const std::vector<QueryPosition>& queries,
                     const std::vector<std::vector<std::vector<double>>>& rows,
                     const std::vector<std::string>& tokens, const AnalysisOptions& options,
                     std::vector<TopKList>* out) {
  for (size_t q = 0; q < queries.size(); ++q) {
    std::vector<double> mean(queries[q].position + 1, 0.0);
    for (size_t h = 0; h < heads.size(); ++h) {
      for (size_t j = 0; j < mean.size(); ++j) mean[j] += rows[h][q][j];
    }
    for (double& v : mean) v /= std::max<size_t>(heads.size(), 1);
    out->push_back(BuildTopK(layer, std::nullopt, queries[q], mean, tokens, options));
    if (!options.top_k_per_head) continue;
    for (size_t h = 0; h < heads.size(); ++h) {
      out->push_back(BuildTopK(layer, heads[h], queries[q], rows[h][q], tokens, options));
    }
  }
}

void RankDetectors(DetectorReport* detectors) {
  RankHeads(&detectors->previous_token);
  RankHeads(&detectors->duplicate_token);
  RankHeads(&detectors->induction);
}

void NormaliseTokens(AnalysisInput* input) { input->tokens.resize(input->token_ids.size()); }

// Query-major, then by position: the order of the report's top-k lists.
void SortQueries(std::vector<QueryPosition>* queries) {
  std::stable_sort(queries->begin(), queries->end(),
                   [](const QueryPosition& a, const QueryPosition& b) {
                     if (a.query_index != b.query_index) return a.query_index < b.query_index;
                     return a.position < b.position;
                   });
}

}  // namespace

// Running state of one layer: per-head sums and the few rows/columns that the term, top-k
// and detector parts need.
class StreamingAnalyzer::LayerAccumulator {
 public:
  LayerAccumulator(const StreamingAnalyzer* owner, int layer, std::vector<int> heads)
      : owner_(owner), layer_(layer), heads_(std::move(heads)) {
    const int k = owner_->options_.metrics.beginning_columns;
    for (size_t h = 0; h < heads_.size(); ++h) {
      per_head_.emplace_back(owner_->prompt_length_, k);
    }
  }

  const std::vector<int>& heads() const { return heads_; }
  int rows_seen() const { return next_row_; }

  // Rows [first_row, first_row + num_rows) may come next, with key_length keys.
  absl::Status CheckNext(int first_row, int num_rows, int key_length) const {
    if (first_row != next_row_) {
      return absl::InvalidArgumentError(absl::StrCat("analysis: layer ", layer_, " rows start at ",
                                                     first_row, " but the next expected row is ",
                                                     next_row_));
    }
    const int end_row = first_row + num_rows;
    if (key_length < end_row) {
      return absl::InvalidArgumentError(
          absl::StrCat("analysis: layer ", layer_, " rows [", first_row, ", ", end_row,
                       ") need at least ", end_row, " keys, got key_length ", key_length));
    }
    if (end_row > owner_->num_tokens()) {
      return absl::FailedPreconditionError(absl::StrCat("analysis: layer ", layer_, " row ",
                                                        end_row - 1, " arrived before its token (",
                                                        owner_->num_tokens(), " tokens known)"));
    }
    return absl::OkStatus();
  }

  absl::Status AddReducedRows(const ReducedRows& rows) {
    const int end_row = rows.first_row + rows.num_rows;
    if (auto status = CheckNext(rows.first_row, rows.num_rows, end_row); !status.ok()) {
      return status;
    }
    if (rows.per_head.size() != heads_.size()) {
      return absl::InvalidArgumentError(absl::StrCat("analysis: layer ", layer_,
                                                     " reduced rows have ", rows.per_head.size(),
                                                     " heads, expected ", heads_.size()));
    }
    for (size_t h = 0; h < heads_.size(); ++h) {
      const ReducedHead& reduced = rows.per_head[h];
      PerHead& head = per_head_[h];
      head.all.Merge(reduced.all);
      head.generated.Merge(reduced.generated);
      head.duplicate_sum += reduced.duplicate_sum;
      head.duplicate_rows += reduced.duplicate_rows;
      head.induction_sum += reduced.induction_sum;
      head.induction_rows += reduced.induction_rows;
      head.term_values.insert(head.term_values.end(), reduced.term_values.begin(),
                              reduced.term_values.end());
      for (const auto& [position, values] : reduced.query_rows) head.query_rows[position] = values;
    }
    for (int row = std::max(rows.first_row, owner_->prompt_length_); row < end_row; ++row) {
      generated_rows_.push_back(row);
    }
    next_row_ = end_row;
    return absl::OkStatus();
  }

  absl::Status AddRows(const AttentionRows& rows) {
    if (auto status = CheckNext(rows.first_row, rows.num_rows, rows.key_length); !status.ok()) {
      return status;
    }
    const int end_row = rows.first_row + rows.num_rows;
    const AnalysisOptions& options = owner_->options_;
    const std::vector<int>& term_positions = owner_->term_positions_;
    for (int r = 0; r < rows.num_rows; ++r) {
      const int row = rows.first_row + r;
      const bool generated = row >= owner_->prompt_length_;
      const std::vector<int> earlier = EarlierSameIdPositions(owner_->ids_, row);
      bool is_query = false;
      for (const QueryPosition& query : owner_->query_positions_) {
        is_query = is_query || query.position == row;
      }
      const bool in_induction = options.induction && row >= InductionRowBegin(*options.induction) &&
                                row < InductionRowEnd(*options.induction, row + 1) &&
                                row - options.induction->repeat_length + 1 >= 0;
      for (size_t h = 0; h < heads_.size(); ++h) {
        const float* values =
            rows.data + (static_cast<int64_t>(h) * rows.num_rows + r) * rows.key_length;
        const int used = row + 1;  // keys past the diagonal are causal zeros
        PerHead& head = per_head_[h];
        head.all.AddRow(row, values, rows.key_length);
        head.generated.AddRow(row, values, rows.key_length);
        if (!earlier.empty()) {
          double mass = 0;
          for (int j : earlier) mass += values[j];
          head.duplicate_sum += mass;
          ++head.duplicate_rows;
        }
        if (in_induction) {
          head.induction_sum += values[row - options.induction->repeat_length + 1];
          ++head.induction_rows;
        }
        if (generated) {
          for (int p : term_positions) head.term_values.push_back(values[p]);
        }
        if (is_query) head.query_rows[row] = std::vector<double>(values, values + used);
      }
      if (generated) generated_rows_.push_back(row);
    }
    next_row_ = end_row;
    return absl::OkStatus();
  }

  LayerReport Finish(int seq_length, HeadReport* report) const {
    const AnalysisOptions& options = owner_->options_;
    LayerReport layer;
    layer.layer = layer_;
    layer.stats.num_heads = static_cast<int>(heads_.size());
    layer.stats.seq_length = seq_length;
    // The layer's numbers are the heads' all-row sums together.
    double sum = 0, entropy = 0, max_value = 0;
    for (const PerHead& head : per_head_) {
      sum += head.all.entry_sum();
      entropy += head.all.entropy_sum();
      max_value = std::max(max_value, head.all.max_entry());
    }
    const double rows = static_cast<double>(heads_.size()) * seq_length;
    if (rows > 0) {
      layer.stats.mean_attention = sum / (rows * seq_length);
      layer.stats.max_attention = max_value;
      layer.stats.attention_entropy = entropy / rows;
    }
    std::vector<QueryPosition> queries = owner_->query_positions_;
    SortQueries(&queries);
    std::vector<std::vector<std::vector<double>>> query_rows(heads_.size());
    for (size_t h = 0; h < heads_.size(); ++h) {
      const PerHead& head = per_head_[h];
      HeadEntry entry;
      entry.head = heads_[h];
      entry.metrics = *head.all.Finish(seq_length, options.metrics);
      entry.generated_rows = head.generated.Finish(seq_length, options.metrics);
      layer.heads.push_back(entry);
      report->detectors.previous_token.push_back({layer_, heads_[h], entry.metrics.previous_token});
      if (head.duplicate_rows > 0) {
        report->detectors.duplicate_token.push_back(
            {layer_, heads_[h], head.duplicate_sum / head.duplicate_rows});
      }
      if (head.induction_rows > 0) {
        report->detectors.induction.push_back(
            {layer_, heads_[h], head.induction_sum / head.induction_rows});
      }
      if (!generated_rows_.empty() && !owner_->term_positions_.empty()) {
        report->term_attention.push_back(
            BuildTermAttention(layer_, heads_[h], generated_rows_, owner_->term_positions_,
                               head.term_values, owner_->terms_, options));
      }
      for (const QueryPosition& q : queries)
        query_rows[h].push_back(head.query_rows.at(q.position));
    }
    AppendTopKLists(layer_, heads_, queries, query_rows, owner_->tokens_, options, &report->top_k);
    return layer;
  }

 private:
  struct PerHead {
    PerHead(int prompt_length, int beginning_columns)
        : all(0, beginning_columns), generated(prompt_length, beginning_columns) {}
    HeadMetricsAccumulator all;
    HeadMetricsAccumulator generated;
    double duplicate_sum = 0;
    int duplicate_rows = 0;
    double induction_sum = 0;
    int induction_rows = 0;
    std::vector<float> term_values;  // [generated rows so far, term positions]
    std::map<int, std::vector<double>> query_rows;
  };

  const StreamingAnalyzer* owner_;
  int layer_;
  std::vector<int> heads_;
  std::vector<PerHead> per_head_;
  std::vector<int> generated_rows_;
  int next_row_ = 0;
};

StreamingAnalyzer::StreamingAnalyzer(AnalysisInput input, AnalysisOptions options)
    : options_(std::move(options)) {
  NormaliseTokens(&input);
  prompt_length_ =
      input.prompt_length > 0 ? input.prompt_length : static_cast<int>(input.token_ids.size());
  terms_ = MatchInputTerms(input, prompt_length_, options_.terms);
  term_positions_ = UnionOfPositions(terms_);
  for (size_t i = 0; i < input.token_ids.size(); ++i) {
    AddToken(input.token_ids[i], input.tokens[i]);
  }
}

StreamingAnalyzer::~StreamingAnalyzer() = default;

void StreamingAnalyzer::AddToken(int64_t id, const std::string& token) {
  ids_.push_back(id);
  tokens_.push_back(token);
  NoteQueryPosition(static_cast<int>(ids_.size()) - 1);
}

void StreamingAnalyzer::NoteQueryPosition(int position) {
  for (size_t q = 0; q < options_.queries.size(); ++q) {
    int found = 0;
    for (const QueryPosition& query : query_positions_) found += query.query_index == int(q);
    if (found < options_.max_query_positions &&
        ContainsIgnoringCase(tokens_[position], options_.queries[q])) {
      query_positions_.push_back({static_cast<int>(q), position});
    }
  }
}

absl::Status StreamingAnalyzer::AddRows(const AttentionRows& rows) {
  if (rows.num_heads <= 0 || rows.heads == nullptr || rows.num_rows <= 0 || rows.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("analysis: layer ", rows.layer, " block has ",
                                                   rows.num_heads, " heads and ", rows.num_rows,
                                                   " rows; both must be positive with data"));
  }
  auto layer = LayerFor(rows.layer, std::vector<int>(rows.heads, rows.heads + rows.num_heads));
  if (!layer.ok()) return layer.status();
  return (*layer)->AddRows(rows);
}

absl::Status StreamingAnalyzer::AddReducedRows(const ReducedRows& rows) {
  if (rows.heads.empty() || rows.num_rows <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("analysis: layer ", rows.layer, " reduced rows have ", rows.heads.size(),
                     " heads and ", rows.num_rows, " rows; both must be positive"));
  }
  auto layer = LayerFor(rows.layer, rows.heads);
  if (!layer.ok()) return layer.status();
  return (*layer)->AddReducedRows(rows);
}

absl::StatusOr<StreamingAnalyzer::LayerAccumulator*> StreamingAnalyzer::LayerFor(
    int layer, const std::vector<int>& heads) {
  auto it = layers_.find(layer);
  if (it == layers_.end()) {
    it = layers_.emplace(layer, std::make_unique<LayerAccumulator>(this, layer, heads)).first;
  } else if (it->second->heads() != heads) {
    return absl::InvalidArgumentError(
        absl::StrCat("analysis: layer ", layer, " changed its head list between blocks"));
  }
  return it->second.get();
}

absl::StatusOr<HeadReport> StreamingAnalyzer::Finish(const std::string& generated_text) const {
  HeadReport report;
  report.tokens = tokens_;
  report.prompt_length = prompt_length_;
  report.generated_text = generated_text;
  report.terms = terms_;
  report.detectors.probe = options_.induction;
  const int seq_length = num_tokens();
  for (const auto& [layer, accumulator] : layers_) {
    if (accumulator->rows_seen() != seq_length) {
      return absl::FailedPreconditionError(absl::StrCat("analysis: layer ", layer, " has rows for ",
                                                        accumulator->rows_seen(), " of ",
                                                        seq_length, " tokens"));
    }
    report.layers.push_back(accumulator->Finish(seq_length, &report));
  }
  RankDetectors(&report.detectors);
  return report;
}

absl::StatusOr<HeadReport> AnalyzeMatrices(const AnalysisInput& original_input,
                                           const std::vector<LayerMatrices>& layers,
                                           const AnalysisOptions& options,
                                           const std::string& generated_text) {
  AnalysisInput input = original_input;
  NormaliseTokens(&input);
  const int seq_length = static_cast<int>(input.token_ids.size());
  const int prompt_length = input.prompt_length > 0 ? input.prompt_length : seq_length;
  if (prompt_length > seq_length) {
    return absl::InvalidArgumentError(absl::StrCat("analysis: prompt_length ", prompt_length,
                                                   " exceeds the ", seq_length, " tokens"));
  }
  HeadReport report;
  report.tokens = input.tokens;
  report.prompt_length = prompt_length;
  report.generated_text = generated_text;
  report.terms = MatchInputTerms(input, prompt_length, options.terms);
  report.detectors.probe = options.induction;
  const std::vector<int> term_positions = UnionOfPositions(report.terms);
  std::vector<QueryPosition> queries;
  for (size_t q = 0; q < options.queries.size(); ++q) {
    for (int position :
         FindQueryPositions(input.tokens, options.queries[q], options.max_query_positions)) {
      queries.push_back({static_cast<int>(q), position});
    }
  }
  std::vector<int> generated_rows;
  for (int i = prompt_length; i < seq_length; ++i) generated_rows.push_back(i);

  std::vector<const LayerMatrices*> ordered;
  for (const LayerMatrices& layer : layers) ordered.push_back(&layer);
  std::stable_sort(
      ordered.begin(), ordered.end(),
      [](const LayerMatrices* a, const LayerMatrices* b) { return a->layer < b->layer; });
  for (const LayerMatrices* matrices : ordered) {
    if (matrices->seq_length != seq_length) {
      return absl::InvalidArgumentError(absl::StrCat("analysis: layer ", matrices->layer,
                                                     " has seq_length ", matrices->seq_length,
                                                     " but there are ", seq_length, " tokens"));
    }
    const int num_heads = static_cast<int>(matrices->heads.size());
    const int64_t head_stride = static_cast<int64_t>(seq_length) * seq_length;
    LayerReport layer;
    layer.layer = matrices->layer;
    layer.stats = ComputeLayerStats(matrices->data, num_heads, seq_length);
    std::vector<std::vector<std::vector<double>>> query_rows(num_heads);
    for (int h = 0; h < num_heads; ++h) {
      const float* matrix = matrices->data + h * head_stride;
      const int head_index = matrices->heads[h];
      HeadEntry entry;
      entry.head = head_index;
      entry.metrics = *ComputeHeadMetrics(matrix, seq_length, 0, options.metrics);
      entry.generated_rows = ComputeHeadMetrics(matrix, seq_length, prompt_length, options.metrics);
      layer.heads.push_back(entry);
      report.detectors.previous_token.push_back(
          {matrices->layer, head_index, entry.metrics.previous_token});
      if (auto score = DuplicateTokenScore(matrix, input.token_ids)) {
        report.detectors.duplicate_token.push_back({matrices->layer, head_index, *score});
      }
      if (options.induction) {
        if (auto score = InductionScore(matrix, seq_length, *options.induction)) {
          report.detectors.induction.push_back({matrices->layer, head_index, *score});
        }
      }
      if (!generated_rows.empty() && !term_positions.empty()) {
        std::vector<float> values;
        for (int i : generated_rows) {
          for (int p : term_positions) values.push_back(matrix[int64_t{i} * seq_length + p]);
        }
        report.term_attention.push_back(BuildTermAttention(matrices->layer, head_index,
                                                           generated_rows, term_positions, values,
                                                           report.terms, options));
      }
      for (const QueryPosition& q : queries) {
        const float* row = matrix + int64_t{q.position} * seq_length;
        query_rows[h].push_back(std::vector<double>(row, row + q.position + 1));
      }
    }
    AppendTopKLists(matrices->layer, matrices->heads, queries, query_rows, input.tokens, options,
                    &report.top_k);
    report.layers.push_back(std::move(layer));
  }
  RankDetectors(&report.detectors);
  return report;
}

}  // namespace attnscope::analysis
