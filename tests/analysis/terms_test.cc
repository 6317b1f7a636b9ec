#include "analysis/terms.h"

#include "gtest/gtest.h"

namespace attnscope::analysis {
namespace {

// A statement sentence and a BPE-like split of it; every byte span below was counted by
// hand (the token text is text.substr(begin, end - begin)).
const char kStatement[] =
    "Total Revenue rose; EPS and cash-flow improved. Balance sheet: liabilities fell.";
const std::vector<std::pair<std::string, TokenSpan>> kTokens = {
    {"Total", {0, 5}},          {" Rev", {5, 9}},        {"enue", {9, 13}},
    {" rose", {13, 18}},        {";", {18, 19}},         {" EPS", {19, 23}},
    {" and", {23, 27}},         {" cash", {27, 32}},     {"-", {32, 33}},
    {"flow", {33, 37}},         {" improved", {37, 46}}, {".", {46, 47}},
    {" Balance", {47, 55}},     {" sheet", {55, 61}},    {":", {61, 62}},
    {" liabilities", {62, 74}}, {" fell", {74, 79}},     {".", {79, 80}}};

TEST(TermsTest, HandSpansOfTheTokensAreConsistent) {
  const std::string text = kStatement;
  for (const auto& [token, span] : kTokens) {
    EXPECT_EQ(text.substr(span.begin, span.end - span.begin), token);
  }
}

TEST(TermsTest, FindsTheStatementsFinancialWords) {
  std::vector<TokenSpan> spans;
  for (const auto& entry : kTokens) spans.push_back(entry.second);
  const std::vector<TermMatch> matches =
      FindTermsInText(kStatement, spans, DefaultFinancialTerms());
  // "liabilities" does not contain "liability": the notebook's substring rule misses it.
  ASSERT_EQ(matches.size(), 5u);
  const struct {
    const char* term;
    const char* word;
    int begin, end;
    std::vector<int> positions;
  } expected[] = {{"revenue", "Revenue", 6, 13, {1, 2}},  // split over " Rev" + "enue"
                  {"eps", "EPS", 20, 23, {5}},
                  {"cash", "cash", 28, 32, {7}},  // "cash-flow" is two words
                  {"balance", "Balance", 48, 55, {12}},
                  {"sheet", "sheet", 56, 61, {13}}};
  for (size_t i = 0; i < matches.size(); ++i) {
    SCOPED_TRACE(expected[i].term);
    EXPECT_EQ(matches[i].term, expected[i].term);
    EXPECT_EQ(matches[i].word, expected[i].word);
    EXPECT_EQ(matches[i].word_begin, expected[i].begin);
    EXPECT_EQ(matches[i].word_end, expected[i].end);
    EXPECT_EQ(matches[i].positions, expected[i].positions);
  }
}

TEST(TermsTest, OneWordCanMatchSeveralTerms) {
  // "Balancesheet" holds "balance" and "sheet"; the token spans [0, 7) and [7, 12).
  const auto matches =
      FindTermsInText("Balancesheet!", {{0, 7}, {7, 12}, {12, 13}}, DefaultFinancialTerms());
  ASSERT_EQ(matches.size(), 2u);
  EXPECT_EQ(matches[0].term, "balance");
  EXPECT_EQ(matches[1].term, "sheet");
  EXPECT_EQ(matches[0].positions, std::vector<int>({0, 1}));
  EXPECT_EQ(matches[1].positions, std::vector<int>({0, 1}));
}

TEST(TermsTest, WordsAreUnicodeLetterAndDigitRuns) {
  // "café" is 5 bytes (é = C3 A9); "-" and " " split; "Q3" keeps its digit.
  const std::vector<TokenSpan> words = SplitWords("café-sales Q3");
  ASSERT_EQ(words.size(), 3u);
  EXPECT_EQ(words[0].begin, 0);
  EXPECT_EQ(words[0].end, 5);
  EXPECT_EQ(words[1].begin, 6);
  EXPECT_EQ(words[1].end, 11);
  EXPECT_EQ(words[2].begin, 12);
  EXPECT_EQ(words[2].end, 14);
  EXPECT_TRUE(SplitWords(" ,;").empty());
}

TEST(TermsTest, WithoutSpansTokenStringsAreMatched) {
  const auto matches =
      FindTermsInTokens({"Net", " Sales", " increased", " 4%"}, DefaultFinancialTerms());
  ASSERT_EQ(matches.size(), 2u);
  EXPECT_EQ(matches[0].term, "sales");
  EXPECT_EQ(matches[0].word, "Sales");
  EXPECT_EQ(matches[0].positions, std::vector<int>({1}));
  EXPECT_EQ(matches[1].term, "increase");
  EXPECT_EQ(matches[1].word, "increased");
  EXPECT_EQ(matches[1].positions, std::vector<int>({2}));
}

TEST(TermsTest, JoinedTokenStringsMatchWordsSplitOverTokens) {
  std::string text;
  std::vector<TokenSpan> spans;
  JoinTokens({"Net", " re", "ven", "ue", " up"}, &text, &spans);
  EXPECT_EQ(text, "Net revenue up");
  ASSERT_EQ(spans.size(), 5u);
  EXPECT_EQ(spans[1].begin, 3);
  EXPECT_EQ(spans[1].end, 6);
  const auto matches = FindTermsInText(text, spans, DefaultFinancialTerms());
  ASSERT_EQ(matches.size(), 1u);
  EXPECT_EQ(matches[0].word, "revenue");
  EXPECT_EQ(matches[0].positions, std::vector<int>({1, 2, 3}));
}

TEST(TermsTest, QueryPositionsAreCaseInsensitiveAndLimited) {
  const std::vector<std::string> tokens = {"Sales", "x", " sales", "SALES", "salesman"};
  EXPECT_EQ(FindQueryPositions(tokens, "sales", 3), std::vector<int>({0, 2, 3}));
  EXPECT_EQ(FindQueryPositions(tokens, "sales", 10), std::vector<int>({0, 2, 3, 4}));
  EXPECT_TRUE(FindQueryPositions(tokens, "", 3).empty());
  EXPECT_FALSE(ContainsIgnoringCase("sale", "sales"));
}

}  // namespace
}  // namespace attnscope::analysis
