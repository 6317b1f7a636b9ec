#include "analysis/analyzer.h"

#include <cmath>

#include "gtest/gtest.h"
#include "tests/analysis/golden_util.h"
#include "tests/analysis/test_matrices.h"
#include "tests/common/npy.h"

namespace attnscope::analysis {
namespace {

using testing::EverythingOptions;
using testing::GoldenAttention;
using testing::IdTokens;
using testing::LoadGolden;

constexpr double kTolerance = 1e-6;

void ExpectMetricsNear(const HeadMetrics& a, const HeadMetrics& b, const std::string& where) {
  SCOPED_TRACE(where);
  EXPECT_NEAR(a.diagonal, b.diagonal, kTolerance);
  EXPECT_NEAR(a.previous_token, b.previous_token, kTolerance);
  EXPECT_NEAR(a.causal, b.causal, kTolerance);
  EXPECT_NEAR(a.beginning, b.beginning, kTolerance);
  EXPECT_NEAR(a.sink, b.sink, kTolerance);
  EXPECT_NEAR(a.entropy, b.entropy, kTolerance);
  EXPECT_NEAR(a.max, b.max, kTolerance);
  EXPECT_EQ(a.type, b.type);
}

void ExpectScoresNear(const std::vector<HeadScore>& a, const std::vector<HeadScore>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i].score, b[i].score, kTolerance);
    // Equal scores may rank either way; different ones must rank the same.
    if (std::abs(a[i].score - b[i].score) < kTolerance && a[i].layer == b[i].layer) {
      EXPECT_EQ(a[i].head, b[i].head);
    }
  }
}

// Everything two reports hold must agree within kTolerance.
void ExpectReportsNear(const HeadReport& streamed, const HeadReport& whole) {
  EXPECT_EQ(streamed.tokens, whole.tokens);
  EXPECT_EQ(streamed.prompt_length, whole.prompt_length);
  ASSERT_EQ(streamed.layers.size(), whole.layers.size());
  for (size_t l = 0; l < whole.layers.size(); ++l) {
    const LayerReport& s = streamed.layers[l];
    const LayerReport& w = whole.layers[l];
    EXPECT_EQ(s.layer, w.layer);
    EXPECT_EQ(s.stats.num_heads, w.stats.num_heads);
    EXPECT_EQ(s.stats.seq_length, w.stats.seq_length);
    EXPECT_NEAR(s.stats.mean_attention, w.stats.mean_attention, kTolerance);
    EXPECT_NEAR(s.stats.max_attention, w.stats.max_attention, kTolerance);
    EXPECT_NEAR(s.stats.attention_entropy, w.stats.attention_entropy, kTolerance);
    ASSERT_EQ(s.heads.size(), w.heads.size());
    for (size_t h = 0; h < w.heads.size(); ++h) {
      const std::string where = absl::StrCat("layer ", w.layer, " head ", w.heads[h].head);
      EXPECT_EQ(s.heads[h].head, w.heads[h].head);
      ExpectMetricsNear(s.heads[h].metrics, w.heads[h].metrics, where);
      ASSERT_EQ(s.heads[h].generated_rows.has_value(), w.heads[h].generated_rows.has_value());
      if (w.heads[h].generated_rows) {
        ExpectMetricsNear(*s.heads[h].generated_rows, *w.heads[h].generated_rows,
                          where + " generated");
      }
    }
  }
  ASSERT_EQ(streamed.terms.size(), whole.terms.size());
  for (size_t i = 0; i < whole.terms.size(); ++i) {
    EXPECT_EQ(streamed.terms[i].word, whole.terms[i].word);
    EXPECT_EQ(streamed.terms[i].positions, whole.terms[i].positions);
  }
  ASSERT_EQ(streamed.term_attention.size(), whole.term_attention.size());
  for (size_t i = 0; i < whole.term_attention.size(); ++i) {
    const TermAttention& s = streamed.term_attention[i];
    const TermAttention& w = whole.term_attention[i];
    EXPECT_EQ(s.layer, w.layer);
    EXPECT_EQ(s.head, w.head);
    EXPECT_NEAR(s.mean, w.mean, kTolerance);
    EXPECT_NEAR(s.max, w.max, kTolerance);
    ASSERT_EQ(s.top_terms.size(), w.top_terms.size());
    for (size_t k = 0; k < w.top_terms.size(); ++k) {
      EXPECT_EQ(s.top_terms[k].term, w.top_terms[k].term);
      EXPECT_NEAR(s.top_terms[k].mass, w.top_terms[k].mass, kTolerance);
    }
    EXPECT_EQ(s.rows, w.rows);
    EXPECT_EQ(s.positions, w.positions);
    ASSERT_EQ(s.submatrix.size(), w.submatrix.size());
    for (size_t k = 0; k < w.submatrix.size(); ++k) {
      EXPECT_NEAR(s.submatrix[k], w.submatrix[k], kTolerance);
    }
  }
  ASSERT_EQ(streamed.top_k.size(), whole.top_k.size());
  for (size_t i = 0; i < whole.top_k.size(); ++i) {
    const TopKList& s = streamed.top_k[i];
    const TopKList& w = whole.top_k[i];
    EXPECT_EQ(s.layer, w.layer);
    EXPECT_EQ(s.head, w.head);
    EXPECT_EQ(s.query_position, w.query_position);
    ASSERT_EQ(s.keys.size(), w.keys.size());
    for (size_t k = 0; k < w.keys.size(); ++k) {
      EXPECT_EQ(s.keys[k].position, w.keys[k].position);
      EXPECT_NEAR(s.keys[k].weight, w.keys[k].weight, kTolerance);
    }
  }
  ExpectScoresNear(streamed.detectors.previous_token, whole.detectors.previous_token);
  ExpectScoresNear(streamed.detectors.duplicate_token, whole.detectors.duplicate_token);
  ExpectScoresNear(streamed.detectors.induction, whole.detectors.induction);
}

