#include "server/tokenizer/jinja/expression_parser.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace attnscope::jinja {

namespace {

ExprPtr Make(Expr::Kind kind, std::vector<ExprPtr> args = {}, std::string name = "") {
  auto e = std::make_shared<Expr>();
  e->kind = kind;
  e->args = std::move(args);
  e->name = std::move(name);
  return e;
}

}  // namespace

#define ASSIGN_OR_RETURN_EXPR(lhs, rexpr)       \
  auto lhs##_or = (rexpr);                      \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  ExprPtr lhs = *lhs##_or

const Token& ExpressionParser::Peek(size_t ahead) const {
  return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
}

bool ExpressionParser::IsOp(const char* op, size_t ahead) const {
  return Peek(ahead).kind == Token::Kind::kOp && Peek(ahead).text == op;
}

bool ExpressionParser::IsName(const char* name, size_t ahead) const {
  return Peek(ahead).kind == Token::Kind::kName && Peek(ahead).text == name;
}

bool ExpressionParser::AcceptOp(const char* op) {
  if (!IsOp(op)) return false;
  ++pos_;
  return true;
}

bool ExpressionParser::AcceptName(const char* name) {
  if (!IsName(name)) return false;
  ++pos_;
  return true;
}

absl::Status ExpressionParser::ExpectOp(const char* op) {
  if (AcceptOp(op)) return absl::OkStatus();
  return SyntaxError(absl::StrCat("expected '", op, "' but found '", Peek().text, "'"));
}

absl::Status ExpressionParser::Unexpected() const {
  return SyntaxError(AtEnd() ? std::string("unexpected end of expression")
                             : absl::StrCat("unexpected '", Peek().text, "'"));
}

