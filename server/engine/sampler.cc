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
  // Scaled in double: a float logit over a tiny float temperature (1e-45) overflows float to
  // inf, and inf - inf is NaN, but never overflows double (3.4e38 / 1.4e-45 ~ 2.4e83). So a
  // temperature that small keeps all the mass on the top token: it samples greedily.
  std::vector<double> scores(vocab);
  for (int64_t i = 0; i < vocab; ++i) {
    scores[i] = static_cast<double>(logits[i]) / params_.temperature;
  }
  std::vector<int64_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  // Descending by score; ties by id so the order (and thus the draw) is deterministic.
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
  int64_t keep = vocab;
  if (params_.top_k > 0) keep = std::min<int64_t>(keep, params_.top_k);
  const double max_score = scores[order[0]];
  std::vector<double> probs(keep);
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(scores[order[i]] - max_score);
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
