// TransformerLens-style head detectors, each a score in [0, 1] per head:
// - previous-token: mean over rows i >= 1 of A[i, i-1] (HeadMetrics::previous_token);
// - duplicate-token: for every row i whose token id occurred earlier, the attention mass on
//   those earlier same-id positions, averaged over such rows;
// - induction: on a probe of n random ids repeated twice, the mean over the second repeat
//   of A[i, i-n+1] (the token after the previous occurrence of the current token).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace attnscope::analysis {

// Where the induction probe sits in the analysed sequence.
struct InductionProbe {
  int repeat_length = 0;   // n
  int first_position = 0;  // index of the first repeat's first token (1 after a BOS id)
};

// n ids drawn uniformly from [lo, hi) with std::mt19937_64(seed) (lo + draw % (hi - lo), so
// the sequence is the same on every standard library), repeated twice, preceded by
// `bos_id` when it is >= 0. Callers pass a range of ordinary vocabulary tokens.
std::vector<int64_t> MakeInductionProbe(int n, uint64_t seed, int64_t lo, int64_t hi,
                                        int64_t bos_id = -1);

// The positions j < i with ids[j] == ids[i].
std::vector<int> EarlierSameIdPositions(const std::vector<int64_t>& ids, int i);

// Whole-matrix scores over one head's [T, T] matrix (row-major, T = ids.size() for the
// duplicate score). nullopt when no row qualifies (no repeated id; probe out of range).
std::optional<double> DuplicateTokenScore(const float* matrix, const std::vector<int64_t>& ids);
std::optional<double> InductionScore(const float* matrix, int seq_length,
                                     const InductionProbe& probe);

// The rows of the second repeat, [first + n, first + 2n), clipped to the sequence.
int InductionRowBegin(const InductionProbe& probe);
int InductionRowEnd(const InductionProbe& probe, int seq_length);

struct HeadScore {
  int layer = 0;
  int head = 0;
  double score = 0;
};

// Descending by score; ties by (layer, head) ascending, so the order is reproducible.
void RankHeads(std::vector<HeadScore>* scores);

}  // namespace attnscope::analysis