absl::StatusOr<std::string> ExpressionParser::ExpectName() {
  if (Peek().kind != Token::Kind::kName) return Unexpected();
  std::string name = Peek().text;
  Advance();
  return name;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseTuple(bool with_condexpr,
                                                     const std::set<std::string>& end_names) {
  std::vector<ExprPtr> items;
  bool trailing_comma = false;
  while (true) {
    if (!items.empty()) {
      if (!AcceptOp(",")) break;
      trailing_comma = true;
    }
    if (IsTupleEnd(end_names)) break;
    auto item = with_condexpr ? ParseExpression() : ParseOr();
    if (!item.ok()) return item;
    items.push_back(*item);
    trailing_comma = false;
  }
  if (items.empty()) return Unexpected();
  if (items.size() == 1 && !trailing_comma) return items[0];
  return Make(Expr::Kind::kTuple, std::move(items));
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseExpression() {
  if (++depth_ > kMaxNesting) return SyntaxError("expression nested too deeply");
  auto result = ParseCondExpr();
  --depth_;
  return result;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseOr() {
  ASSIGN_OR_RETURN_EXPR(left, ParseAnd());
  while (AcceptName("or")) {
    ASSIGN_OR_RETURN_EXPR(right, ParseAnd());
    left = Make(Expr::Kind::kBinary, {left, right}, "or");
  }
  return left;
}

absl::StatusOr<Target> ExpressionParser::ParseAssignTarget(bool with_tuple, bool with_namespace,
                                                           const std::set<std::string>& end_names) {
  Target target;
  if (with_namespace && Peek().kind == Token::Kind::kName && IsOp(".", 1)) {
    target.name = Peek().text;
    Advance();
    Advance();
    auto attribute = ExpectName();
    if (!attribute.ok()) return attribute.status();
    target.attribute = *attribute;
    return target;
  }
  if (!with_tuple) {
    auto name = ExpectName();
    if (!name.ok()) return name.status();
    target.name = *name;
    return target;
  }
  bool trailing_comma = false;
  while (true) {
    if (!target.items.empty()) {
      if (!AcceptOp(",")) break;
      trailing_comma = true;
    }
    if (IsTupleEnd(end_names) || IsOp("=")) break;
    Target item;
    if (AcceptOp("(")) {
      auto inner = ParseAssignTarget(true, false);
      if (!inner.ok()) return inner.status();
      absl::Status status = ExpectOp(")");
      if (!status.ok()) return status;
      item = *inner;
    } else {
      auto name = ExpectName();
      if (!name.ok()) return name.status();
      item.name = *name;
    }
    target.items.push_back(item);
    trailing_comma = false;
  }
  if (target.items.empty()) return SyntaxError("expected an assignment target");
  if (target.items.size() == 1 && !trailing_comma) return target.items[0];
  target.is_tuple = true;
  return target;
}

// After '('.
absl::Status ExpressionParser::ParseCallArgs(Expr* call) {
  bool first = true;
  while (!AcceptOp(")")) {
    if (!first) {
      absl::Status status = ExpectOp(",");
      if (!status.ok()) return status;
      if (AcceptOp(")")) break;
    }
    first = false;
    if (IsOp("*") || IsOp("**")) return SyntaxError("unsupported construct: *args in a call");
    if (Peek().kind == Token::Kind::kName && IsOp("=", 1)) {
      const std::string key = Peek().text;
      Advance();
      Advance();
      auto value = ParseExpression();
      if (!value.ok()) return value.status();
      call->kwargs.emplace_back(key, *value);
    } else {
      if (!call->kwargs.empty()) return SyntaxError("positional argument after a keyword one");
      auto value = ParseExpression();
      if (!value.ok()) return value.status();
      call->args.push_back(*value);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseFilter(ExprPtr subject, bool start_inline) {
  while (start_inline || AcceptOp("|")) {
    start_inline = false;
    auto name = ExpectName();
    if (!name.ok()) return name.status();
    std::string full = *name;
    while (AcceptOp(".")) {
      auto part = ExpectName();
      if (!part.ok()) return part.status();
      full += "." + *part;
    }
    auto e = std::make_shared<Expr>();
    e->kind = Expr::Kind::kFilter;
    e->name = full;
    e->args = {subject};
    if (AcceptOp("(")) {
      absl::Status status = ParseCallArgs(e.get());
      if (!status.ok()) return status;
    }
    subject = e;
  }
  return subject;
}

bool ExpressionParser::IsTupleEnd(const std::set<std::string>& end_names) const {
  if (AtEnd()) return true;
  if (IsOp(")") || IsOp("]") || IsOp("}") || IsOp(":")) return true;
  return Peek().kind == Token::Kind::kName && end_names.count(Peek().text) > 0;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseCondExpr() {
  ASSIGN_OR_RETURN_EXPR(value, ParseOr());
  while (AcceptName("if")) {
    ASSIGN_OR_RETURN_EXPR(condition, ParseOr());
    ExprPtr otherwise;
    if (AcceptName("else")) {
      auto parsed = ParseCondExpr();
      if (!parsed.ok()) return parsed;
      otherwise = *parsed;
    }
    value = Make(Expr::Kind::kTernary, {condition, value, otherwise});
  }
  return value;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseAnd() {
  ASSIGN_OR_RETURN_EXPR(left, ParseNot());
  while (AcceptName("and")) {
    ASSIGN_OR_RETURN_EXPR(right, ParseNot());
    left = Make(Expr::Kind::kBinary, {left, right}, "and");
  }
  return left;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseNot() {
  if (IsName("not")) {
    Advance();
    if (++depth_ > kMaxNesting) return SyntaxError("expression nested too deeply");
    auto operand = ParseNot();
    --depth_;
    if (!operand.ok()) return operand;
    return Make(Expr::Kind::kUnary, {*operand}, "not");
  }
  return ParseCompare();
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseCompare() {
  ASSIGN_OR_RETURN_EXPR(left, ParseMath1());
  auto e = std::make_shared<Expr>();
  e->kind = Expr::Kind::kCompare;
  e->args = {left};
  while (true) {
    std::string op;
    if (IsOp("==") || IsOp("!=") || IsOp("<") || IsOp(">") || IsOp("<=") || IsOp(">=")) {
      op = Peek().text;
      Advance();
    } else if (IsName("in")) {
      op = "in";
      Advance();
    } else if (IsName("not") && IsName("in", 1)) {
      op = "not in";
      Advance();
      Advance();
    } else {
      break;
    }
    ASSIGN_OR_RETURN_EXPR(right, ParseMath1());
    e->ops.push_back(op);
    e->args.push_back(right);
  }
  if (e->ops.empty()) return left;
  return ExprPtr(e);
}

template <typename Next>
absl::StatusOr<ExprPtr> ExpressionParser::ParseBinaryLevel(std::initializer_list<const char*> ops,
                                                           Next next) {
  ASSIGN_OR_RETURN_EXPR(left, (this->*next)());
  while (true) {
    const char* matched = nullptr;
    for (const char* op : ops) {
      if (IsOp(op)) matched = op;
    }
    if (matched == nullptr) return left;
    Advance();
    ASSIGN_OR_RETURN_EXPR(right, (this->*next)());
    left = Make(Expr::Kind::kBinary, {left, right}, matched);
  }
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseMath1() {
  return ParseBinaryLevel({"+", "-"}, &ExpressionParser::ParseConcat);
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseConcat() {
  return ParseBinaryLevel({"~"}, &ExpressionParser::ParseMath2);
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseMath2() {
  return ParseBinaryLevel({"*", "/", "//", "%"}, &ExpressionParser::ParsePow);
}

absl::StatusOr<ExprPtr> ExpressionParser::ParsePow() {
  return ParseBinaryLevel({"**"}, &ExpressionParser::ParseUnaryWithFilter);
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseUnary(bool with_filter) {
  if (++depth_ > kMaxNesting) return SyntaxError("expression nested too deeply");
  absl::StatusOr<ExprPtr> node;
  if (IsOp("-") || IsOp("+")) {
    const std::string op = Peek().text;
    Advance();
    auto operand = ParseUnary(false);
    node =
        operand.ok() ? absl::StatusOr<ExprPtr>(Make(Expr::Kind::kUnary, {*operand}, op)) : operand;
  } else {
    node = ParsePrimary();
  }
  if (node.ok()) node = ParsePostfix(*node);
  if (node.ok() && with_filter) node = ParseFilterExpr(*node);
  --depth_;
  return node;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParsePrimary() {
  const Token token = Peek();
  auto e = std::make_shared<Expr>();
  e->kind = Expr::Kind::kLiteral;
  switch (token.kind) {
    case Token::Kind::kName:
      Advance();
      if (token.text == "true" || token.text == "True") {
        e->literal = Value::Bool(true);
      } else if (token.text == "false" || token.text == "False") {
        e->literal = Value::Bool(false);
      } else if (token.text == "none" || token.text == "None") {
        e->literal = Value::None();
      } else {
        e->kind = Expr::Kind::kName;
        e->name = token.text;
      }
      return ExprPtr(e);
    case Token::Kind::kString: {
      std::string text;
      while (Peek().kind == Token::Kind::kString) {  // adjacent literals concatenate
        text += Peek().text;
        Advance();
      }
      e->literal = Value::Str(text);
      return ExprPtr(e);
    }
    case Token::Kind::kInt:
      Advance();
      e->literal = Value::Int(token.integer);
      return ExprPtr(e);
    case Token::Kind::kFloat:
      Advance();
      e->literal = Value::Float(token.real);
      return ExprPtr(e);
    case Token::Kind::kOp:
      if (AcceptOp("(")) {
        if (AcceptOp(")")) return Make(Expr::Kind::kTuple);
        auto inner = ParseTuple();
        if (!inner.ok()) return inner;
        absl::Status status = ExpectOp(")");
        if (!status.ok()) return status;
        return inner;
      }
      if (AcceptOp("[")) {
        e->kind = Expr::Kind::kList;
        while (!AcceptOp("]")) {
          if (!e->args.empty()) {
            absl::Status status = ExpectOp(",");
            if (!status.ok()) return status;
            if (AcceptOp("]")) break;
          }
          auto item = ParseExpression();
          if (!item.ok()) return item;
          e->args.push_back(*item);
        }
        return ExprPtr(e);
      }
      if (AcceptOp("{")) {
        e->kind = Expr::Kind::kDict;
        while (!AcceptOp("}")) {
          if (!e->args.empty()) {
            absl::Status status = ExpectOp(",");
            if (!status.ok()) return status;
            if (AcceptOp("}")) break;
          }
          auto key = ParseExpression();
          if (!key.ok()) return key;
          absl::Status status = ExpectOp(":");
          if (!status.ok()) return status;
          auto value = ParseExpression();
          if (!value.ok()) return value;
          e->args.push_back(*key);
          e->args.push_back(*value);
        }
        return ExprPtr(e);
      }
      return Unexpected();
    case Token::Kind::kEnd:
      return SyntaxError("unexpected end of expression");
  }
  return Unexpected();
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseSubscript() {
  std::vector<ExprPtr> parts(3);
  bool is_slice = false;
  for (int part = 0; part < 3; ++part) {
    if (!IsOp(":") && !IsOp("]") && !IsOp(",")) {
      auto value = ParseExpression();
      if (!value.ok()) return value;
      parts[part] = *value;
    }
    if (part < 2 && AcceptOp(":")) {
      is_slice = true;
      continue;
    }
    break;
  }
  if (!is_slice) {
    if (!parts[0]) return Unexpected();
    return parts[0];
  }
  auto e = Make(Expr::Kind::kSlice, {nullptr, parts[0], parts[1], parts[2]});
  return e;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParsePostfix(ExprPtr expr) {
  while (true) {
    if (AcceptOp(".")) {
      if (Peek().kind == Token::Kind::kInt) {
        auto index = Make(Expr::Kind::kLiteral);
        std::const_pointer_cast<Expr>(index)->literal = Value::Int(Peek().integer);
        Advance();
        expr = Make(Expr::Kind::kItem, {expr, index});
        continue;
      }
      auto name = ExpectName();
      if (!name.ok()) return name.status();
      expr = Make(Expr::Kind::kAttr, {expr}, *name);
    } else if (AcceptOp("[")) {
      std::vector<ExprPtr> subscripts;
      while (!IsOp("]")) {
        if (!subscripts.empty()) {
          absl::Status status = ExpectOp(",");
          if (!status.ok()) return status;
          if (IsOp("]")) break;
        }
        auto subscript = ParseSubscript();
        if (!subscript.ok()) return subscript;
        subscripts.push_back(*subscript);
      }
      absl::Status status = ExpectOp("]");
      if (!status.ok()) return status;
      if (subscripts.empty()) return SyntaxError("empty subscript");
      if (subscripts.size() > 1) {
        expr = Make(Expr::Kind::kItem, {expr, Make(Expr::Kind::kTuple, subscripts)});
      } else if (subscripts[0]->kind == Expr::Kind::kSlice && !subscripts[0]->args[0]) {
        auto slice = std::make_shared<Expr>(*subscripts[0]);
        slice->args[0] = expr;
        expr = slice;
      } else {
        expr = Make(Expr::Kind::kItem, {expr, subscripts[0]});
      }
    } else if (IsOp("(")) {
      Advance();
      auto e = std::make_shared<Expr>();
      e->kind = Expr::Kind::kCall;
      e->args = {expr};
      absl::Status status = ParseCallArgs(e.get());
      if (!status.ok()) return status;
      expr = e;
    } else {
      return expr;
    }
  }
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseFilterExpr(ExprPtr expr) {
  while (true) {
    if (IsOp("|")) {
      auto filtered = ParseFilter(expr, false);
      if (!filtered.ok()) return filtered;
      expr = *filtered;
    } else if (IsName("is")) {
      Advance();
      auto e = std::make_shared<Expr>();
      e->kind = Expr::Kind::kTest;
      e->negated = AcceptName("not");
      auto name = ExpectName();
      if (!name.ok()) return name.status();
      e->name = *name;
      while (AcceptOp(".")) {
        auto part = ExpectName();
        if (!part.ok()) return part.status();
        e->name += "." + *part;
      }
      e->args = {expr};
      const Token& next = Peek();
      if (AcceptOp("(")) {
        absl::Status status = ParseCallArgs(e.get());
        if (!status.ok()) return status;
      } else if ((next.kind == Token::Kind::kName || next.kind == Token::Kind::kString ||
                  next.kind == Token::Kind::kInt || next.kind == Token::Kind::kFloat || IsOp("[") ||
                  IsOp("{")) &&
                 !IsName("else") && !IsName("or") && !IsName("and")) {
        if (IsName("is")) return SyntaxError("you cannot chain multiple tests with is");
        auto arg = ParsePrimary();
        if (!arg.ok()) return arg;
        auto arg_postfix = ParsePostfix(*arg);
        if (!arg_postfix.ok()) return arg_postfix;
        e->args.push_back(*arg_postfix);
      }
      expr = e;
    } else if (IsOp("(")) {
      Advance();
      auto e = std::make_shared<Expr>();
      e->kind = Expr::Kind::kCall;
      e->args = {expr};
      absl::Status status = ParseCallArgs(e.get());
      if (!status.ok()) return status;
      expr = e;
    } else {
      return expr;
    }
  }
}

#undef ASSIGN_OR_RETURN_EXPR

absl::StatusOr<ExpressionParser> ParserFor(const std::string& text) {
  auto tokens = LexExpression(text);
  if (!tokens.ok()) return tokens.status();
  return ExpressionParser(std::move(*tokens));
}

}  // namespace attnscope::jinja
