#include "server/engine/tensor_reductions.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/model/device_copy.h"

namespace attnscope {

namespace {

// The fields of sums_, in this order (HeadSums' value fields).
enum Field { kDiagonal, kPrevious, kCausal, kEntries, kBeginning, kSink, kEntropy, kFields };

// probs[h, r, first_row + r - shift] for the rows r where that column exists (>= 0): the
// values and the first such row.
std::pair<at::Tensor, int64_t> ShiftedDiagonal(const at::Tensor& probs, int64_t first_row,
                                               int64_t shift) {
  const int64_t offset = first_row - shift;
  const int64_t valid_from = std::min<int64_t>(std::max<int64_t>(0, -offset), probs.size(1));
  at::Tensor diagonal = probs.diagonal(offset, 1, 2);  // [heads, rows - valid_from]
  return {diagonal, valid_from};
}

void AddCounts(analysis::HeadSums* counts, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    ++counts->rows;
    if (row >= 1) ++counts->rows_with_previous;
    counts->below_diagonal_cells += row;
  }
}

}  // namespace

LayerReductions::LayerReductions(int layer, std::vector<int> heads, int prompt_length,
                                 const analysis::AnalysisOptions& options, int64_t chunk_elements)
    : layer_(layer),
      heads_(std::move(heads)),
      prompt_length_(prompt_length),
      beginning_columns_(options.metrics.beginning_columns),
      induction_(options.induction),
      chunk_elements_(std::max<int64_t>(1, chunk_elements)) {}

void LayerReductions::EnsureAccumulators(const at::Tensor& like) {
  if (sums_.defined()) return;
  const int64_t num_heads = static_cast<int64_t>(heads_.size());
  auto options = like.options().dtype(at::kDouble);
  sums_ = at::zeros({2, num_heads, kFields}, options);
  max_ = at::zeros({2, num_heads}, options);
  detectors_ = at::zeros({num_heads, 2}, options);
}

absl::Status LayerReductions::Add(const at::Tensor& probs, int first_row,
                                  const std::vector<int64_t>& ids,
                                  const std::vector<int>& term_positions,
                                  const std::vector<analysis::QueryPosition>& query_positions) {
  if (probs.dim() != 3 || probs.size(0) != static_cast<int64_t>(heads_.size()) ||
      probs.scalar_type() != at::kFloat) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor analysis: layer ", layer_, " block must be float32 [", heads_.size(),
                     ", rows, keys], got ", probs.dim(), " dimensions"));
  }
  const int64_t num_rows = probs.size(1), key_length = probs.size(2);
  const int64_t end_row = first_row + num_rows;
  if (first_row != rows_seen_ || num_rows <= 0 || key_length < end_row ||
      static_cast<int64_t>(ids.size()) < key_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor analysis: layer ", layer_, " rows [", first_row, ", ", end_row, ") with ",
        key_length, " keys and ", ids.size(), " ids do not follow row ", rows_seen_));
  }
  EnsureAccumulators(probs);
  at::NoGradGuard no_grad;

  // Host-known counts and which rows need the duplicate and induction detectors.
  AddCounts(&all_counts_, first_row, end_row);
  AddCounts(&generated_counts_, std::max<int64_t>(first_row, prompt_length_), end_row);
  for (; noted_ < end_row; ++noted_) first_position_.emplace(ids[noted_], noted_);  // first kept
  bool any_duplicate = false;
  for (int64_t row = first_row; row < end_row; ++row) {
    if (first_position_.at(ids[row]) < row) {
      ++duplicate_rows_;
      any_duplicate = true;
    }
  }
  at::Tensor key_ids;
  if (any_duplicate) {
    key_ids = HostToDevice(
        at::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + key_length), at::kLong),
        probs.device());
  }

  const int64_t chunk_rows =
      std::max<int64_t>(1, chunk_elements_ / std::max<int64_t>(1, probs.size(0) * key_length));
  for (int64_t begin = 0; begin < num_rows; begin += chunk_rows) {
    const int64_t count = std::min(chunk_rows, num_rows - begin);
    AddChunk(probs.narrow(1, begin, count), first_row + static_cast<int>(begin), key_length);
    if (any_duplicate) {
      // Mass on earlier positions holding the row's own id (zero for rows without one).
      at::Tensor chunk = probs.narrow(1, begin, count);
      at::Tensor row_ids = key_ids.narrow(0, first_row + begin, count);
      at::Tensor same = row_ids.unsqueeze(1).eq(key_ids.unsqueeze(0));  // [count, keys]
      auto index_options = key_ids.options();
      at::Tensor earlier = at::arange(key_length, index_options)
                               .unsqueeze(0)
                               .lt(at::arange(first_row + begin, first_row + begin + count,
                                              index_options)
                                       .unsqueeze(1));  // j < i
      same = same.logical_and(earlier);
      at::Tensor mass = (chunk * same.unsqueeze(0).to(at::kFloat)).sum(-1);  // [heads, count]
      detectors_.select(1, 0).add_(mass.to(at::kDouble).sum(1));
    }
  }

  if (induction_ && induction_->repeat_length > 0 && induction_->first_position >= 0) {
    const int64_t n = induction_->repeat_length;
    const int64_t lo = std::max<int64_t>(
        {analysis::InductionRowBegin(*induction_), n - 1, static_cast<int64_t>(first_row)});
    const int64_t hi = std::min<int64_t>(induction_->first_position + 2 * n, end_row);
    if (lo < hi) {
      auto [values, valid_from] = ShiftedDiagonal(probs, first_row, n - 1);
      const int64_t from = lo - first_row - valid_from;  // index into `values`
      detectors_.select(1, 1).add_(values.narrow(1, from, hi - lo).to(at::kDouble).sum(1));
      induction_rows_ += static_cast<int>(hi - lo);
    }
  }

  const int64_t generated_begin =
      std::min<int64_t>(std::max<int64_t>(prompt_length_ - first_row, 0), num_rows);
  if (generated_begin < num_rows && !term_positions.empty()) {
    if (!term_index_.defined()) {
      std::vector<int64_t> positions(term_positions.begin(), term_positions.end());
      term_index_ = HostToDevice(at::tensor(positions, at::kLong), probs.device());
    }
    term_values_.push_back(
        probs.narrow(1, generated_begin, num_rows - generated_begin).index_select(2, term_index_));
  }
  for (const analysis::QueryPosition& query : query_positions) {
    if (query.position < first_row || query.position >= end_row) continue;
    const bool seen = std::any_of(query_rows_.begin(), query_rows_.end(),
                                  [&](const auto& kept) { return kept.first == query.position; });
    if (seen) continue;
    query_rows_.emplace_back(
        query.position,
        probs.select(1, query.position - first_row).narrow(1, 0, query.position + 1).clone());
  }
  rows_seen_ = static_cast<int>(end_row);
  return absl::OkStatus();
}

