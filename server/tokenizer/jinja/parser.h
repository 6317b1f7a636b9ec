// Jinja2's grammar over the lexer's chunks and tokens: operator precedence as jinja2/parser.py
// has it (or < and < not < comparisons < + - < ~ < * / // % < ** < unary < postfix, filters and
// tests), statements if/for/set/macro/filter/with/generation/break/continue.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "server/tokenizer/jinja/ast.h"

namespace attnscope::jinja {

// Syntax errors -> InvalidArgument naming the construct. Unknown filters, tests and names are
// not errors here: they fail when evaluated, as in Jinja2.
absl::StatusOr<Body> ParseTemplate(const std::string& source);

// One expression (for tests and the fuzzer).
absl::StatusOr<ExprPtr> ParseExpression(const std::string& text);

}  // namespace attnscope::jinja