std::vector<int> AllHeads(int count) {
  std::vector<int> heads;
  for (int h = 0; h < count; ++h) heads.push_back(h);
  return heads;
}

// The rows [first, first + count) x keys [0, key_length) of a [H, T, T] array.
std::vector<float> SliceRows(const std::vector<float>& full, int heads, int t, int first, int count,
                             int key_length) {
  std::vector<float> out;
  for (int h = 0; h < heads; ++h) {
    for (int i = first; i < first + count; ++i) {
      const float* row = full.data() + (static_cast<int64_t>(h) * t + i) * t;
      out.insert(out.end(), row, row + key_length);
    }
  }
  return out;
}

class GoldenStreamingTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenStreamingTest, StreamedRowsEqualWholeMatrix) {
  std::string error;
  const GoldenAttention golden = LoadGolden(GetParam(), &error);
  ASSERT_TRUE(error.empty()) << error;
  const int t = golden.seq_length(), p = golden.prompt_length, h = golden.num_heads;
  ASSERT_EQ(t, 49);
  ASSERT_EQ(p, 37);
  const std::vector<std::string> tokens = IdTokens(golden.ids);
  const AnalysisOptions options = EverythingOptions();
  const std::vector<int> heads = AllHeads(h);

  AnalysisInput whole_input;
  whole_input.token_ids = golden.ids;
  whole_input.tokens = tokens;
  whole_input.prompt_length = p;
  std::vector<LayerMatrices> matrices;
  for (int layer = 0; layer < 2; ++layer) {
    matrices.push_back({layer, heads, t, golden.layers[layer].data()});
  }
  auto whole = AnalyzeMatrices(whole_input, matrices, options, "text");
  ASSERT_TRUE(whole.ok()) << whole.status();

  // As the engine delivers them: the prompt block per layer, then per generated token its id
  // and one row per layer with keys 0..i.
  AnalysisInput prompt_input;
  prompt_input.token_ids.assign(golden.ids.begin(), golden.ids.begin() + p);
  prompt_input.tokens.assign(tokens.begin(), tokens.begin() + p);
  StreamingAnalyzer streaming(prompt_input, options);
  for (int layer = 0; layer < 2; ++layer) {
    const std::vector<float> block = SliceRows(golden.layers[layer], h, t, 0, p, p);
    ASSERT_TRUE(streaming.AddRows({layer, heads.data(), h, 0, p, p, block.data()}).ok());
  }
  for (int i = p; i < t; ++i) {
    streaming.AddToken(golden.ids[i], tokens[i]);
    for (int layer = 0; layer < 2; ++layer) {
      const std::vector<float> row = SliceRows(golden.layers[layer], h, t, i, 1, i + 1);
      ASSERT_TRUE(streaming.AddRows({layer, heads.data(), h, i, 1, i + 1, row.data()}).ok());
    }
  }
  auto streamed = streaming.Finish("text");
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  ExpectReportsNear(*streamed, *whole);

