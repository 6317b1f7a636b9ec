// Finding the notebook's financial terms in the input and the tokens that carry them, and
// the token-to-token query ("what does `sales` attend to").
#pragma once

#include <string>
#include <vector>

namespace attnscope::analysis {

// The notebook's list.
std::vector<std::string> DefaultFinancialTerms();

// Byte range [begin, end) of one token in the text it was encoded from.
struct TokenSpan {
  int begin = 0;
  int end = 0;
};

// One word of the input containing a term.
struct TermMatch {
  std::string term;            // the term as given
  std::string word;            // the word of the text (or token string) that contains it
  int word_begin = 0;          // byte range of the word in the text (in the token string
  int word_end = 0;            //   when matched without spans)
  std::vector<int> positions;  // every token overlapping the word, ascending
};

// Words are maximal runs of letters and digits (Unicode categories L* and N*, decoded as
// UTF-8; invalid bytes split words). A term matches a word when it is a case-insensitive
// (ASCII case folding) substring of it. Each (term, word occurrence) gives one match, in
// text order, then term order. A token overlaps the word when its span intersects it.
std::vector<TermMatch> FindTermsInText(const std::string& text, const std::vector<TokenSpan>& spans,
                                       const std::vector<std::string>& terms);

// Without a tokenizer: the words of each token string, each token on its own.
std::vector<TermMatch> FindTermsInTokens(const std::vector<std::string>& tokens,
                                         const std::vector<std::string>& terms);

// The text the display strings spell when joined, with each token's byte span in it: lets a
// capture file (token strings, no tokenizer) match words split over several tokens.
void JoinTokens(const std::vector<std::string>& tokens, std::string* text,
                std::vector<TokenSpan>* spans);

// The maximal letter/digit runs of `text`, as byte ranges.
std::vector<TokenSpan> SplitWords(const std::string& text);

// True when `needle` occurs in `haystack`, ASCII case-insensitively. An empty needle never
// matches.
bool ContainsIgnoringCase(const std::string& haystack, const std::string& needle);

// Positions whose token string contains `query` (case-insensitive), ascending, at most
// `limit`.
std::vector<int> FindQueryPositions(const std::vector<std::string>& tokens,
                                    const std::string& query, int limit);

}  // namespace attnscope::analysis
