// Loading the golden attentions of tests/data/golden for the streaming-vs-whole tests.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "analysis/analyzer.h"
#include "tests/common/npy.h"

namespace attnscope::analysis::testing {

// One golden model's full-sequence attentions (every layer, [H, T, T]) and ids.
struct GoldenAttention {
  std::vector<int64_t> ids;  // prompt then generated, T of them
  int prompt_length = 0;
  int num_heads = 0;
  std::vector<std::vector<float>> layers;  // [H, T, T] per layer
  int seq_length() const { return static_cast<int>(ids.size()); }
};

// Empty `error` on success; the caller fails the test otherwise.
inline GoldenAttention LoadGolden(const std::string& model, std::string* error) {
  GoldenAttention golden;
  const std::string dir = absl::StrCat(attnscope::testing::DataDir(), "/golden/", model, "/");
  auto ids = attnscope::testing::ReadNpy(dir + "full_ids.npy");
  auto prompt = attnscope::testing::ReadNpy(dir + "prompt_ids.npy");
  if (!ids.ok() || !prompt.ok()) {
    *error = absl::StrCat(ids.status().ToString(), " ", prompt.status().ToString());
    return golden;
  }
  golden.ids = ids->AsInt64();
  golden.prompt_length = static_cast<int>(prompt->numel());
  for (int layer = 0; layer < 2; ++layer) {
    auto attention =
        attnscope::testing::ReadNpy(absl::StrCat(dir, "all_tokens_attn_L", layer, ".npy"));
    if (!attention.ok()) {
      *error = attention.status().ToString();
      return golden;
    }
    golden.num_heads = static_cast<int>(attention->shape[0]);
    golden.layers.push_back(attention->AsFloats());
  }
  return golden;
}

// Token strings for ids without a tokenizer: "w<id>", so queries and terms can select them.
inline std::vector<std::string> IdTokens(const std::vector<int64_t>& ids) {
  std::vector<std::string> tokens;
  for (int64_t id : ids) tokens.push_back(absl::StrCat("w", id));
  return tokens;
}

// Options that switch on every part of the report.
inline AnalysisOptions EverythingOptions() {
  AnalysisOptions options;
  options.terms = {"w2", "w1", "w50"};
  options.term_submatrix = true;
  options.queries = {"w3", "w50"};
  options.top_k_keys = 7;
  options.top_k_per_head = true;
  options.induction = InductionProbe{5, 1};
  return options;
}

}  // namespace attnscope::analysis::testing
