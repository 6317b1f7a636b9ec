#include "analysis/report.h"

#include "analysis/analyzer.h"
#include "gtest/gtest.h"
#include "tests/analysis/test_matrices.h"

namespace attnscope::analysis {
namespace {

std::vector<std::string> Keys(const nlohmann::json& object) {
  std::vector<std::string> keys;
  for (auto it = object.begin(); it != object.end(); ++it) keys.push_back(it.key());
  std::sort(keys.begin(), keys.end());
  return keys;
}

// Two heads over "Net sales rose . sales up": identity and previous-token, 4 prompt tokens.
HeadReport SmallReport(int prompt_length) {
  static const std::vector<float> data = [] {
    std::vector<float> d = testing::Identity(6);
    const std::vector<float> prev = testing::PreviousToken(6);
    d.insert(d.end(), prev.begin(), prev.end());
    return d;
  }();
  AnalysisInput input;
  input.token_ids = {1, 2, 3, 4, 2, 5};
  input.tokens = {"Net", " sales", " rose", ".", " sales", " up"};
  input.prompt_length = prompt_length;
  AnalysisOptions options;
  options.queries = {"sales"};
  options.term_submatrix = true;
  options.induction = InductionProbe{2, 0};
  auto report = AnalyzeMatrices(input, {{3, {0, 5}, 6, data.data()}}, options, " sales up");
  EXPECT_TRUE(report.ok()) << report.status();
  return *report;
}

TEST(ReportTest, JsonDocumentHasTheDocumentedShape) {
  const nlohmann::json doc = ReportToJson(SmallReport(4));
  EXPECT_EQ(Keys(doc),
            std::vector<std::string>({"detectors", "generated_text", "layers", "prompt_length",
                                      "term_attention", "terms", "tokens", "top_k"}));
  EXPECT_EQ(doc["tokens"].size(), 6u);
  EXPECT_EQ(doc["prompt_length"], 4);
  EXPECT_EQ(doc["generated_text"], " sales up");
  ASSERT_EQ(doc["layers"].size(), 1u);
  const nlohmann::json& layer = doc["layers"][0];
  EXPECT_EQ(Keys(layer),
            std::vector<std::string>({"attention_entropy", "heads", "layer", "max_attention",
                                      "mean_attention", "num_heads", "seq_length", "shape"}));
  EXPECT_EQ(layer["layer"], 3);
  EXPECT_EQ(layer["shape"], nlohmann::json({2, 6, 6}));
  ASSERT_EQ(layer["heads"].size(), 2u);
  const nlohmann::json& head = layer["heads"][1];
  EXPECT_EQ(Keys(head), std::vector<std::string>({"beginning", "causal", "diagonal", "entropy",
                                                  "generated_rows", "head", "max", "previous_token",
                                                  "sink", "type"}));
  EXPECT_EQ(head["head"], 5);
  EXPECT_DOUBLE_EQ(head["previous_token"].get<double>(), 1.0);
  EXPECT_EQ(layer["heads"][0]["type"], "self");
  EXPECT_EQ(Keys(head["generated_rows"]),
            std::vector<std::string>({"beginning", "causal", "diagonal", "entropy", "max",
                                      "previous_token", "sink", "type"}));

  ASSERT_EQ(doc["terms"].size(), 1u);  // only prompt words: " sales" at position 1
  EXPECT_EQ(doc["terms"][0]["term"], "sales");
  EXPECT_EQ(doc["terms"][0]["positions"], nlohmann::json({1}));
  ASSERT_EQ(doc["term_attention"].size(), 2u);
  EXPECT_EQ(Keys(doc["term_attention"][1]),
            std::vector<std::string>({"head", "layer", "max", "mean", "submatrix", "top_terms"}));
  // Previous-token head: row 4 looks at 3, row 5 at 4; neither at position 1.
  EXPECT_EQ(doc["term_attention"][1]["submatrix"]["values"], nlohmann::json({{0.0}, {0.0}}));
  EXPECT_EQ(doc["term_attention"][1]["submatrix"]["rows"], nlohmann::json({4, 5}));

  ASSERT_EQ(doc["top_k"].size(), 2u);  // positions 1 and 4 contain "sales"
  EXPECT_TRUE(doc["top_k"][0]["head"].is_null());
  EXPECT_EQ(doc["top_k"][1]["query_position"], 4);
  EXPECT_EQ(doc["top_k"][1]["keys"][0]["weight"], 0.5);

  const nlohmann::json& detectors = doc["detectors"];
  EXPECT_EQ(Keys(detectors), std::vector<std::string>({"duplicate_token", "induction",
                                                       "induction_probe", "previous_token"}));
  EXPECT_EQ(detectors["previous_token"][0]["head"], 5);
  EXPECT_EQ(detectors["previous_token"][0]["score"], 1.0);
  // Row 4 (" sales" again): identity puts 0 on position 1, previous-token puts 0 too.
  EXPECT_EQ(detectors["duplicate_token"].size(), 2u);
}

TEST(ReportTest, GeneratedRowsAreAbsentWithoutGeneratedTokens) {
  const nlohmann::json doc = ReportToJson(SmallReport(6));
  EXPECT_FALSE(doc["layers"][0]["heads"][0].contains("generated_rows"));
  EXPECT_TRUE(doc["term_attention"].empty());
}

TEST(ReportTest, JsonRoundTripsThroughReportFromJson) {
  const nlohmann::json doc = ReportToJson(SmallReport(4));
  auto parsed = ReportFromJson(doc);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(ReportToJson(*parsed), doc);
  EXPECT_EQ(FormatReportText(*parsed), FormatReportText(SmallReport(4)));
  nlohmann::json broken = doc;
  broken["layers"][0]["heads"][0].erase("sink");
  auto error = ReportFromJson(broken);
  ASSERT_FALSE(error.ok());
  EXPECT_NE(error.status().message().find("sink"), std::string::npos) << error.status();
}

TEST(ReportTest, TextTablesReadLikeTheNotebook) {
  const std::string text = FormatReportText(SmallReport(4));
  EXPECT_NE(text.find("Layer 3:"), std::string::npos) << text;
  EXPECT_NE(text.find("Shape: [2, 6, 6]"), std::string::npos) << text;
  EXPECT_NE(text.find("Attention entropy:"), std::string::npos) << text;
  EXPECT_NE(text.find("self"), std::string::npos) << text;
  EXPECT_NE(text.find("sales in 'sales' at positions [1]"), std::string::npos) << text;
  EXPECT_NE(text.find("Detector previous-token"), std::string::npos) << text;
}

}  // namespace
}  // namespace attnscope::analysis