void LayerReductions::AddChunk(const at::Tensor& probs, int first_row, int64_t key_length) {
  const int64_t num_rows = probs.size(1), num_heads = probs.size(0);
  // Per-row quantities, reduced along the keys in float32 (a tree reduction), then summed
  // over the rows in float64 like the reference.
  auto [diagonal, diagonal_from] = ShiftedDiagonal(probs, first_row, 0);  // every row
  auto [previous, previous_from] = ShiftedDiagonal(probs, first_row, 1);  // rows i >= 1
  if (previous_from > 0) {
    previous = at::cat({at::zeros({num_heads, previous_from}, previous.options()), previous}, 1);
  }
  at::Tensor entries = probs.sum(-1);
  at::Tensor beginning =
      probs.narrow(2, 0, std::min<int64_t>(beginning_columns_, key_length)).sum(-1);
  at::Tensor sink = probs.select(2, 0);
  // -sum p ln p over p > 0 (xlogy gives 0 at p = 0; negative noise is clamped away).
  at::Tensor positive = probs.clamp_min(0);
  at::Tensor entropy = -at::xlogy(positive, positive).sum(-1);
  at::Tensor causal = entries - diagonal;
  at::Tensor per_row =
      at::stack({diagonal, previous, causal, entries, beginning, sink, entropy}, -1)
          .to(at::kDouble);             // [heads, rows, fields]
  at::Tensor row_max = probs.amax(-1);  // [heads, rows]
  sums_.select(0, 0).add_(per_row.sum(1));
  max_.select(0, 0).copy_(at::maximum(max_.select(0, 0), row_max.amax(1).to(at::kDouble)));
  const int64_t generated_begin =
      std::min<int64_t>(std::max<int64_t>(prompt_length_ - first_row, 0), num_rows);
  if (generated_begin < num_rows) {
    const int64_t count = num_rows - generated_begin;
    sums_.select(0, 1).add_(per_row.narrow(1, generated_begin, count).sum(1));
    max_.select(0, 1).copy_(at::maximum(
        max_.select(0, 1), row_max.narrow(1, generated_begin, count).amax(1).to(at::kDouble)));
  }
}

analysis::ReducedRows LayerReductions::Finish() const {
  analysis::ReducedRows reduced;
  reduced.layer = layer_;
  reduced.heads = heads_;
  reduced.first_row = 0;
  reduced.num_rows = rows_seen_;
  const size_t num_heads = heads_.size();
  reduced.per_head.resize(num_heads);
  if (!sums_.defined()) return reduced;
  at::Tensor sums = sums_.to(at::kCPU).contiguous();
  at::Tensor max = max_.to(at::kCPU).contiguous();
  at::Tensor detectors = detectors_.to(at::kCPU).contiguous();
  at::Tensor terms;
  if (!term_values_.empty()) terms = at::cat(term_values_, 1).to(at::kCPU).contiguous();
  std::vector<std::pair<int, at::Tensor>> queries;
  for (const auto& [position, row] : query_rows_) {
    queries.emplace_back(position, row.to(at::kCPU, at::kDouble).contiguous());
  }
  for (size_t h = 0; h < num_heads; ++h) {
    analysis::ReducedHead& head = reduced.per_head[h];
    analysis::HeadSums* variants[2] = {&head.all, &head.generated};
    const analysis::HeadSums* counts[2] = {&all_counts_, &generated_counts_};
    for (int v = 0; v < 2; ++v) {
      const double* field = sums[v][h].data_ptr<double>();
      analysis::HeadSums& out = *variants[v];
      out = *counts[v];
      if (out.rows == 0) continue;
      out.diagonal = field[kDiagonal];
      out.previous = field[kPrevious];
      out.causal = field[kCausal];
      out.entries = field[kEntries];
      out.beginning = field[kBeginning];
      out.sink = field[kSink];
      out.entropy = field[kEntropy];
      out.max = max[v][h].item<double>();
    }
    head.duplicate_rows = duplicate_rows_;
    head.duplicate_sum = detectors[h][0].item<double>();
    head.induction_rows = induction_rows_;
    head.induction_sum = detectors[h][1].item<double>();
    if (terms.defined()) {
      const float* begin = terms[h].data_ptr<float>();
      head.term_values.assign(begin, begin + terms[h].numel());
    }
    for (const auto& [position, row] : queries) {
      const double* begin = row[h].data_ptr<double>();
      head.query_rows[position] = std::vector<double>(begin, begin + row[h].numel());
    }
  }
  return reduced;
}

}  // namespace attnscope
