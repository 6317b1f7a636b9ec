// AnalyzeHeads' per-head reductions as tensor ops, run where the probabilities are (the GPU
// for a CUDA model): per layer, running sums stay on the device, and only the per-head
// accumulators (a few numbers per head, the term columns of the generated rows and the few
// query rows of the top-k lists) come back, once, in Finish().
//
// analysis::StreamingAnalyzer (host loops over float rows) is the reference; Finish() gives
// exactly what it would have summed, so the report is built by the same code either way.
// Entries above the causal diagonal must be zeros, as the engine produces them.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "analysis/analyzer.h"

namespace attnscope {

class LayerReductions {
 public:
  // Blocks are reduced in chunks of rows of about `chunk_elements` probabilities, so the
  // temporaries (log terms, masks) stay near 64 MiB of float32 however long the prompt.
  static constexpr int64_t kChunkElements = int64_t{16} << 20;
  LayerReductions(int layer, std::vector<int> heads, int prompt_length,
                  const analysis::AnalysisOptions& options,
                  int64_t chunk_elements = kChunkElements);

  // probs: float32 [heads, num_rows, key_length] on any device, query rows first_row ...;
  // ids: the token ids of positions 0 .. key_length - 1 at least; term_positions: prompt
  // positions whose columns the generated rows keep; query_positions: rows whose keys the
  // top-k lists need (only those inside this block are taken).
  absl::Status Add(const at::Tensor& probs, int first_row, const std::vector<int64_t>& ids,
                   const std::vector<int>& term_positions,
                   const std::vector<analysis::QueryPosition>& query_positions);

  int rows_seen() const { return rows_seen_; }
  const std::vector<int>& heads() const { return heads_; }

  // The accumulated rows [0, rows_seen()) for StreamingAnalyzer::AddReducedRows; the one
  // device-to-host copy.
  analysis::ReducedRows Finish() const;

 private:
  void AddChunk(const at::Tensor& probs, int first_row, int64_t key_length);
  void EnsureAccumulators(const at::Tensor& like);

  int layer_;
  std::vector<int> heads_;
  int prompt_length_;
  int beginning_columns_;
  std::optional<analysis::InductionProbe> induction_;
  int64_t chunk_elements_;
  int rows_seen_ = 0;
  // Device accumulators: sums_[variant (all, generated), head, field]; max_[variant, head];
  // detectors_[head, (duplicate, induction)]. Float64, on the probabilities' device.
  at::Tensor sums_, max_, detectors_;
  at::Tensor term_index_;
  std::vector<at::Tensor> term_values_;                 // [heads, generated rows, terms]
  std::vector<std::pair<int, at::Tensor>> query_rows_;  // position -> [heads, position + 1]
  // Host-known counts (they do not depend on the values).
  analysis::HeadSums all_counts_, generated_counts_;
  int duplicate_rows_ = 0, induction_rows_ = 0;
  std::unordered_map<int64_t, int> first_position_;  // id -> its first position
  int noted_ = 0;                                    // positions entered in first_position_
};

}  // namespace attnscope
