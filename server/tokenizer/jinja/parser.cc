#include "server/tokenizer/jinja/parser.h"

#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/tokenizer/jinja/expression_parser.h"
#include "server/tokenizer/jinja/lexer.h"

namespace attnscope::jinja {

namespace {

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
