#include "server/tokenizer/jinja/parser.h"

#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/tokenizer/jinja/lexer.h"

namespace attnscope::jinja {

namespace {

constexpr int kMaxNesting = 200;

absl::Status SyntaxError(const std::string& what) { return absl::InvalidArgumentError(what); }

ExprPtr Make(Expr::Kind kind, std::vector<ExprPtr> args = {}, std::string name = "") {
  auto e = std::make_shared<Expr>();
  e->kind = kind;
  e->args = std::move(args);
  e->name = std::move(name);
  return e;
}

#define ASSIGN_OR_RETURN_EXPR(lhs, rexpr)       \
  auto lhs##_or = (rexpr);                      \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  ExprPtr lhs = *lhs##_or

class ExpressionParser {
 public:
  explicit ExpressionParser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  bool AtEnd() const { return Peek().kind == Token::Kind::kEnd; }
  bool IsOp(const char* op, size_t ahead = 0) const {
    return Peek(ahead).kind == Token::Kind::kOp && Peek(ahead).text == op;
  }
  bool IsName(const char* name, size_t ahead = 0) const {
    return Peek(ahead).kind == Token::Kind::kName && Peek(ahead).text == name;
  }
  bool AcceptOp(const char* op) {
    if (!IsOp(op)) return false;
    ++pos_;
    return true;
  }
  bool AcceptName(const char* name) {
    if (!IsName(name)) return false;
    ++pos_;
    return true;
  }
  void Advance() { ++pos_; }
  absl::Status ExpectOp(const char* op) {
    if (AcceptOp(op)) return absl::OkStatus();
    return SyntaxError(absl::StrCat("expected '", op, "' but found '", Peek().text, "'"));
  }
  absl::Status Unexpected() const {
    return SyntaxError(AtEnd() ? std::string("unexpected end of expression")
                               : absl::StrCat("unexpected '", Peek().text, "'"));
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().kind != Token::Kind::kName) return Unexpected();
    std::string name = Peek().text;
    Advance();
    return name;
  }

