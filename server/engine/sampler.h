// Next-token choice from one logits row, following transformers' logits processors:
// repetition penalty, then temperature, top-k, top-p, then a draw from a seeded generator.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "server/engine/engine.h"

namespace attnscope {

class Sampler {
 public:
  explicit Sampler(const GenerationParams& params) : params_(params), random_(params.seed) {}
  // `logits` is modified in place; `history` holds every id so far (prompt included).
  int64_t Next(std::vector<float>& logits, const std::vector<int64_t>& history);

 private:
  GenerationParams params_;
  std::mt19937_64 random_;
};

}  // namespace attnscope