  // The options reach every part, so the comparison above covers each of them.
  EXPECT_EQ(whole->layers.size(), 2u);
  EXPECT_FALSE(whole->terms.empty());
  EXPECT_EQ(whole->term_attention.size(), 2u * h);
  // "w3" has 3 positions, "w50" one or two; each gives the head mean and every head.
  EXPECT_GE(whole->top_k.size(), 2u * 4 * (1 + h));
  EXPECT_EQ(whole->detectors.previous_token.size(), 2u * h);
  EXPECT_EQ(whole->detectors.duplicate_token.size(), 2u * h);
  EXPECT_EQ(whole->detectors.induction.size(), 2u * h);
  for (const LayerReport& layer : whole->layers) {
    for (const HeadEntry& head : layer.heads) EXPECT_TRUE(head.generated_rows.has_value());
    // Softmax rows sum to 1, so the mean over H*T*T entries is 1/T.
    EXPECT_NEAR(layer.stats.mean_attention, 1.0 / t, 1e-6);
  }
}

TEST_P(GoldenStreamingTest, PaddedAndMultiRowBlocksGiveTheSameReport) {
  // Blocks of several rows whose key_length runs past the diagonal (zeros) are fine too.
  std::string error;
  const GoldenAttention golden = LoadGolden(GetParam(), &error);
  ASSERT_TRUE(error.empty()) << error;
  const int t = golden.seq_length(), p = golden.prompt_length, h = golden.num_heads;
  const std::vector<std::string> tokens = IdTokens(golden.ids);
  const std::vector<int> heads = AllHeads(h);
  AnalysisInput input;
  input.token_ids = golden.ids;
  input.tokens = tokens;
  input.prompt_length = p;
  StreamingAnalyzer streaming(input, EverythingOptions());
  for (int first = 0; first < t; first += 5) {
    const int count = std::min(5, t - first);
    const std::vector<float> block = SliceRows(golden.layers[1], h, t, first, count, t);
    ASSERT_TRUE(streaming.AddRows({1, heads.data(), h, first, count, t, block.data()}).ok());
  }
  std::vector<LayerMatrices> matrices = {{1, heads, t, golden.layers[1].data()}};
  auto whole = AnalyzeMatrices(input, matrices, EverythingOptions(), "");
  auto streamed = streaming.Finish("");
  ASSERT_TRUE(whole.ok() && streamed.ok());
  ExpectReportsNear(*streamed, *whole);
}

INSTANTIATE_TEST_SUITE_P(Golden, GoldenStreamingTest,
                         ::testing::Values("qwen2-tiny", "qwen2-tiny-tied"));

TEST(StreamingAnalyzerTest, RejectsOutOfOrderRowsAndMissingTokens) {
  const int t = 4;
  const std::vector<float> a = testing::UniformCausal(t);
  const std::vector<int> heads = {0};
  AnalysisInput input;
  input.token_ids = {1, 2, 3};
  StreamingAnalyzer analyzer(input, AnalysisOptions());
  // Row 1 before row 0.
  EXPECT_FALSE(analyzer.AddRows({0, heads.data(), 1, 1, 1, 2, a.data() + t}).ok());
  // key_length shorter than the diagonal of the last row.
  EXPECT_FALSE(analyzer.AddRows({0, heads.data(), 1, 0, 3, 2, a.data()}).ok());
  std::vector<float> block = {1, 0, 0, 0.5f, 0.5f, 0, 1 / 3.f, 1 / 3.f, 1 / 3.f};
  ASSERT_TRUE(analyzer.AddRows({0, heads.data(), 1, 0, 3, 3, block.data()}).ok());
  // Row 3 before token 3 was added.
  EXPECT_FALSE(analyzer.AddRows({0, heads.data(), 1, 3, 1, 4, a.data() + 3 * t}).ok());
  // A different head list for the same layer.
  const std::vector<int> other_heads = {1};
  analyzer.AddToken(4, "");
  EXPECT_FALSE(analyzer.AddRows({0, other_heads.data(), 1, 3, 1, 4, a.data() + 3 * t}).ok());
  // Finish needs every row of every layer.
  EXPECT_FALSE(analyzer.Finish("").ok());
  ASSERT_TRUE(analyzer.AddRows({0, heads.data(), 1, 3, 1, 4, a.data() + 3 * t}).ok());
  auto report = analyzer.Finish("");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_NEAR(report->layers[0].heads[0].metrics.entropy,
              (std::log(1.0) + std::log(2.0) + std::log(3.0) + std::log(4.0)) / 4, 1e-6);
  ASSERT_TRUE(report->layers[0].heads[0].generated_rows.has_value());
  EXPECT_NEAR(report->layers[0].heads[0].generated_rows->diagonal, 0.25, 1e-6);
}

