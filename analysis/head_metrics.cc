#include "analysis/head_metrics.h"

#include <algorithm>
#include <cmath>

namespace attnscope::analysis {

std::string ClassifyHead(const HeadMetrics& metrics, const HeadMetricsOptions& options) {
  if (metrics.diagonal > options.self_threshold) return "self";
  if (metrics.beginning > metrics.causal) return "beginning-focused";
  if (metrics.entropy < options.focused_entropy) return "focused";
  return "distributed";
}

double RowEntropy(const float* row, int count) {
  double entropy = 0;
  for (int j = 0; j < count; ++j) {
    const double p = row[j];
    if (p > 0) entropy -= p * std::log(p);
  }
  return entropy;
}

std::optional<HeadMetrics> ComputeHeadMetrics(const float* matrix, int seq_length, int row_begin,
                                              const HeadMetricsOptions& options) {
  const int64_t t = seq_length;
  row_begin = std::max(row_begin, 0);
  if (row_begin >= seq_length) return std::nullopt;
  const int window = std::min(options.beginning_columns, seq_length);
  double diagonal = 0, previous = 0, causal = 0, beginning = 0, sink = 0, entropy = 0;
  double max_value = 0;
  int64_t previous_rows = 0;
  int64_t below_diagonal_cells = 0;
  for (int64_t i = row_begin; i < t; ++i) {
    const float* row = matrix + i * t;
    diagonal += row[i];
    if (i >= 1) {
      previous += row[i - 1];
      ++previous_rows;
    }
    for (int64_t j = 0; j < i; ++j) causal += row[j];
    below_diagonal_cells += i;
    for (int j = 0; j < window; ++j) beginning += row[j];
    sink += row[0];
    entropy += RowEntropy(row, seq_length);
    for (int64_t j = 0; j < t; ++j) max_value = std::max(max_value, static_cast<double>(row[j]));
  }
  const double rows = static_cast<double>(t - row_begin);
  HeadMetrics metrics;
  metrics.diagonal = diagonal / rows;
  metrics.previous_token = previous_rows > 0 ? previous / previous_rows : 0.0;
  metrics.causal = below_diagonal_cells > 0 ? causal / below_diagonal_cells : 0.0;
  metrics.beginning = beginning / (rows * window);
  metrics.sink = sink / rows;
  metrics.entropy = entropy / rows;
  metrics.max = max_value;
  metrics.type = ClassifyHead(metrics, options);
  return metrics;
}

LayerStats ComputeLayerStats(const float* data, int num_heads, int seq_length) {
  LayerStats stats;
  stats.num_heads = num_heads;
  stats.seq_length = seq_length;
  const int64_t rows = static_cast<int64_t>(num_heads) * seq_length;
  if (rows == 0) return stats;
  double sum = 0, entropy = 0, max_value = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = data + r * seq_length;
    for (int j = 0; j < seq_length; ++j) {
      sum += row[j];
      max_value = std::max(max_value, static_cast<double>(row[j]));
    }
    entropy += RowEntropy(row, seq_length);
  }
  stats.mean_attention = sum / (static_cast<double>(rows) * seq_length);
  stats.max_attention = max_value;
  stats.attention_entropy = entropy / rows;
  return stats;
}

void HeadMetricsAccumulator::AddRow(int row, const float* values, int key_length) {
  if (row < row_begin_) return;
  // Entries past the diagonal are causal zeros: they add nothing to any sum. Columns of the
  // beginning window past `used` are zeros too, so min() keeps it exact when T < k.
  const int used = std::min(key_length, row + 1);
  const int window = std::min(beginning_columns_, used);
  ++sums_.rows;
  sums_.diagonal += values[row];
  if (row >= 1) {
    sums_.previous += values[row - 1];
    ++sums_.rows_with_previous;
  }
  sums_.below_diagonal_cells += row;
  sums_.sink += values[0];
  // One pass over the row: this runs for every row of every head of every layer.
  double row_sum = 0, beginning = 0, entropy = 0;
  double max_value = sums_.max;
  for (int j = 0; j < used; ++j) {
    const double p = values[j];
    row_sum += p;
    if (j < window) beginning += p;
    if (p > 0) entropy -= p * std::log(p);
    if (p > max_value) max_value = p;
  }
  sums_.causal += row_sum - values[row];
  sums_.entries += row_sum;
  sums_.beginning += beginning;
  sums_.entropy += entropy;
  sums_.max = max_value;
}

void HeadMetricsAccumulator::Merge(const HeadSums& sums) {
  sums_.rows += sums.rows;
  sums_.rows_with_previous += sums.rows_with_previous;
  sums_.below_diagonal_cells += sums.below_diagonal_cells;
  sums_.diagonal += sums.diagonal;
  sums_.previous += sums.previous;
  sums_.causal += sums.causal;
  sums_.entries += sums.entries;
  sums_.beginning += sums.beginning;
  sums_.sink += sums.sink;
  sums_.entropy += sums.entropy;
  sums_.max = std::max(sums_.max, sums.max);
}

std::optional<HeadMetrics> HeadMetricsAccumulator::Finish(int seq_length,
                                                          const HeadMetricsOptions& options) const {
  if (sums_.rows == 0) return std::nullopt;
  const double rows = static_cast<double>(sums_.rows);
  const int window = std::min(options.beginning_columns, seq_length);
  HeadMetrics metrics;
  metrics.diagonal = sums_.diagonal / rows;
  metrics.previous_token =
      sums_.rows_with_previous > 0 ? sums_.previous / sums_.rows_with_previous : 0.0;
  metrics.causal = sums_.below_diagonal_cells > 0 ? sums_.causal / sums_.below_diagonal_cells : 0.0;
  metrics.beginning = window > 0 ? sums_.beginning / (rows * window) : 0.0;
  metrics.sink = sums_.sink / rows;
  metrics.entropy = sums_.entropy / rows;
  metrics.max = sums_.max;
  metrics.type = ClassifyHead(metrics, options);
  return metrics;
}

}  // namespace attnscope::analysis
