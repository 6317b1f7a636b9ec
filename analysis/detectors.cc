#include "analysis/detectors.h"

#include <algorithm>
#include <random>

namespace attnscope::analysis {

std::vector<int64_t> MakeInductionProbe(int n, uint64_t seed, int64_t lo, int64_t hi,
                                        int64_t bos_id) {
  std::vector<int64_t> ids;
  if (n <= 0 || hi <= lo) return ids;
  std::mt19937_64 rng(seed);
  const uint64_t range = static_cast<uint64_t>(hi - lo);
  std::vector<int64_t> repeat(n);
  for (int i = 0; i < n; ++i) repeat[i] = lo + static_cast<int64_t>(rng() % range);
  if (bos_id >= 0) ids.push_back(bos_id);
  ids.insert(ids.end(), repeat.begin(), repeat.end());
  ids.insert(ids.end(), repeat.begin(), repeat.end());
  return ids;
}

std::vector<int> EarlierSameIdPositions(const std::vector<int64_t>& ids, int i) {
  std::vector<int> positions;
  for (int j = 0; j < i; ++j) {
    if (ids[j] == ids[i]) positions.push_back(j);
  }
  return positions;
}

std::optional<double> DuplicateTokenScore(const float* matrix, const std::vector<int64_t>& ids) {
  const int64_t t = static_cast<int64_t>(ids.size());
  double sum = 0;
  int rows = 0;
  for (int64_t i = 0; i < t; ++i) {
    const std::vector<int> earlier = EarlierSameIdPositions(ids, static_cast<int>(i));
    if (earlier.empty()) continue;
    double mass = 0;
    for (int j : earlier) mass += matrix[i * t + j];
    sum += mass;
    ++rows;
  }
  if (rows == 0) return std::nullopt;
  return sum / rows;
}

int InductionRowBegin(const InductionProbe& probe) {
  return probe.first_position + probe.repeat_length;
}

int InductionRowEnd(const InductionProbe& probe, int seq_length) {
  return std::min(probe.first_position + 2 * probe.repeat_length, seq_length);
}

std::optional<double> InductionScore(const float* matrix, int seq_length,
                                     const InductionProbe& probe) {
  if (probe.repeat_length <= 0 || probe.first_position < 0) return std::nullopt;
  const int begin = InductionRowBegin(probe);
  const int end = InductionRowEnd(probe, seq_length);
  if (begin >= end) return std::nullopt;
  double sum = 0;
  for (int64_t i = begin; i < end; ++i) {
    sum += matrix[i * seq_length + (i - probe.repeat_length + 1)];
  }
  return sum / (end - begin);
}

void RankHeads(std::vector<HeadScore>* scores) {
  std::stable_sort(scores->begin(), scores->end(), [](const HeadScore& a, const HeadScore& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.layer != b.layer) return a.layer < b.layer;
    return a.head < b.head;
  });
}

}  // namespace attnscope::analysis
