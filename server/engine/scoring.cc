// Answer scoring and head sweeps (Engine::Score, Engine::Sweep) and the planning of
// interventions into per-layer edits of the forward.
#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "server/engine/engine.h"
#include "server/engine/intervention_plan.h"

namespace attnscope {

absl::StatusOr<std::vector<LayerEdits>> PlanInterventions(Transformer& model,
                                                          const InterventionSet& set,
                                                          int prompt_length) {
  const int layers = model.config().num_hidden_layers;
  std::vector<LayerEdits> edits(layers);
  std::vector<LayerEdits> source(layers);
  for (const Intervention& item : set.items) {
    LayerEdits& layer = edits[item.layer];
    const std::vector<int64_t> heads(item.heads.begin(), item.heads.end());
    switch (item.kind) {
      case Intervention::Kind::kAblate: {
        auto& into = item.mode == AblationMode::kMean ? layer.mean_heads : layer.zero_heads;
        into.insert(into.end(), heads.begin(), heads.end());
        break;
      }
      case Intervention::Kind::kKnockout: {
        LayerEdits::Knockout knockout;
        knockout.heads = heads;
        knockout.row_begin = item.rows == KnockoutRows::kAll         ? 0
                             : item.rows == KnockoutRows::kGenerated ? prompt_length
                                                                     : item.row_begin;
        knockout.row_end =
            item.rows == KnockoutRows::kRange ? item.row_end : std::numeric_limits<int64_t>::max();
        knockout.keys.assign(item.key_positions.begin(), item.key_positions.end());
        std::sort(knockout.keys.begin(), knockout.keys.end());
        layer.knockouts.push_back(std::move(knockout));
        break;
      }
      case Intervention::Kind::kPatch: {
        LayerEdits::Patch patch;
        patch.heads = heads;
        patch.positions.assign(item.positions.begin(), item.positions.end());
        if (patch.positions.empty()) {
          for (int p = 0; p < prompt_length; ++p) patch.positions.push_back(p);
        }
        layer.patches.push_back(std::move(patch));
        source[item.layer].record = true;
        break;
      }
    }
  }
  if (set.has_patches()) {
    // The source runs once, without interventions; its head outputs are kept per layer.
    KVCache cache = model.NewCache(static_cast<int>(set.patch_source_ids.size()));
    ForwardOptions options;
    options.edits = &source;
    options.prompt_length = static_cast<int>(set.patch_source_ids.size());
    options.all_logits = false;
    auto logits = model.Forward(set.patch_source_ids, &cache, options);
    if (!logits.ok()) return logits.status();
    for (int l = 0; l < layers; ++l) {
      if (source[l].record) edits[l].patch_source = source[l].recorded_output;
    }
  }
  return edits;
}

namespace {

// Every candidate packed after the prompt in one sequence: candidate k's tokens but its last
// sit at positions P, P+1, ... and see the prompt and their own earlier tokens only. The
// logits of row P-1 predict every first token; the row of candidate k's token j predicts
// its token j+1.
struct PackedCandidates {
  std::vector<int64_t> ids;
  std::vector<int64_t> positions;  // empty when no candidate has a second token
  at::Tensor blocked;              // undefined then too (plain causal)
  std::vector<int64_t> logit_rows;
  std::vector<std::vector<int>> predicting_row;  // [candidate][token] -> index in logit_rows
};

PackedCandidates Pack(const std::vector<int64_t>& prompt,
                      const std::vector<Candidate>& candidates) {
  PackedCandidates packed;
  const int64_t p = static_cast<int64_t>(prompt.size());
  packed.ids = prompt;
  packed.logit_rows.push_back(p - 1);
  std::vector<std::pair<int64_t, int64_t>> blocks;  // [begin, end) in the packed sequence
  for (const Candidate& candidate : candidates) {
    std::vector<int> rows = {0};
    const int64_t begin = static_cast<int64_t>(packed.ids.size());
    for (size_t j = 0; j + 1 < candidate.ids.size(); ++j) {
      rows.push_back(static_cast<int>(packed.logit_rows.size()));
      packed.logit_rows.push_back(static_cast<int64_t>(packed.ids.size()));
      packed.ids.push_back(candidate.ids[j]);
    }
    blocks.push_back({begin, static_cast<int64_t>(packed.ids.size())});
    packed.predicting_row.push_back(std::move(rows));
  }
  const int64_t total = static_cast<int64_t>(packed.ids.size());
  if (total == p) return packed;
  for (int64_t i = 0; i < p; ++i) packed.positions.push_back(i);
  std::vector<int64_t> block_of(total, -1);
  for (size_t k = 0; k < blocks.size(); ++k) {
    for (int64_t i = blocks[k].first; i < blocks[k].second; ++i) {
      packed.positions.push_back(p + i - blocks[k].first);
      block_of[i] = static_cast<int64_t>(k);
    }
  }
  at::Tensor blocked = at::ones({total, total}, at::TensorOptions().dtype(at::kBool)).triu(1);
  auto view = blocked.accessor<bool, 2>();
  for (int64_t i = p; i < total; ++i) {
    for (int64_t j = p; j < i; ++j) view[i][j] = block_of[j] != block_of[i];
  }
  packed.blocked = blocked;
  return packed;
}

// Scores from the logits of the packed rows, [rows, vocab] float32 on any device.
ScoreResult ScoreFromLogits(const at::Tensor& logits, const PackedCandidates& packed,
                            const std::vector<Candidate>& candidates) {
  at::Tensor logprobs = at::log_softmax(logits, -1).to(at::kCPU).contiguous();
  at::Tensor first_row = logits[0].to(at::kCPU).contiguous();
  const int64_t vocab = logits.size(1);
  auto lp = logprobs.accessor<float, 2>();
  const float* row0 = first_row.data_ptr<float>();
  ScoreResult result;
  for (size_t k = 0; k < candidates.size(); ++k) {
    CandidateScore score;
    score.text = candidates[k].text;
    score.token_ids = candidates[k].ids;
    for (size_t j = 0; j < candidates[k].ids.size(); ++j) {
      const double value = lp[packed.predicting_row[k][j]][candidates[k].ids[j]];
      score.token_logprobs.push_back(value);
      score.logprob += value;
    }
    const float first = row0[candidates[k].ids[0]];
    score.first_token_rank = 1 + static_cast<int>(std::count_if(
                                     row0, row0 + vocab, [first](float v) { return v > first; }));
    result.candidates.push_back(std::move(score));
  }
  if (result.candidates.size() >= 2) {
    result.has_logit_diff = true;
    result.logit_diff = result.candidates[0].logprob - result.candidates[1].logprob;
  }
  return result;
}

}  // namespace

absl::StatusOr<ScoreResult> Engine::Score(const std::vector<int64_t>& prompt_ids,
                                          const std::vector<Candidate>& candidates,
                                          const InterventionSet* interventions,
                                          const InterventionLimits& limits) {
  if (prompt_ids.empty()) return absl::InvalidArgumentError("input: the prompt has no tokens");
  const int prompt_length = static_cast<int>(prompt_ids.size());
  const int max_length = config_.max_position_embeddings;
  if (auto status =
          ValidateCandidates(candidates, prompt_length, max_length, config_, limits, false);
      !status.ok()) {
    return status;
  }
  int longest = 0;
  for (const Candidate& candidate : candidates) {
    longest = std::max(longest, static_cast<int>(candidate.ids.size()));
  }
  try {
    auto planned =
        PlanRequestInterventions(interventions, prompt_length, prompt_length + longest, limits);
    if (!planned.ok()) return planned.status();
    std::vector<LayerEdits> edits = *std::move(planned);
    Transformer& model = *runner_->model;
    PackedCandidates packed = Pack(prompt_ids, candidates);
    ForwardOptions options;
    options.edits = edits.empty() ? nullptr : &edits;
    options.prompt_length = prompt_length;
    options.positions = packed.positions;
    options.blocked = packed.blocked;
    options.logit_rows = packed.logit_rows;
    KVCache cache = model.NewCache(static_cast<int>(packed.ids.size()));
    auto logits = model.Forward(packed.ids, &cache, options);
    if (!logits.ok()) return logits.status();
    return ScoreFromLogits(*logits, packed, candidates);
  } catch (const std::exception& error) {
    return absl::InternalError(absl::StrCat("scoring failed: ", error.what()));
  }
}

absl::StatusOr<SweepResult> Engine::Sweep(const std::vector<int64_t>& prompt_ids,
                                          const std::vector<Candidate>& candidates, SweepSpec sweep,
                                          const SweepProgress& progress,
                                          const InterventionLimits& limits, int batch) {
  if (prompt_ids.empty()) return absl::InvalidArgumentError("input: the prompt has no tokens");
  const int prompt_length = static_cast<int>(prompt_ids.size());
  if (auto status = ValidateCandidates(candidates, prompt_length, config_.max_position_embeddings,
                                       config_, limits, true);
      !status.ok()) {
    return status;
  }
  if (auto status = ValidateSweep(&sweep, config_, limits); !status.ok()) return status;
  batch = std::max(1, batch);
  const std::vector<Candidate> pair(candidates.begin(), candidates.begin() + 2);
  try {
    Transformer& model = *runner_->model;
    const int layers = config_.num_hidden_layers;
    PackedCandidates packed = Pack(prompt_ids, pair);
    ForwardOptions options;
    options.prompt_length = prompt_length;
    options.positions = packed.positions;
    options.blocked = packed.blocked;
    options.logit_rows = packed.logit_rows;

    // Clean run, keeping each swept layer's input and head outputs.
    std::vector<LayerEdits> clean(layers);
    for (int layer : sweep.layers) clean[layer].record = true;
    options.edits = &clean;
    KVCache cache = model.NewCache(static_cast<int>(packed.ids.size()));
    auto clean_logits = model.Forward(packed.ids, &cache, options);
    if (!clean_logits.ok()) return clean_logits.status();
    options.edits = nullptr;
    SweepResult result;
    result.clean = ScoreFromLogits(*clean_logits, packed, pair);

    const int total = static_cast<int>(sweep.layers.size() * sweep.heads.size());
    int done = 0;
    if (progress) {
      if (auto status = progress(done, total); !status.ok()) return status;
    }
    for (int layer : sweep.layers) {
      const at::Tensor& outputs = clean[layer].recorded_output;  // [heads, T, dim]
      const at::Tensor& input = clean[layer].recorded_input;     // [T, hidden]
      at::Tensor means = outputs.narrow(1, 0, prompt_length)
                             .to(at::kFloat)
                             .mean(1)
                             .to(outputs.scalar_type());  // [heads, dim]
      for (size_t first = 0; first < sweep.heads.size(); first += batch) {
        const int64_t count =
            std::min<int64_t>(batch, static_cast<int64_t>(sweep.heads.size() - first));
        at::Tensor variants = outputs.unsqueeze(0).repeat({count, 1, 1, 1});
        for (int64_t b = 0; b < count; ++b) {
          const int head = sweep.heads[first + b];
          at::Tensor slot = variants[b][head];  // [T, dim]
          if (sweep.mode == AblationMode::kMean) {
            slot.copy_(means[head].unsqueeze(0).expand_as(slot));
          } else {
            slot.zero_();
          }
        }
        at::Tensor hidden =
            model.FinishLayer(layer, input.unsqueeze(0).expand({count, -1, -1}), variants);
        at::Tensor logits = model.ForwardBatchFrom(layer + 1, hidden, options);
        for (int64_t b = 0; b < count; ++b) {
          ScoreResult scored = ScoreFromLogits(logits[b], packed, pair);
          SweepCell cell;
          cell.layer = layer;
          cell.head = sweep.heads[first + b];
          cell.logit_diff = scored.logit_diff;
          cell.delta = scored.logit_diff - result.clean.logit_diff;
          result.cells.push_back(cell);
        }
        done += static_cast<int>(count);
        if (progress) {
          if (auto status = progress(done, total); !status.ok()) return status;
        }
      }
    }
    return result;
  } catch (const std::exception& error) {
    return absl::InternalError(absl::StrCat("sweep failed: ", error.what()));
  }
}

}  // namespace attnscope
