#include "analysis/detectors.h"

#include <set>

#include "gtest/gtest.h"
#include "tests/analysis/test_matrices.h"

namespace attnscope::analysis {
namespace {

TEST(DetectorsTest, DuplicateTokenScoreByHand) {
  const std::vector<int64_t> ids = {5, 7, 5, 9, 7, 5};
  const int t = 6;
  std::vector<float> a = testing::UniformCausal(t);
  // Rows with an earlier same id: 2 (id 5 at 0), 4 (id 7 at 1), 5 (id 5 at 0 and 2).
  const float row2[] = {0.6f, 0.0f, 0.4f};
  const float row4[] = {0.25f, 0.25f, 0.25f, 0.0f, 0.25f};
  const float row5[] = {0.3f, 0.1f, 0.2f, 0.1f, 0.1f, 0.2f};
  std::copy(row2, row2 + 3, a.begin() + 2 * t);
  std::copy(row4, row4 + 5, a.begin() + 4 * t);
  std::copy(row5, row5 + 6, a.begin() + 5 * t);
  auto score = DuplicateTokenScore(a.data(), ids);
  ASSERT_TRUE(score.has_value());
  EXPECT_NEAR(*score, (0.6 + 0.25 + 0.5) / 3, 1e-6);
  EXPECT_EQ(EarlierSameIdPositions(ids, 5), std::vector<int>({0, 2}));
  EXPECT_FALSE(DuplicateTokenScore(a.data(), {1, 2, 3, 4, 5, 6}).has_value());
}

TEST(DetectorsTest, InductionProbeIsSeededAndRepeated) {
  const std::vector<int64_t> probe = MakeInductionProbe(8, 42, 100, 200, /*bos_id=*/1);
  ASSERT_EQ(probe.size(), 17u);
  EXPECT_EQ(probe[0], 1);
  std::set<int64_t> distinct;
  for (int i = 1; i <= 8; ++i) {
    EXPECT_EQ(probe[i], probe[i + 8]);
    EXPECT_GE(probe[i], 100);
    EXPECT_LT(probe[i], 200);
    distinct.insert(probe[i]);
  }
  EXPECT_GT(distinct.size(), 1u);
  EXPECT_EQ(MakeInductionProbe(8, 42, 100, 200, 1), probe);
  EXPECT_NE(MakeInductionProbe(8, 43, 100, 200, 1), probe);
  EXPECT_EQ(MakeInductionProbe(3, 42, 100, 200).size(), 6u);
  EXPECT_TRUE(MakeInductionProbe(3, 42, 5, 5).empty());
}

TEST(DetectorsTest, InductionScoreFindsThePerfectInductionHead) {
  const int n = 4, t = 1 + 2 * n;  // BOS, first repeat at 1..4, second at 5..8
  const InductionProbe probe{n, 1};
  // A perfect induction head: row i of the second repeat looks at i - n + 1, the token after
  // the previous occurrence of its own token.
  std::vector<float> induction = testing::PreviousToken(t);
  for (int i = 1 + n; i < t; ++i) {
    std::fill(induction.begin() + i * t, induction.begin() + (i + 1) * t, 0.0f);
    induction[i * t + (i - n + 1)] = 1;
  }
  EXPECT_NEAR(*InductionScore(induction.data(), t, probe), 1.0, 1e-6);
  EXPECT_NEAR(*InductionScore(testing::PreviousToken(t).data(), t, probe), 0.0, 1e-6);
  // Uniform rows: row i puts 1 / (i + 1) on the target.
  double expected = 0;
  for (int i = 1 + n; i < t; ++i) expected += 1.0 / (i + 1);
  EXPECT_NEAR(*InductionScore(testing::UniformCausal(t).data(), t, probe), expected / n, 1e-6);
  EXPECT_FALSE(InductionScore(induction.data(), 5, probe).has_value());  // no second repeat
}

TEST(DetectorsTest, RankingIsByScoreThenLayerThenHead) {
  std::vector<HeadScore> scores = {{0, 1, 0.2}, {1, 0, 0.9}, {0, 0, 0.2}, {0, 2, 0.5}};
  RankHeads(&scores);
  ASSERT_EQ(scores.size(), 4u);
  EXPECT_EQ(scores[0].layer, 1);
  EXPECT_EQ(scores[1].head, 2);
  EXPECT_EQ(scores[2].head, 0);
  EXPECT_EQ(scores[3].head, 1);
}

}  // namespace
}  // namespace attnscope::analysis
