// Jinja2's lexer as transformers configures it (trim_blocks, lstrip_blocks,
// keep_trailing_newline=False): the source becomes text, {{ expression }} and {% statement %}
// chunks with whitespace control applied, and each tag body becomes expression tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attnscope::jinja {

struct Chunk {
  enum class Kind { kText, kExpression, kStatement } kind;
  std::string text;
  size_t offset = 0;  // of the tag in the (newline-normalised) source
};

// Newlines normalised to \n and one trailing newline dropped, as Jinja2 does; then split.
absl::StatusOr<std::vector<Chunk>> SplitTemplate(const std::string& source);

struct Token {
  enum class Kind { kName, kString, kInt, kFloat, kOp, kEnd } kind;
  std::string text;
  int64_t integer = 0;
  double real = 0;
};

// Tokens of one tag body, ending with a kEnd token.
absl::StatusOr<std::vector<Token>> LexExpression(const std::string& text);

}  // namespace attnscope::jinja
