#include "server/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

namespace attnscope {

int64_t Sampler::Next(std::vector<float>& logits, const std::vector<int64_t>& history) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  if (params_.repetition_penalty != 1.0f) {
    // RepetitionPenaltyLogitsProcessor: each seen id once; shrink its score toward "unlikely".
    std::set<int64_t> seen(history.begin(), history.end());
    for (int64_t id : seen) {
      if (id < 0 || id >= vocab) continue;
      float& score = logits[id];
      score = score < 0 ? score * params_.repetition_penalty : score / params_.repetition_penalty;
    }
  }
  if (params_.greedy) {
    return std::max_element(logits.begin(), logits.end()) - logits.begin();
  }
  for (float& score : logits) score /= params_.temperature;
  std::vector<int64_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  // Descending by score; ties by id so the order (and thus the draw) is deterministic.
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  int64_t keep = vocab;
  if (params_.top_k > 0) keep = std::min<int64_t>(keep, params_.top_k);
  const float max_score = logits[order[0]];
  std::vector<double> probs(keep);
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(static_cast<double>(logits[order[i]]) - max_score);
    total += probs[i];
  }
  if (params_.top_p < 1.0f) {
    // TopPLogitsWarper keeps the smallest prefix whose mass reaches top_p (at least one token).
    double cumulative = 0;
    int64_t cut = keep;
    for (int64_t i = 0; i < keep; ++i) {
      cumulative += probs[i] / total;
      if (cumulative >= params_.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = std::max<int64_t>(cut, 1);
    probs.resize(keep);
    total = std::accumulate(probs.begin(), probs.end(), 0.0);
  }
  std::uniform_real_distribution<double> uniform(0.0, total);
  double target = uniform(random_);
  for (int64_t i = 0; i < keep; ++i) {
    target -= probs[i];
    if (target <= 0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace attnscope