TEST(StreamingAnalyzerTest, TermAttentionByHand) {
  // Prompt "w0 sales w2 cash" (4 tokens), two generated rows, one head.
  const int t = 6;
  std::vector<float> a = testing::Zeros(t);
  const float rows[6][6] = {{1, 0, 0, 0, 0, 0},
                            {0.5f, 0.5f, 0, 0, 0, 0},
                            {0.2f, 0.3f, 0.5f, 0, 0, 0},
                            {0.25f, 0.25f, 0.25f, 0.25f, 0, 0},
                            {0.1f, 0.4f, 0.1f, 0.2f, 0.2f, 0},
                            {0.1f, 0.1f, 0.1f, 0.5f, 0.1f, 0.1f}};
  for (int i = 0; i < t; ++i) {
    for (int j = 0; j < t; ++j) a[i * t + j] = rows[i][j];
  }
  AnalysisInput input;
  input.token_ids = {10, 11, 12, 13, 14, 15};
  input.tokens = {"w0", " sales", " w2", " cash", " x", " y"};
  input.prompt_length = 4;
  AnalysisOptions options;
  options.top_terms = 1;
  auto report = AnalyzeMatrices(input, {{0, {3}, t, a.data()}}, options, "");
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->terms.size(), 2u);
  EXPECT_EQ(report->terms[0].term, "sales");
  EXPECT_EQ(report->terms[0].positions, std::vector<int>({1}));
  EXPECT_EQ(report->terms[1].term, "cash");
  EXPECT_EQ(report->terms[1].positions, std::vector<int>({3}));
  ASSERT_EQ(report->term_attention.size(), 1u);
  const TermAttention& term = report->term_attention[0];
  EXPECT_EQ(term.head, 3);
  // Generated rows 4, 5 to positions 1, 3: {0.4, 0.2, 0.1, 0.5}.
  EXPECT_NEAR(term.mean, (0.4 + 0.2 + 0.1 + 0.5) / 4, 1e-6);
  EXPECT_NEAR(term.max, 0.5, 1e-6);
  ASSERT_EQ(term.top_terms.size(), 1u);
  EXPECT_EQ(term.top_terms[0].term, "cash");  // (0.2 + 0.5) / 2 beats (0.4 + 0.1) / 2
  EXPECT_NEAR(term.top_terms[0].mass, 0.35, 1e-6);
  EXPECT_FALSE(term.has_submatrix);
}

TEST(StreamingAnalyzerTest, TopKByHand) {
  const int t = 5;
  const std::vector<float> a = testing::UniformCausal(t);
  std::vector<float> two_heads = a;
  const std::vector<float> prev = testing::PreviousToken(t);
  two_heads.insert(two_heads.end(), prev.begin(), prev.end());
  AnalysisInput input;
  input.token_ids = {1, 2, 3, 4, 5};
  input.tokens = {"a", "Sales", "b", "sales", "c"};
  AnalysisOptions options;
  options.queries = {"SALES"};
  options.max_query_positions = 1;
  options.top_k_keys = 2;
  auto report = AnalyzeMatrices(input, {{0, {0, 1}, t, two_heads.data()}}, options, "");
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->top_k.size(), 1u);  // one query position, head mean only
  const TopKList& list = report->top_k[0];
  EXPECT_FALSE(list.head.has_value());
  EXPECT_EQ(list.query_position, 1);
  EXPECT_EQ(list.query_token, "Sales");
  // Row 1: uniform head {0.5, 0.5}, previous-token head {1, 0}: mean {0.75, 0.25}.
  ASSERT_EQ(list.keys.size(), 2u);
  EXPECT_EQ(list.keys[0].position, 0);
  EXPECT_EQ(list.keys[0].token, "a");
  EXPECT_NEAR(list.keys[0].weight, 0.75, 1e-6);
  EXPECT_EQ(list.keys[1].position, 1);
  EXPECT_NEAR(list.keys[1].weight, 0.25, 1e-6);
}

}  // namespace
}  // namespace attnscope::analysis
