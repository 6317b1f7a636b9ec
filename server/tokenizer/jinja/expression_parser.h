// Jinja2's expression grammar (jinja2/parser.py from parse_tuple down) over the lexer's tokens,
// driven by the statement parser in parser.cc. Internal to the Jinja library.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/tokenizer/jinja/ast.h"
#include "server/tokenizer/jinja/lexer.h"

namespace attnscope::jinja {

// Expressions and blocks nest at most this deep (each level recurses).
inline constexpr int kMaxNesting = 200;

inline absl::Status SyntaxError(const std::string& what) {
  return absl::InvalidArgumentError(what);
}

class ExpressionParser {
 public:
  explicit ExpressionParser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  const Token& Peek(size_t ahead = 0) const;
  bool AtEnd() const { return Peek().kind == Token::Kind::kEnd; }
  bool IsOp(const char* op, size_t ahead = 0) const;
  bool IsName(const char* name, size_t ahead = 0) const;
  bool AcceptOp(const char* op);
  bool AcceptName(const char* name);
  void Advance() { ++pos_; }
  absl::Status ExpectOp(const char* op);
  absl::Status Unexpected() const;
  absl::StatusOr<std::string> ExpectName();

  // parse_tuple: `a, b` becomes a tuple; a lone expression stays itself.
  absl::StatusOr<ExprPtr> ParseTuple(bool with_condexpr = true,
                                     const std::set<std::string>& end_names = {});

  absl::StatusOr<ExprPtr> ParseExpression();

  absl::StatusOr<ExprPtr> ParseOr();

  // Assignment targets of set/for/with: names, ns.attr (set only), tuples of them.
  absl::StatusOr<Target> ParseAssignTarget(bool with_tuple, bool with_namespace,
                                           const std::set<std::string>& end_names = {});

  absl::Status ParseCallArgs(Expr* call);  // after '('

  // `| name(args)` chain applied to `subject` (null for {% filter %} blocks).
  absl::StatusOr<ExprPtr> ParseFilter(ExprPtr subject, bool start_inline);

 private:
  bool IsTupleEnd(const std::set<std::string>& end_names) const;

  absl::StatusOr<ExprPtr> ParseCondExpr();
  absl::StatusOr<ExprPtr> ParseAnd();
  absl::StatusOr<ExprPtr> ParseNot();
  absl::StatusOr<ExprPtr> ParseCompare();
  template <typename Next>
  absl::StatusOr<ExprPtr> ParseBinaryLevel(std::initializer_list<const char*> ops, Next next);
  absl::StatusOr<ExprPtr> ParseMath1();
  absl::StatusOr<ExprPtr> ParseConcat();
  absl::StatusOr<ExprPtr> ParseMath2();
  absl::StatusOr<ExprPtr> ParsePow();
  absl::StatusOr<ExprPtr> ParseUnaryWithFilter() { return ParseUnary(true); }
  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter);

  absl::StatusOr<ExprPtr> ParsePrimary();

  absl::StatusOr<ExprPtr> ParseSubscript();

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr expr);

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr expr);

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
};

// A parser over the tokens of `text`; lexer errors pass through.
absl::StatusOr<ExpressionParser> ParserFor(const std::string& text);

}  // namespace attnscope::jinja
