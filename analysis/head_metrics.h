// Per-head and per-layer attention metrics, as the research notebook printed them.
//
// A is one head's causal attention matrix [T, T] (rows = queries, columns = keys, rows sum to
// 1, zeros above the diagonal); ln is the natural log and 0 ln 0 = 0. Two ways to compute:
// - whole-matrix functions (ComputeHeadMetrics, ComputeLayerStats) over a [T, T] / [H, T, T]
//   array, used by `analyze --from FILE` and by tests;
// - HeadMetricsAccumulator, fed query rows as the engine produces them (the prefill block,
//   then one row per decode step), holding only running sums.
// Both give the same numbers up to floating-point summation order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace attnscope::analysis {

// Thresholds of the notebook's head-type rule and the width of the "beginning" window.
struct HeadMetricsOptions {
  int beginning_columns = 10;    // k of `beginning`; when T < k the window is all T keys
  double self_threshold = 0.3;   // `self` when diagonal > this
  double focused_entropy = 2.0;  // `focused` when entropy < this (nats)
};

struct HeadMetrics {
  double diagonal = 0;        // mean_i A[i,i]
  double previous_token = 0;  // mean over rows i >= 1 of A[i,i-1]
  double causal = 0;          // sum_{j<i} A[i,j] / (number of (i,j) pairs with j < i)
  double beginning = 0;       // mean of A[i, 0:k] over the rows and the first k columns
  double sink = 0;            // mean_i A[i,0]
  double entropy = 0;         // mean over rows of -sum_j A[i,j] ln A[i,j]
  double max = 0;             // largest entry
  std::string type;           // self | beginning-focused | focused | distributed
};

// The notebook's rule: self if diagonal > 0.3, else beginning-focused if beginning > causal,
// else focused if entropy < 2.0, else distributed.
std::string ClassifyHead(const HeadMetrics& metrics, const HeadMetricsOptions& options);

// Metrics of one head over the query rows [row_begin, T) of `matrix` ([T, T], row-major).
// row_begin = 0 gives the notebook's numbers; row_begin = prompt length gives the
// "generated rows" variant, where every mean runs over those rows only and `causal` divides
// by the number of below-diagonal cells in them (sum of i over the rows). Returns nullopt
// when the row range is empty.
std::optional<HeadMetrics> ComputeHeadMetrics(const float* matrix, int seq_length, int row_begin,
                                              const HeadMetricsOptions& options);

struct LayerStats {
  int num_heads = 0;
  int seq_length = 0;
  double mean_attention = 0;  // mean of all H*T*T entries (causal zeros included)
  double max_attention = 0;
  double attention_entropy = 0;  // mean over heads and rows of the row entropy
};

// `data` is [num_heads, T, T], row-major.
LayerStats ComputeLayerStats(const float* data, int num_heads, int seq_length);

// -sum_j p_j ln p_j over `count` entries, with 0 ln 0 = 0 (negative noise is skipped too).
double RowEntropy(const float* row, int count);

// The running sums behind HeadMetrics over some query rows of one head. Sums computed
// elsewhere (the tensor reductions of server/engine/tensor_reductions.h) arrive in this form.
struct HeadSums {
  int64_t rows = 0;
  int64_t rows_with_previous = 0;    // rows i >= 1
  int64_t below_diagonal_cells = 0;  // sum of i over the rows
  double diagonal = 0;               // sum of A[i,i]
  double previous = 0;               // sum of A[i,i-1] over rows i >= 1
  double causal = 0;                 // sum of A[i,j], j < i
  double entries = 0;                // sum of every entry
  double beginning = 0;              // sum of A[i, 0:min(k, i+1)]
  double sink = 0;                   // sum of A[i,0]
  double entropy = 0;                // sum of row entropies
  double max = 0;                    // largest entry (0 when none)
};

// Running sums for one head, fed query rows in any order (each row once). Finish() needs
// the final sequence length only for the "beginning" window when T < k.
class HeadMetricsAccumulator {
 public:
  // Rows before `row_begin` are ignored (0: all rows; prompt length: generated rows only).
  HeadMetricsAccumulator(int row_begin, int beginning_columns)
      : row_begin_(row_begin), beginning_columns_(beginning_columns) {}
  // One query row `row` with `key_length` >= row + 1 entries (entries past the diagonal
  // are the causal zeros and are ignored).
  void AddRow(int row, const float* values, int key_length);
  // Sums of rows reduced elsewhere (already restricted to rows >= row_begin).
  void Merge(const HeadSums& sums);
  // nullopt when no row at or after row_begin arrived.
  std::optional<HeadMetrics> Finish(int seq_length, const HeadMetricsOptions& options) const;

  // Raw sums over the rows taken, for the per-layer statistics.
  int64_t rows() const { return sums_.rows; }
  double entry_sum() const { return sums_.entries; }
  double entropy_sum() const { return sums_.entropy; }
  double max_entry() const { return sums_.max; }
  const HeadSums& sums() const { return sums_; }

 private:
  int row_begin_;
  int beginning_columns_;
  HeadSums sums_;
};

}  // namespace attnscope::analysis
