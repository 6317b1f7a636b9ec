#include "analysis/terms.h"

#include <utf8proc.h>

#include <algorithm>

namespace attnscope::analysis {

namespace {

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool IsWordCodepoint(utf8proc_int32_t codepoint) {
  switch (utf8proc_category(codepoint)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

// Matches of every term in one word; `positions` is filled by the caller.
void MatchWord(const std::string& word, int begin, int end, const std::vector<std::string>& terms,
               std::vector<TermMatch>* matches) {
  for (const std::string& term : terms) {
    if (!ContainsIgnoringCase(word, term)) continue;
    TermMatch match;
    match.term = term;
    match.word = word;
    match.word_begin = begin;
    match.word_end = end;
    matches->push_back(std::move(match));
  }
}

}  // namespace

std::vector<std::string> DefaultFinancialTerms() {
  return {"sales",     "revenue",   "income",   "profit",   "loss",     "asset",   "liability",
          "equity",    "cash",      "debt",     "eps",      "earnings", "balance", "sheet",
          "statement", "financial", "increase", "decrease", "ratio"};
}

bool ContainsIgnoringCase(const std::string& haystack, const std::string& needle) {
  if (needle.empty() || needle.size() > haystack.size()) return false;
  auto it = std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(),
                        [](char a, char b) { return AsciiLower(a) == AsciiLower(b); });
  return it != haystack.end();
}

std::vector<TokenSpan> SplitWords(const std::string& text) {
  std::vector<TokenSpan> words;
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  const utf8proc_ssize_t size = static_cast<utf8proc_ssize_t>(text.size());
  utf8proc_ssize_t pos = 0;
  int word_begin = -1;
  while (pos < size) {
    utf8proc_int32_t codepoint = -1;
    utf8proc_ssize_t length = utf8proc_iterate(bytes + pos, size - pos, &codepoint);
    bool is_word = false;
    if (length <= 0) {
      length = 1;  // an invalid byte ends any word and is skipped
    } else {
      is_word = IsWordCodepoint(codepoint);
    }
    if (is_word && word_begin < 0) word_begin = static_cast<int>(pos);
    if (!is_word && word_begin >= 0) {
      words.push_back({word_begin, static_cast<int>(pos)});
      word_begin = -1;
    }
    pos += length;
  }
  if (word_begin >= 0) words.push_back({word_begin, static_cast<int>(size)});
  return words;
}

std::vector<TermMatch> FindTermsInText(const std::string& text, const std::vector<TokenSpan>& spans,
                                       const std::vector<std::string>& terms) {
  std::vector<TermMatch> matches;
  for (const TokenSpan& word : SplitWords(text)) {
    const size_t first_new = matches.size();
    MatchWord(text.substr(word.begin, word.end - word.begin), word.begin, word.end, terms,
              &matches);
    if (matches.size() == first_new) continue;
    std::vector<int> positions;
    for (size_t p = 0; p < spans.size(); ++p) {
      if (spans[p].begin < word.end && spans[p].end > word.begin) {
        positions.push_back(static_cast<int>(p));
      }
    }
    for (size_t m = first_new; m < matches.size(); ++m) matches[m].positions = positions;
  }
  return matches;
}

std::vector<TermMatch> FindTermsInTokens(const std::vector<std::string>& tokens,
                                         const std::vector<std::string>& terms) {
  std::vector<TermMatch> matches;
  for (size_t p = 0; p < tokens.size(); ++p) {
    for (const TokenSpan& word : SplitWords(tokens[p])) {
      const size_t first_new = matches.size();
      MatchWord(tokens[p].substr(word.begin, word.end - word.begin), word.begin, word.end, terms,
                &matches);
      for (size_t m = first_new; m < matches.size(); ++m) {
        matches[m].positions = {static_cast<int>(p)};
      }
    }
  }
  return matches;
}

void JoinTokens(const std::vector<std::string>& tokens, std::string* text,
                std::vector<TokenSpan>* spans) {
  text->clear();
  spans->clear();
  for (const std::string& token : tokens) {
    const int begin = static_cast<int>(text->size());
    *text += token;
    spans->push_back({begin, static_cast<int>(text->size())});
  }
}

std::vector<int> FindQueryPositions(const std::vector<std::string>& tokens,
                                    const std::string& query, int limit) {
  std::vector<int> positions;
  for (size_t p = 0; p < tokens.size() && static_cast<int>(positions.size()) < limit; ++p) {
    if (ContainsIgnoringCase(tokens[p], query)) positions.push_back(static_cast<int>(p));
  }
  return positions;
}

}  // namespace attnscope::analysis
