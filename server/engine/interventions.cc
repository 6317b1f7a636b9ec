#include "server/engine/interventions.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "analysis/terms.h"
#include "nlohmann/json.hpp"
#include "server/capture/capture_spec.h"
#include "server/status/field_error.h"

namespace attnscope {
namespace {

absl::StatusOr<int> ResolveLayer(int layer, int count, const std::string& field) {
  const int64_t value = layer < 0 ? static_cast<int64_t>(count) + layer : layer;
  if (value < 0 || value >= count) {
    return FieldError(field, absl::StrCat(layer),
                      absl::StrCat("out of range; the model has ", count,
                                   " layers (valid: ", -count, "..", count - 1, ")"));
  }
  return static_cast<int>(value);
}

// ResolveIndices reports OUT_OF_RANGE; a bad index in a request is a bad argument. The
// message names `field`; the refused field is the bad entry of `path` ("...heads[1]").
absl::StatusOr<std::vector<int>> ResolveHeads(const std::vector<int>& heads, int count,
                                              const std::string& field, const std::string& path) {
  size_t bad = 0;
  absl::StatusOr<std::vector<int>> resolved = ResolveIndices(heads, count, field, &bad);
  if (!resolved.ok()) {
    return WithRefusedField(absl::InvalidArgumentError(resolved.status().message()),
                            absl::StrCat(path, "[", bad, "]"));
  }
  return resolved;
}

// The .proto's name of an intervention's oneof member.
const char* KindField(Intervention::Kind kind) {
  switch (kind) {
    case Intervention::Kind::kKnockout:
      return "knockout";
    case Intervention::Kind::kPatch:
      return "patch";
    default:
      return "ablate";
  }
}

absl::Status CheckPositions(std::vector<int>* positions, int end, const std::string& field,
                            const std::string& path, const std::string& what) {
  for (size_t j = 0; j < positions->size(); ++j) {
    const int p = (*positions)[j];
    if (p < 0 || p >= end) {
      return WithRefusedField(FieldError(absl::StrCat(field, "[", j, "]"), absl::StrCat(p),
                                         absl::StrCat("must be in [0, ", end, ") (", what, ")")),
                              absl::StrCat(path, "[", j, "]"));
    }
  }
  std::sort(positions->begin(), positions->end());
  positions->erase(std::unique(positions->begin(), positions->end()), positions->end());
  return absl::OkStatus();
}

}  // namespace

std::string InterventionPath(const std::string& field, size_t index, Intervention::Kind kind) {
  return absl::StrCat(field, ".items[", index, "].", KindField(kind));
}

bool InterventionSet::has_patches() const {
  return std::any_of(items.begin(), items.end(), [](const Intervention& item) {
    return item.kind == Intervention::Kind::kPatch;
  });
}

absl::Status ValidateInterventions(InterventionSet* set, const ModelConfig& config,
                                   int prompt_length, int max_length,
                                   const InterventionLimits& limits, const std::string& field) {
  if (static_cast<int>(set->items.size()) > limits.max_interventions) {
    return WithRefusedField(
        FieldError(field, absl::StrCat(set->items.size(), " interventions"),
                   absl::StrCat("exceeds the server limit limits.max_interventions = ",
                                limits.max_interventions)),
        field + ".items");
  }
  std::map<std::pair<int, int>, size_t> named;  // (layer, head) -> intervention index
  for (size_t i = 0; i < set->items.size(); ++i) {
    Intervention& item = set->items[i];
    // Messages name the item as `field`[i]; the refused field is its .proto path.
    const std::string at = absl::StrCat(field, "[", i, "]");
    const std::string path = InterventionPath(field, i, item.kind);
    absl::StatusOr<int> layer = ResolveLayer(item.layer, config.num_hidden_layers, at + ".layer");
    if (!layer.ok()) return WithRefusedField(layer.status(), path + ".layer");
    item.layer = *layer;
    absl::StatusOr<std::vector<int>> heads =
        ResolveHeads(item.heads, config.num_attention_heads, at + ".heads", path + ".heads");
    if (!heads.ok()) return heads.status();
    item.heads = *std::move(heads);
    for (int head : item.heads) {
      auto [it, inserted] = named.emplace(std::make_pair(item.layer, head), i);
      if (!inserted) {
        return WithRefusedField(
            FieldError(at, absl::StrCat("layer ", item.layer, " head ", head),
                       absl::StrCat("already edited by ", field, "[", it->second,
                                    "]; each head may be named by one intervention (two edits "
                                    "of one head would overlap or contradict)")),
            path + ".heads");
      }
    }
    switch (item.kind) {
      case Intervention::Kind::kAblate:
        break;
      case Intervention::Kind::kKnockout: {
        if (item.rows == KnockoutRows::kRange &&
            !(item.row_begin >= 0 && item.row_begin < item.row_end && item.row_end <= max_length)) {
          // The end is at fault once the begin is a position.
          const bool begin_ok = item.row_begin >= 0 && item.row_begin < max_length;
          return WithRefusedField(
              FieldError(at + ".rows", absl::StrCat("[", item.row_begin, ", ", item.row_end, ")"),
                         absl::StrCat("must be a non-empty range inside [0, ", max_length,
                                      ") (the sequence's positions)")),
              path + (begin_ok ? ".row_end" : ".row_begin"));
        }
        // Key terms were added to key_positions (ResolveKnockoutTerms), after the given ones.
        if (item.key_positions.empty()) {
          return WithRefusedField(
              FieldError(at + ".keys", "[]", "name at least one key position or term"),
              path + ".key_positions");
        }
        if (auto status = CheckPositions(&item.key_positions, max_length, at + ".keys",
                                         path + ".key_positions", "the sequence's positions");
            !status.ok()) {
          return status;
        }
        // Query row r sees keys 0..r; if all of them are knocked out its softmax is 0/0.
        int first_free = 0;
        while (
            std::binary_search(item.key_positions.begin(), item.key_positions.end(), first_free)) {
          ++first_free;
        }
        const int first_row = item.rows == KnockoutRows::kAll         ? 0
                              : item.rows == KnockoutRows::kGenerated ? prompt_length
                                                                      : item.row_begin;
        if (first_row < first_free) {
          return WithRefusedField(
              FieldError(at + ".keys", absl::StrCat("0..", first_free - 1),
                         absl::StrCat("knocks out every key query row ", first_row,
                                      " can see; leave it at least one key")),
              path + ".key_positions");
        }
        break;
      }
      case Intervention::Kind::kPatch:
        if (auto status = CheckPositions(&item.positions, prompt_length, at + ".positions",
                                         path + ".positions", "prompt positions");
            !status.ok()) {
          return status;
        }
        break;
    }
  }
  const bool patches = set->has_patches();
  const std::string source = field + ".patch_source";
  if (patches && set->patch_source_ids.empty()) {
    return WithRefusedField(
        FieldError("patch_source", "(absent)", "required by the patch interventions"), source);
  }
  if (!patches && !set->patch_source_ids.empty()) {
    return WithRefusedField(
        FieldError("patch_source", absl::StrCat(set->patch_source_ids.size(), " tokens"),
                   "given without any patch intervention"),
        source);
  }
  if (patches && static_cast<int>(set->patch_source_ids.size()) != prompt_length) {
    return WithRefusedField(
        FieldError("patch_source", absl::StrCat(set->patch_source_ids.size(), " tokens"),
                   absl::StrCat("the target prompt has ", prompt_length,
                                " tokens; activation patching needs source and target of the "
                                "same length")),
        source);
  }
  for (size_t j = 0; j < set->patch_source_ids.size(); ++j) {
    const int64_t id = set->patch_source_ids[j];
    if (id < 0 || id >= config.vocab_size) {
      return WithRefusedField(
          FieldError(absl::StrCat("patch_source.ids[", j, "]"), absl::StrCat(id),
                     absl::StrCat("must be in [0, vocab_size = ", config.vocab_size, ")")),
          absl::StrCat(source, ".ids.ids[", j, "]"));
    }
  }
  return absl::OkStatus();
}

absl::Status ResolveKnockoutTerms(InterventionSet* set, const std::string& text,
                                  const std::vector<std::pair<int64_t, int64_t>>& spans,
                                  const std::vector<std::string>& tokens,
                                  const std::string& field) {
  for (size_t i = 0; i < set->items.size(); ++i) {
    Intervention& item = set->items[i];
    if (item.kind != Intervention::Kind::kKnockout || item.key_terms.empty()) continue;
    const std::string at = absl::StrCat(field, "[", i, "].key_terms");
    const std::string path = InterventionPath(field, i, item.kind) + ".key_terms";
    std::vector<analysis::TermMatch> matches;
    if (!text.empty() && !spans.empty()) {
      std::vector<analysis::TokenSpan> token_spans;
      for (const auto& [begin, end] : spans) {
        token_spans.push_back({static_cast<int>(begin), static_cast<int>(end)});
      }
      matches = analysis::FindTermsInText(text, token_spans, item.key_terms);
    } else if (!tokens.empty() && !tokens.front().empty()) {
      matches = analysis::FindTermsInTokens(tokens, item.key_terms);
    } else {
      return WithRefusedField(
          FieldError(at, absl::StrCat("[\"", absl::StrJoin(item.key_terms, "\", \""), "\"]"),
                     "terms need text input or a tokenizer (token-id input has no words)"),
          path);
    }
    for (size_t j = 0; j < item.key_terms.size(); ++j) {
      bool found = false;
      for (const analysis::TermMatch& match : matches) {
        if (match.term != item.key_terms[j]) continue;
        found = found || !match.positions.empty();
        item.key_positions.insert(item.key_positions.end(), match.positions.begin(),
                                  match.positions.end());
      }
      if (!found) {
        return WithRefusedField(
            FieldError(absl::StrCat(at, "[", j, "]"), absl::StrCat("\"", item.key_terms[j], "\""),
                       "matches no word of the input"),
            absl::StrCat(path, "[", j, "]"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateCandidates(const std::vector<Candidate>& candidates, int prompt_length,
                                int max_length, const ModelConfig& config,
                                const InterventionLimits& limits, bool for_sweep,
                                const std::string& field) {
  const size_t least = for_sweep ? 2 : 1;
  if (candidates.size() < least) {
    return FieldError(field, absl::StrCat(candidates.size(), " candidates"),
                      for_sweep ? "a sweep needs two candidates (its logit difference)"
                                : "give at least one candidate continuation");
  }
  if (static_cast<int>(candidates.size()) > limits.max_candidates) {
    return FieldError(
        field, absl::StrCat(candidates.size(), " candidates"),
        absl::StrCat("exceeds the server limit limits.max_candidates = ", limits.max_candidates));
  }
  for (size_t i = 0; i < candidates.size(); ++i) {
    const std::string at = absl::StrCat(field, "[", i, "]");
    const Candidate& candidate = candidates[i];
    if (candidate.ids.empty()) {
      return FieldError(at, absl::StrCat("\"", candidate.text, "\""),
                        "has no tokens; a candidate must not be empty");
    }
    if (static_cast<int>(candidate.ids.size()) > limits.max_candidate_tokens) {
      return FieldError(at, absl::StrCat(candidate.ids.size(), " tokens"),
                        absl::StrCat("exceeds the server limit limits.max_candidate_tokens = ",
                                     limits.max_candidate_tokens));
    }
    for (size_t j = 0; j < candidate.ids.size(); ++j) {
      if (candidate.ids[j] < 0 || candidate.ids[j] >= config.vocab_size) {
        // TokenIds wraps the list: the .proto path is candidates[i].ids.ids[j].
        return WithRefusedField(
            FieldError(absl::StrCat(at, ".ids[", j, "]"), absl::StrCat(candidate.ids[j]),
                       absl::StrCat("must be in [0, vocab_size = ", config.vocab_size, ")")),
            absl::StrCat(at, ".ids.ids[", j, "]"));
      }
    }
    const int64_t total = static_cast<int64_t>(prompt_length) + candidate.ids.size();
    if (total > max_length) {
      return FieldError(at,
                        absl::StrCat(prompt_length, " prompt + ", candidate.ids.size(),
                                     " candidate tokens = ", total),
                        absl::StrCat("exceeds the limit of ", max_length, " tokens"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSweep(SweepSpec* sweep, const ModelConfig& config,
                           const InterventionLimits& limits, const std::string& field) {
  std::vector<int> layers;
  for (size_t i = 0; i < sweep->layers.size(); ++i) {
    absl::StatusOr<int> layer = ResolveLayer(sweep->layers[i], config.num_hidden_layers,
                                             absl::StrCat(field, ".layers[", i, "]"));
    if (!layer.ok()) return layer.status();
    layers.push_back(*layer);
  }
  if (layers.empty()) {
    for (int l = 0; l < config.num_hidden_layers; ++l) layers.push_back(l);
  }
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  absl::StatusOr<std::vector<int>> heads =
      ResolveHeads(sweep->heads, config.num_attention_heads, field + ".heads", field + ".heads");
  if (!heads.ok()) return heads.status();
  const int64_t variants = static_cast<int64_t>(layers.size()) * heads->size();
  if (variants > limits.max_sweep_heads) {
    return FieldError(
        field,
        absl::StrCat(layers.size(), " layers x ", heads->size(), " heads = ", variants,
                     " ablated forwards"),
        absl::StrCat("exceeds the server limit limits.max_sweep_heads = ", limits.max_sweep_heads));
  }
  sweep->layers = std::move(layers);
  sweep->heads = *std::move(heads);
  return absl::OkStatus();
}

const char* AblationModeName(AblationMode mode) {
  return mode == AblationMode::kMean ? "mean" : "zero";
}

const char* KnockoutRowsName(KnockoutRows rows) {
  switch (rows) {
    case KnockoutRows::kGenerated:
      return "generated";
    case KnockoutRows::kRange:
      return "range";
    default:
      return "all";
  }
}

std::string DescribeIntervention(const Intervention& item) {
  const std::string where =
      absl::StrCat("layer ", item.layer, " heads ", absl::StrJoin(item.heads, ","));
  switch (item.kind) {
    case Intervention::Kind::kAblate:
      return absl::StrCat("ablate ", where, " ", AblationModeName(item.mode));
    case Intervention::Kind::kKnockout: {
      std::string rows = KnockoutRowsName(item.rows);
      if (item.rows == KnockoutRows::kRange) {
        rows = absl::StrCat(item.row_begin, "-", item.row_end);
      }
      return absl::StrCat("knockout ", where, " rows ", rows, " keys ",
                          absl::StrJoin(item.key_positions, ","));
    }
    case Intervention::Kind::kPatch:
      return absl::StrCat("patch ", where, " positions ",
                          item.positions.empty() ? "all" : absl::StrJoin(item.positions, ","));
  }
  return "";
}

std::string ScoreResultToJson(const ScoreResult& result) {
  nlohmann::json doc;
  doc["candidates"] = nlohmann::json::array();
  for (const CandidateScore& candidate : result.candidates) {
    doc["candidates"].push_back({{"text", candidate.text},
                                 {"token_ids", candidate.token_ids},
                                 {"token_logprobs", candidate.token_logprobs},
                                 {"logprob", candidate.logprob},
                                 {"first_token_rank", candidate.first_token_rank}});
  }
  doc["logit_diff"] = result.has_logit_diff ? nlohmann::json(result.logit_diff) : nullptr;
  return doc.dump();
}

std::string SweepResultToJson(const SweepResult& result) {
  nlohmann::json doc;
  doc["clean_logit_diff"] = result.clean.logit_diff;
  doc["heads"] = nlohmann::json::array();
  for (const SweepCell& cell : result.cells) {
    doc["heads"].push_back({{"layer", cell.layer},
                            {"head", cell.head},
                            {"logit_diff", cell.logit_diff},
                            {"delta", cell.delta}});
  }
  return doc.dump();
}

}  // namespace attnscope
