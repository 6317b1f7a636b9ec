#include "analysis/head_metrics.h"

#include <cmath>

#include "gtest/gtest.h"
#include "tests/analysis/test_matrices.h"

namespace attnscope::analysis {
namespace {

using testing::AllOnFirstKey;
using testing::Harmonic;
using testing::Identity;
using testing::PreviousToken;
using testing::UniformCausal;

constexpr double kTolerance = 1e-6;

HeadMetrics Compute(const std::vector<float>& a, int t, int row_begin = 0) {
  auto metrics = ComputeHeadMetrics(a.data(), t, row_begin, HeadMetricsOptions());
  EXPECT_TRUE(metrics.has_value());
  return metrics.value_or(HeadMetrics());
}

TEST(HeadMetricsTest, IdentityIsSelf) {
  const int t = 6;
  const HeadMetrics m = Compute(Identity(t), t);
  EXPECT_NEAR(m.diagonal, 1.0, kTolerance);
  EXPECT_NEAR(m.previous_token, 0.0, kTolerance);
  EXPECT_NEAR(m.causal, 0.0, kTolerance);
  // T = 6 < k = 10: the window is all 6 keys, holding each row's diagonal 1 of 6 * 6 cells.
  EXPECT_NEAR(m.beginning, 1.0 / 6, kTolerance);
  EXPECT_NEAR(m.sink, 1.0 / 6, kTolerance);  // only row 0 looks at key 0
  EXPECT_NEAR(m.entropy, 0.0, kTolerance);
  EXPECT_NEAR(m.max, 1.0, kTolerance);
  EXPECT_EQ(m.type, "self");
}

TEST(HeadMetricsTest, AllRowsOnFirstKeyIsBeginningFocusedOnceLongEnough) {
  // causal = (T - 1) / (T (T - 1) / 2) = 2 / T and beginning = T / (T * 10) = 0.1, so the
  // rule calls the head beginning-focused only when T > 20.
  const int t = 30;
  const HeadMetrics m = Compute(AllOnFirstKey(t), t);
  EXPECT_NEAR(m.sink, 1.0, kTolerance);
  EXPECT_NEAR(m.diagonal, 1.0 / t, kTolerance);
  EXPECT_NEAR(m.previous_token, 1.0 / (t - 1), kTolerance);  // only row 1's previous is key 0
  EXPECT_NEAR(m.causal, 2.0 / t, kTolerance);
  EXPECT_NEAR(m.beginning, 0.1, kTolerance);
  EXPECT_NEAR(m.entropy, 0.0, kTolerance);
  EXPECT_EQ(m.type, "beginning-focused");

  const int short_t = 12;  // 2 / 12 > 0.1: causal wins, entropy 0 < 2 makes it focused
  EXPECT_EQ(Compute(AllOnFirstKey(short_t), short_t).type, "focused");
}

TEST(HeadMetricsTest, UniformCausalRowsMatchClosedForms) {
  const int t = 20;
  const HeadMetrics m = Compute(UniformCausal(t), t);
  // Row i has i + 1 entries of 1 / (i + 1): entropy ln(i + 1), diagonal 1 / (i + 1), and
  // i / (i + 1) below the diagonal, summing to T - H_T over the rows.
  double mean_log = 0;
  for (int i = 0; i < t; ++i) mean_log += std::log(i + 1.0);
  mean_log /= t;
  const double h_t = Harmonic(t);
  EXPECT_NEAR(m.entropy, mean_log, kTolerance);
  EXPECT_NEAR(m.causal, (t - h_t) / (t * (t - 1) / 2.0), kTolerance);
  EXPECT_NEAR(m.diagonal, h_t / t, kTolerance);
  EXPECT_NEAR(m.sink, h_t / t, kTolerance);
  EXPECT_NEAR(m.previous_token, (h_t - 1) / (t - 1), kTolerance);
  // Rows 0..9 have all their mass in the first 10 keys; row i >= 10 has 10 / (i + 1).
  EXPECT_NEAR(m.beginning, (10 + 10 * (h_t - Harmonic(10))) / (t * 10.0), kTolerance);
  EXPECT_NEAR(m.max, 1.0, kTolerance);
  EXPECT_EQ(m.type, "distributed");  // diagonal 0.18, beginning < causal, entropy 2.12 > 2
}

TEST(HeadMetricsTest, PreviousTokenMatrix) {
  const int t = 12;
  const HeadMetrics m = Compute(PreviousToken(t), t);
  EXPECT_NEAR(m.previous_token, 1.0, kTolerance);
  EXPECT_NEAR(m.diagonal, 1.0 / t, kTolerance);
  EXPECT_NEAR(m.causal, 2.0 / t, kTolerance);
  EXPECT_NEAR(m.sink, 2.0 / t, kTolerance);  // rows 0 and 1
  EXPECT_EQ(m.type, "focused");
}

TEST(HeadMetricsTest, GeneratedRowsOnlyUseRowsFromPromptLength) {
  const int t = 10, prompt = 6;
  const HeadMetrics m = Compute(UniformCausal(t), t, prompt);
  double diagonal = 0, entropy = 0, causal = 0, below = 0;
  for (int i = prompt; i < t; ++i) {
    diagonal += 1.0 / (i + 1);
    entropy += std::log(i + 1.0);
    causal += i / (i + 1.0);
    below += i;
  }
  EXPECT_NEAR(m.diagonal, diagonal / (t - prompt), kTolerance);
  EXPECT_NEAR(m.entropy, entropy / (t - prompt), kTolerance);
  EXPECT_NEAR(m.causal, causal / below, kTolerance);
  EXPECT_NEAR(m.max, 1.0 / (prompt + 1), kTolerance);
  EXPECT_FALSE(ComputeHeadMetrics(UniformCausal(t).data(), t, t, HeadMetricsOptions()));
}

TEST(HeadMetricsTest, ThresholdsAreConfigurable) {
  const int t = 12;
  HeadMetricsOptions options;
  options.focused_entropy = 0.0;  // nothing is focused: entropy 0 is not < 0
  EXPECT_EQ(ComputeHeadMetrics(PreviousToken(t).data(), t, 0, options)->type, "distributed");
  options.self_threshold = 1.0;  // the identity's diagonal 1 is not > 1
  EXPECT_NE(ComputeHeadMetrics(Identity(t).data(), t, 0, options)->type, "self");
}

TEST(HeadMetricsTest, LayerStatsOfUniformHeads) {
  const int t = 7;
  std::vector<float> data = UniformCausal(t);
  const std::vector<float> second = Identity(t);
  data.insert(data.end(), second.begin(), second.end());
  const LayerStats stats = ComputeLayerStats(data.data(), 2, t);
  double mean_log = 0;
  for (int i = 0; i < t; ++i) mean_log += std::log(i + 1.0);
  mean_log /= t;
  EXPECT_EQ(stats.num_heads, 2);
  EXPECT_EQ(stats.seq_length, t);
  EXPECT_NEAR(stats.mean_attention, 1.0 / t, kTolerance);  // every row sums to 1
  EXPECT_NEAR(stats.max_attention, 1.0, kTolerance);
  EXPECT_NEAR(stats.attention_entropy, (mean_log + 0.0) / 2, kTolerance);
}

TEST(HeadMetricsTest, AccumulatorMatchesWholeMatrixForAnyRowOrder) {
  const int t = 15, prompt = 9;
  const std::vector<float> a = UniformCausal(t);
  HeadMetricsAccumulator all(0, 10), generated(prompt, 10);
  for (int i = t - 1; i >= 0; --i) {  // reverse order: sums do not care
    all.AddRow(i, a.data() + i * t, t);
    generated.AddRow(i, a.data() + i * t, i + 1);
  }
  const HeadMetrics whole = Compute(a, t);
  const HeadMetrics streamed = *all.Finish(t, HeadMetricsOptions());
  EXPECT_NEAR(streamed.beginning, whole.beginning, 1e-12);
  EXPECT_NEAR(streamed.causal, whole.causal, 1e-12);
  EXPECT_NEAR(streamed.entropy, whole.entropy, 1e-12);
  EXPECT_NEAR(generated.Finish(t, HeadMetricsOptions())->diagonal, Compute(a, t, prompt).diagonal,
              1e-12);
  EXPECT_FALSE(HeadMetricsAccumulator(t, 10).Finish(t, HeadMetricsOptions()));
}

}  // namespace
}  // namespace attnscope::analysis
