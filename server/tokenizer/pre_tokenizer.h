// The pre-tokenizer pipeline of a tokenizer.json (Split and ByteLevel steps) over text whose
// bytes stay aligned with the original: each step cuts pre-tokens into smaller ones, as the
// reference implementation does. Part of the byte-level BPE tokenizer (bpe_tokenizer.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attnscope::pretokenizer {

// A pre-token: normalized bytes [begin, end), optionally preceded by a space that ByteLevel's
// add_prefix_space inserted (it has no original bytes).
struct PreToken {
  int64_t begin, end;
  bool prefix_space;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// A compiled PCRE2 pattern (UTF, Unicode properties, JIT when available); matching is safe
// from several threads at once.
class Regex;
// Compiles `pattern`; an error names `origin` (the file and field) and the offset.
absl::StatusOr<std::shared_ptr<Regex>> CompileRegex(const std::string& pattern,
                                                    const std::string& origin);

// GPT-2's pattern, used by ByteLevel when use_regex is true.
extern const char kGpt2Pattern[];

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel } kind;
  std::shared_ptr<Regex> regex;  // kSplit, or kByteLevel with use_regex
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;
};

// `literal` as a PCRE2 pattern that matches it verbatim (a Split with a String pattern).
std::string QuoteRegexLiteral(const std::string& literal);

// Applies one step to every pre-token. `text` is the normalized text.
absl::Status ApplyStep(const PreTokenizerStep& step, const std::string& text,
                       std::vector<PreToken>* tokens);

}  // namespace attnscope::pretokenizer