  // parse_tuple: `a, b` becomes a tuple; a lone expression stays itself.
  absl::StatusOr<ExprPtr> ParseTuple(bool with_condexpr = true,
                                     const std::set<std::string>& end_names = {}) {
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

  absl::StatusOr<ExprPtr> ParseExpression() {
    if (++depth_ > kMaxNesting) return SyntaxError("expression nested too deeply");
    auto result = ParseCondExpr();
    --depth_;
    return result;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ASSIGN_OR_RETURN_EXPR(left, ParseAnd());
    while (AcceptName("or")) {
      ASSIGN_OR_RETURN_EXPR(right, ParseAnd());
      left = Make(Expr::Kind::kBinary, {left, right}, "or");
    }
    return left;
  }

  // Assignment targets of set/for/with: names, ns.attr (set only), tuples of them.
  absl::StatusOr<Target> ParseAssignTarget(bool with_tuple, bool with_namespace,
                                           const std::set<std::string>& end_names = {}) {
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

  absl::Status ParseCallArgs(Expr* call) {  // after '('
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

  // `| name(args)` chain applied to `subject` (null for {% filter %} blocks).
  absl::StatusOr<ExprPtr> ParseFilter(ExprPtr subject, bool start_inline) {
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

 private:
  bool IsTupleEnd(const std::set<std::string>& end_names) const {
    if (AtEnd()) return true;
    if (IsOp(")") || IsOp("]") || IsOp("}") || IsOp(":")) return true;
    return Peek().kind == Token::Kind::kName && end_names.count(Peek().text) > 0;
  }

  absl::StatusOr<ExprPtr> ParseCondExpr() {
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
  absl::StatusOr<ExprPtr> ParseAnd() {
    ASSIGN_OR_RETURN_EXPR(left, ParseNot());
    while (AcceptName("and")) {
      ASSIGN_OR_RETURN_EXPR(right, ParseNot());
      left = Make(Expr::Kind::kBinary, {left, right}, "and");
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseNot() {
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
  absl::StatusOr<ExprPtr> ParseCompare() {
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
  absl::StatusOr<ExprPtr> ParseBinaryLevel(std::initializer_list<const char*> ops, Next next) {
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
  absl::StatusOr<ExprPtr> ParseMath1() {
    return ParseBinaryLevel({"+", "-"}, &ExpressionParser::ParseConcat);
  }
  absl::StatusOr<ExprPtr> ParseConcat() {
    return ParseBinaryLevel({"~"}, &ExpressionParser::ParseMath2);
  }
  absl::StatusOr<ExprPtr> ParseMath2() {
    return ParseBinaryLevel({"*", "/", "//", "%"}, &ExpressionParser::ParsePow);
  }
  absl::StatusOr<ExprPtr> ParsePow() {
    return ParseBinaryLevel({"**"}, &ExpressionParser::ParseUnaryWithFilter);
  }
  absl::StatusOr<ExprPtr> ParseUnaryWithFilter() { return ParseUnary(true); }
  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    if (++depth_ > kMaxNesting) return SyntaxError("expression nested too deeply");
    absl::StatusOr<ExprPtr> node;
    if (IsOp("-") || IsOp("+")) {
      const std::string op = Peek().text;
      Advance();
      auto operand = ParseUnary(false);
      node = operand.ok() ? absl::StatusOr<ExprPtr>(Make(Expr::Kind::kUnary, {*operand}, op))
                          : operand;
    } else {
      node = ParsePrimary();
    }
    if (node.ok()) node = ParsePostfix(*node);
    if (node.ok() && with_filter) node = ParseFilterExpr(*node);
    --depth_;
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
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

  absl::StatusOr<ExprPtr> ParseSubscript() {
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

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr expr) {
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

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr expr) {
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
                    next.kind == Token::Kind::kInt || next.kind == Token::Kind::kFloat ||
                    IsOp("[") || IsOp("{")) &&
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

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
};

#undef ASSIGN_OR_RETURN_EXPR

absl::StatusOr<ExpressionParser> ParserFor(const std::string& text) {
  auto tokens = LexExpression(text);
  if (!tokens.ok()) return tokens.status();
  return ExpressionParser(std::move(*tokens));
}

class TemplateParser {
 public:
  explicit TemplateParser(std::vector<Chunk> chunks) : chunks_(std::move(chunks)) {}

  absl::StatusOr<Body> ParseTop() {
    Body body;
    std::string end_word;
    absl::Status status = ParseBody({}, &body, &end_word);
    if (!status.ok()) return status;
    return body;
  }

 private:
  // Parses nodes until a statement whose first word is in `terminators`; that statement's
  // parser (positioned after the word) is left in *terminator.
  absl::Status ParseBody(const std::set<std::string>& terminators, Body* body,
                         std::string* end_word, std::optional<ExpressionParser>* rest = nullptr) {
    if (++depth_ > kMaxNesting) return SyntaxError("blocks nested too deeply");
    while (pos_ < chunks_.size()) {
      const Chunk& chunk = chunks_[pos_++];
      auto node = std::make_shared<Node>();
      if (chunk.kind == Chunk::Kind::kText) {
        node->kind = Node::Kind::kText;
        node->text = chunk.text;
        body->push_back(node);
        continue;
      }
      auto parser = ParserFor(chunk.text);
      if (!parser.ok()) return Context(parser.status(), chunk);
      if (chunk.kind == Chunk::Kind::kExpression) {
        auto expr = parser->ParseTuple();
        absl::Status status =
            expr.ok() ? (parser->AtEnd() ? absl::OkStatus() : parser->Unexpected()) : expr.status();
        if (!status.ok()) return Context(status, chunk);
        node->kind = Node::Kind::kOutput;
        node->expr = *expr;
        body->push_back(node);
        continue;
      }
      auto word_or = parser->ExpectName();
      if (!word_or.ok()) return Context(SyntaxError("a statement needs a keyword"), chunk);
      const std::string word = *word_or;
      if (terminators.count(word)) {
        *end_word = word;
        if (rest != nullptr) rest->emplace(std::move(*parser));
        --depth_;
        return absl::OkStatus();
      }
      absl::Status status = ParseStatement(word, &*parser, node.get());
      if (status.ok() && !parser->AtEnd()) status = parser->Unexpected();
      if (!status.ok()) return Context(status, chunk);
      body->push_back(node);
    }
    if (!terminators.empty()) {
      return SyntaxError(absl::StrCat("template ends inside a block (expected one of: ",
                                      absl::StrJoin(terminators, ", "), ")"));
    }
    --depth_;
    return absl::OkStatus();
  }

  static absl::Status Context(const absl::Status& status, const Chunk& chunk) {
    if (absl::StrContains(status.message(), " in '{")) return status;
    const std::string open = chunk.kind == Chunk::Kind::kExpression ? "{{" : "{%";
    const std::string close = chunk.kind == Chunk::Kind::kExpression ? "}}" : "%}";
    std::string where = chunk.text.size() > 200 ? chunk.text.substr(0, 200) + "..." : chunk.text;
    return absl::Status(status.code(), absl::StrCat(status.message(), " in '", open, where, close,
                                                    "' at offset ", chunk.offset));
  }

  absl::Status ParseStatement(const std::string& word, ExpressionParser* p, Node* node) {
    if (word == "if") return ParseIf(p, node);
    if (word == "for") return ParseFor(p, node);
    if (word == "set") return ParseSet(p, node);
    if (word == "macro") return ParseMacro(p, node);
    if (word == "break" || word == "continue") {
      if (loop_depth_ == 0) return SyntaxError(absl::StrCat("'", word, "' outside a loop"));
      node->kind = word == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      return absl::OkStatus();
    }
    if (word == "filter") {
      node->kind = Node::Kind::kFilter;
      auto chain = p->ParseFilter(nullptr, true);
      if (!chain.ok()) return chain.status();
      node->expr = *chain;
      return ParseUntil({"endfilter"}, &node->body);
    }
    if (word == "with") {
      node->kind = Node::Kind::kWith;
      while (!p->AtEnd()) {
        if (!node->with_targets.empty()) {
          absl::Status status = p->ExpectOp(",");
          if (!status.ok()) return status;
        }
        auto target = p->ParseAssignTarget(false, false);
        if (!target.ok()) return target.status();
        absl::Status status = p->ExpectOp("=");
        if (!status.ok()) return status;
        auto value = p->ParseExpression();
        if (!value.ok()) return value.status();
        node->with_targets.push_back(*target);
        node->params.emplace_back(target->name, *value);
      }
      return ParseUntil({"endwith"}, &node->body);
    }
    if (word == "generation") {  // transformers' AssistantTracker: renders its body
      node->kind = Node::Kind::kScope;
      return ParseUntil({"endgeneration"}, &node->body);
    }
    static const std::set<std::string> kEnds = {"elif",      "else",    "endif",
                                                "endfor",    "endset",  "endmacro",
                                                "endfilter", "endwith", "endgeneration"};
    if (kEnds.count(word)) {
      return SyntaxError(absl::StrCat("'{% ", word, " %}' without a matching block"));
    }
    return SyntaxError(absl::StrCat("unsupported construct '{% ", word, " %}'"));
  }

  absl::Status ParseUntil(const std::set<std::string>& ends, Body* body) {
    std::string end_word;
    std::optional<ExpressionParser> rest;
    absl::Status status = ParseBody(ends, body, &end_word, &rest);
    if (status.ok() && rest && !rest->AtEnd()) {
      // `{% endmacro name %}` style trailing names are allowed by Jinja2 for blocks only.
      return rest->Unexpected();
    }
    return status;
  }

  absl::Status ParseIf(ExpressionParser* p, Node* node) {
    node->kind = Node::Kind::kIf;
    ExpressionParser* current = p;
    std::optional<ExpressionParser> rest;
    while (true) {
      auto condition = current->ParseTuple(false);
      if (!condition.ok()) return condition.status();
      if (!current->AtEnd()) return current->Unexpected();
      Body body;
      std::string end_word;
      std::optional<ExpressionParser> next;
      absl::Status status = ParseBody({"elif", "else", "endif"}, &body, &end_word, &next);
      if (!status.ok()) return status;
      node->branches.emplace_back(*condition, std::move(body));
      if (end_word == "endif") return next->AtEnd() ? absl::OkStatus() : next->Unexpected();
      if (end_word == "elif") {
        rest = std::move(next);
        current = &*rest;
        continue;
      }
      if (!next->AtEnd()) return next->Unexpected();
      return ParseUntil({"endif"}, &node->else_body);
    }
  }

  absl::Status ParseFor(ExpressionParser* p, Node* node) {
    node->kind = Node::Kind::kFor;
    auto target = p->ParseAssignTarget(true, false, {"in"});
    if (!target.ok()) return target.status();
    node->target = *target;
    if (!p->AcceptName("in")) return SyntaxError("expected 'in' in a for loop");
    auto iterable = p->ParseTuple(false, {"recursive", "if"});
    if (!iterable.ok()) return iterable.status();
    node->expr = *iterable;
    if (p->AcceptName("if")) {
      auto condition = p->ParseExpression();
      if (!condition.ok()) return condition.status();
      node->condition = *condition;
    }
    if (p->AcceptName("recursive")) {
      return SyntaxError("unsupported construct 'recursive' loop");
    }
    if (!p->AtEnd()) return p->Unexpected();
    ++loop_depth_;
    std::string end_word;
    std::optional<ExpressionParser> rest;
    absl::Status status = ParseBody({"else", "endfor"}, &node->body, &end_word, &rest);
    --loop_depth_;
    if (!status.ok()) return status;
    if (!rest->AtEnd()) return rest->Unexpected();
    if (end_word == "else") return ParseUntil({"endfor"}, &node->else_body);
    return absl::OkStatus();
  }

  absl::Status ParseSet(ExpressionParser* p, Node* node) {
    node->kind = Node::Kind::kSet;
    auto target = p->ParseAssignTarget(true, true);
    if (!target.ok()) return target.status();
    node->target = *target;
    if (p->AcceptOp("=")) {
      auto value = p->ParseTuple();
      if (!value.ok()) return value.status();
      node->expr = *value;
      return absl::OkStatus();
    }
    // {% set x %}...{% endset %}, optionally {% set x | filter %}.
    if (node->target.is_tuple) return SyntaxError("a set block takes one name");
    node->set_block = true;
    if (p->IsOp("|")) {
      auto chain = p->ParseFilter(nullptr, false);
      if (!chain.ok()) return chain.status();
      node->expr = *chain;
    }
    if (!p->AtEnd()) return p->Unexpected();
    return ParseUntil({"endset"}, &node->body);
  }

  absl::Status ParseMacro(ExpressionParser* p, Node* node) {
    node->kind = Node::Kind::kMacro;
    auto name = p->ExpectName();
    if (!name.ok()) return name.status();
    node->name = *name;
    absl::Status status = p->ExpectOp("(");
    if (!status.ok()) return status;
    while (!p->AcceptOp(")")) {
      if (!node->params.empty()) {
        status = p->ExpectOp(",");
        if (!status.ok()) return status;
        if (p->AcceptOp(")")) break;
      }
      auto param = p->ExpectName();
      if (!param.ok()) return param.status();
      ExprPtr default_value;
      if (p->AcceptOp("=")) {
        auto value = p->ParseExpression();
        if (!value.ok()) return value.status();
        default_value = *value;
      } else if (!node->params.empty() && node->params.back().second) {
        return SyntaxError("non-default argument follows default argument");
      }
      node->params.emplace_back(*param, default_value);
    }
    if (!p->AtEnd()) return p->Unexpected();
    const int saved = loop_depth_;
    loop_depth_ = 0;
    status = ParseUntil({"endmacro"}, &node->body);
    loop_depth_ = saved;
    return status;
  }

  std::vector<Chunk> chunks_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

absl::StatusOr<Body> ParseTemplate(const std::string& source) {
  auto chunks = SplitTemplate(source);
  if (!chunks.ok()) return chunks.status();
  TemplateParser parser(std::move(*chunks));
  return parser.ParseTop();
}

absl::StatusOr<ExprPtr> ParseExpression(const std::string& text) {
  auto parser = ParserFor(text);
  if (!parser.ok()) return parser.status();
  auto expr = parser->ParseTuple();
  if (!expr.ok()) return expr;
  if (!parser->AtEnd()) return parser->Unexpected();
  return expr;
}

}  // namespace attnscope::jinja
