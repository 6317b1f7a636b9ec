// The engine adapter fed in the engine's order (OnStart, the prefill block per layer, then per
// generated token OnToken and one row per layer) gives the whole-matrix report.
#include "server/engine/analysis_observer.h"

#include "gtest/gtest.h"
#include "tests/analysis/golden_util.h"

namespace attnscope {
namespace {

using analysis::testing::EverythingOptions;
using analysis::testing::IdTokens;

TEST(AnalysisObserverTest, EngineOrderGivesTheWholeMatrixReport) {
  std::string error;
  const analysis::testing::GoldenAttention golden =
      analysis::testing::LoadGolden("qwen2-tiny", &error);
  ASSERT_TRUE(error.empty()) << error;
  const int t = golden.seq_length(), p = golden.prompt_length, h = golden.num_heads;
  const std::vector<int> heads = {0, 1, 2, 3};
  ASSERT_EQ(h, 4);
  const std::vector<int64_t> prompt(golden.ids.begin(), golden.ids.begin() + p);

  analysis::AnalysisInput input;
  input.token_ids = prompt;  // tokens come from the token-string function
  AnalysisObserver observer(input, EverythingOptions(),
                            [](int64_t id) { return absl::StrCat("w", id); });
  ASSERT_TRUE(observer.OnStart(prompt).ok());
  auto deliver = [&](int layer, int first, int count, int keys) {
    std::vector<float> data;
    for (int head = 0; head < h; ++head) {
      for (int i = first; i < first + count; ++i) {
        const float* row = golden.layers[layer].data() + (int64_t{head} * t + i) * t;
        data.insert(data.end(), row, row + keys);
      }
    }
    AttentionBlock block;
    block.layer = layer;
    block.heads = &heads;
    block.first_row = first;
    block.num_rows = count;
    block.key_length = keys;
    block.data = data.data();
    return observer.OnAttention(block);
  };
  for (int layer = 0; layer < 2; ++layer) ASSERT_TRUE(deliver(layer, 0, p, p).ok());
  for (int i = p; i < t; ++i) {
    ASSERT_TRUE(observer.OnToken(golden.ids[i], i).ok());
    for (int layer = 0; layer < 2; ++layer) ASSERT_TRUE(deliver(layer, i, 1, i + 1).ok());
  }
  EXPECT_FALSE(observer.OnToken(1, t + 5).ok());  // positions must follow on
  auto streamed = observer.Finish("gen");
  ASSERT_TRUE(streamed.ok()) << streamed.status();

  analysis::AnalysisInput whole_input;
  whole_input.token_ids = golden.ids;
  whole_input.tokens = IdTokens(golden.ids);
  whole_input.prompt_length = p;
  auto whole = analysis::AnalyzeMatrices(
      whole_input, {{0, heads, t, golden.layers[0].data()}, {1, heads, t, golden.layers[1].data()}},
      EverythingOptions(), "gen");
  ASSERT_TRUE(whole.ok()) << whole.status();
  // The JSON documents agree number by number (within 1e-6) and in every string.
  const nlohmann::json a = analysis::ReportToJson(*streamed);
  const nlohmann::json b = analysis::ReportToJson(*whole);
  const nlohmann::json patch = nlohmann::json::diff(a, b);
  for (const auto& op : patch) {
    const nlohmann::json::json_pointer path(op["path"].get<std::string>());
    ASSERT_TRUE(a[path].is_number() && b[path].is_number())
        << op.dump() << " streamed " << a[path].dump();
    EXPECT_NEAR(a[path].get<double>(), b[path].get<double>(), 1e-6) << op["path"];
  }
  EXPECT_EQ(a["tokens"].size(), static_cast<size_t>(t));
}

}  // namespace
}  // namespace attnscope
