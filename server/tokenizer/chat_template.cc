// The part of Jinja that Hugging Face chat templates use, rendered the way transformers
// renders them (jinja2 with trim_blocks and lstrip_blocks; tojson without ASCII escaping).
// Compile() parses everything up front, so an unsupported construct fails at load time.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/tokenizer.h"

namespace attnscope {
namespace {

// ------------------------------------------------------------------------------------ values

struct Value;
using List = std::vector<Value>;
struct Dict;

struct Value {
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict };
  Kind kind = Kind::kUndefined;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  std::string string;
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;
  bool is_namespace = false;  // dicts made by namespace() accept `set ns.attr`

  static Value None() { return Make(Kind::kNone); }
  static Value Bool(bool b) {
    Value v = Make(Kind::kBool);
    v.boolean = b;
    return v;
  }
  static Value Int(int64_t i) {
    Value v = Make(Kind::kInt);
    v.integer = i;
    return v;
  }
  static Value Float(double d) {
    Value v = Make(Kind::kFloat);
    v.real = d;
    return v;
  }
  static Value Str(std::string s) {
    Value v = Make(Kind::kString);
    v.string = std::move(s);
    return v;
  }
  static Value MakeList(List items = {}) {
    Value v = Make(Kind::kList);
    v.list = std::make_shared<List>(std::move(items));
    return v;
  }
  static Value MakeDict();
  static Value Make(Kind kind) {
    Value v;
    v.kind = kind;
    return v;
  }
  bool IsNumber() const {
    return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool;
  }
  double AsDouble() const {
    return kind == Kind::kFloat ? real : kind == Kind::kInt ? integer : boolean ? 1 : 0;
  }
  bool Truthy() const;
};

struct Dict {
  std::vector<std::pair<std::string, Value>> items;  // insertion order, as Python dicts
  const Value* Find(const std::string& key) const {
    for (const auto& [k, v] : items) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  void Set(const std::string& key, Value value) {
    for (auto& [k, v] : items) {
      if (k == key) {
        v = std::move(value);
        return;
      }
    }
    items.emplace_back(key, std::move(value));
  }
};

Value Value::MakeDict() {
  Value v = Make(Kind::kDict);
  v.dict = std::make_shared<Dict>();
  return v;
}

bool Value::Truthy() const {
  switch (kind) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return boolean;
    case Kind::kInt:
      return integer != 0;
    case Kind::kFloat:
      return real != 0;
    case Kind::kString:
      return !string.empty();
    case Kind::kList:
      return !list->empty();
    case Kind::kDict:
      return !dict->items.empty();
  }
  return false;
}

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == std::floor(d) && std::fabs(d) < 1e16) return absl::StrFormat("%.1f", d);
  for (int precision = 1; precision <= 17; ++precision) {
    std::string s = absl::StrFormat("%.*g", precision, d);
    if (std::stod(s) == d) return s;
  }
  return absl::StrFormat("%.17g", d);
}

std::string PythonRepr(const Value& v);

// What {{ value }} prints (Python's str()).
std::string ToText(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined:
      return "";
    case Value::Kind::kNone:
      return "None";
    case Value::Kind::kBool:
      return v.boolean ? "True" : "False";
    case Value::Kind::kInt:
      return std::to_string(v.integer);
    case Value::Kind::kFloat:
      return FloatRepr(v.real);
    case Value::Kind::kString:
      return v.string;
    default:
      return PythonRepr(v);
  }
}

std::string PythonRepr(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kString: {
      const bool use_double =
          v.string.find('\'') != std::string::npos && v.string.find('"') == std::string::npos;
      const char quote = use_double ? '"' : '\'';
      std::string out(1, quote);
      for (char c : v.string) {
        if (c == '\\') {
          out += "\\\\";
        } else if (c == quote) {
          out += std::string("\\") + quote;
        } else if (c == '\n') {
          out += "\\n";
        } else if (c == '\t') {
          out += "\\t";
        } else if (c == '\r') {
          out += "\\r";
        } else {
          out.push_back(c);
        }
      }
      return out + quote;
    }
    case Value::Kind::kList: {
      std::string out = "[";
      for (size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += ", ";
        out += PythonRepr((*v.list)[i]);
      }
      return out + "]";
    }
    case Value::Kind::kDict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [key, item] : v.dict->items) {
        if (!first) out += ", ";
        first = false;
        out += PythonRepr(Value::Str(key)) + ": " + PythonRepr(item);
      }
      return out + "}";
    }
    default:
      return ToText(v);
  }
}

void JsonString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (c < 0x20) {
          *out += absl::StrFormat("\\u%04x", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

// Python's json.dumps(value, ensure_ascii=False, indent=indent), which transformers' tojson uses.
void ToJson(const Value& v, int indent, int depth, std::string* out) {
  const auto newline = [&](int level) {
    if (indent < 0) return;
    out->push_back('\n');
    out->append(static_cast<size_t>(indent) * level, ' ');
  };
  const char* item_separator = indent < 0 ? ", " : ",";
  switch (v.kind) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      *out += "null";
      return;
    case Value::Kind::kBool:
      *out += v.boolean ? "true" : "false";
      return;
    case Value::Kind::kInt:
      *out += std::to_string(v.integer);
      return;
    case Value::Kind::kFloat:
      *out += FloatRepr(v.real);
      return;
    case Value::Kind::kString:
      JsonString(v.string, out);
      return;
    case Value::Kind::kList:
      if (v.list->empty()) {
        *out += "[]";
        return;
      }
      out->push_back('[');
      for (size_t i = 0; i < v.list->size(); ++i) {
        if (i) *out += item_separator;
        newline(depth + 1);
        ToJson((*v.list)[i], indent, depth + 1, out);
      }
      newline(depth);
      out->push_back(']');
      return;
    case Value::Kind::kDict: {
      if (v.dict->items.empty()) {
        *out += "{}";
        return;
      }
      out->push_back('{');
      bool first = true;
      for (const auto& [key, item] : v.dict->items) {
        if (!first) *out += item_separator;
        first = false;
        newline(depth + 1);
        JsonString(key, out);
        *out += ": ";
        ToJson(item, indent, depth + 1, out);
      }
      newline(depth);
      out->push_back('}');
      return;
    }
  }
}

bool Equal(const Value& a, const Value& b) {
  if (a.IsNumber() && b.IsNumber()) return a.AsDouble() == b.AsDouble();
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::kString:
      return a.string == b.string;
    case Value::Kind::kList:
      if (a.list->size() != b.list->size()) return false;
      for (size_t i = 0; i < a.list->size(); ++i) {
        if (!Equal((*a.list)[i], (*b.list)[i])) return false;
      }
      return true;
    case Value::Kind::kDict:
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [key, item] : a.dict->items) {
        const Value* other = b.dict->Find(key);
        if (other == nullptr || !Equal(item, *other)) return false;
      }
      return true;
    default:
      return true;  // undefined == undefined, none == none
  }
}

// ------------------------------------------------------------------------------------ lexing

struct Token {
  enum class Kind { kName, kString, kInt, kFloat, kOp, kEnd } kind;
  std::string text;
  int64_t integer = 0;
  double real = 0;
};

absl::StatusOr<std::vector<Token>> LexExpression(const std::string& src) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < src.size()) {
    const char c = src[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < src.size() && (std::isalnum(static_cast<unsigned char>(src[j])) || src[j] == '_'))
        ++j;
      tokens.push_back({Token::Kind::kName, src.substr(i, j - i)});
      i = j;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < src.size() && (std::isdigit(static_cast<unsigned char>(src[j])) || src[j] == '_'))
        ++j;
      bool is_float = false;
      if (j + 1 < src.size() && src[j] == '.' &&
          std::isdigit(static_cast<unsigned char>(src[j + 1]))) {
        is_float = true;
        ++j;
        while (j < src.size() && std::isdigit(static_cast<unsigned char>(src[j]))) ++j;
      }
      std::string digits;
      for (size_t k = i; k < j; ++k) {
        if (src[k] != '_') digits.push_back(src[k]);
      }
      Token token{is_float ? Token::Kind::kFloat : Token::Kind::kInt, digits};
      try {
        if (is_float) {
          token.real = std::stod(digits);
        } else {
          token.integer = std::stoll(digits);
        }
      } catch (const std::exception&) {
        return absl::InvalidArgumentError(
            absl::StrCat("number literal '", digits, "' is out of range"));
      }
      tokens.push_back(token);
      i = j;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string value;
      size_t j = i + 1;
      bool closed = false;
      while (j < src.size()) {
        const char d = src[j];
        if (d == c) {
          closed = true;
          break;
        }
        if (d == '\\' && j + 1 < src.size()) {
          const char e = src[++j];
          switch (e) {
            case 'n':
              value.push_back('\n');
              break;
            case 't':
              value.push_back('\t');
              break;
            case 'r':
              value.push_back('\r');
              break;
            case '\\':
              value.push_back('\\');
              break;
            case '\'':
              value.push_back('\'');
              break;
            case '"':
              value.push_back('"');
              break;
            case '\n':
              break;
            default:
              value.push_back('\\');
              value.push_back(e);
          }
          ++j;
          continue;
        }
        value.push_back(d);
        ++j;
      }
      if (!closed) return absl::InvalidArgumentError("unterminated string literal");
      tokens.push_back({Token::Kind::kString, value});
      i = j + 1;
      continue;
    }
    static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                 "/",  "%",  "~",  "<",  ">",  "(",  ")", "[", "]",
                                 "{",  "}",  ",",  ":",  ".",  "|",  "="};
    bool matched = false;
    for (const char* op : kOps) {
      const size_t n = std::char_traits<char>::length(op);
      if (src.compare(i, n, op) == 0) {
        tokens.push_back({Token::Kind::kOp, op});
        i += n;
        matched = true;
        break;
      }
    }
    if (!matched) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected character '", std::string(1, c), "' in expression '", src, "'"));
    }
  }
  tokens.push_back({Token::Kind::kEnd, ""});
  return tokens;
}

// A template split into text, {{ expression }} and {% statement %} chunks, with whitespace
// control, trim_blocks and lstrip_blocks already applied to the text.
struct Chunk {
  enum class Kind { kText, kExpression, kStatement } kind;
  std::string text;
};

// End of a tag body starting at `pos`, skipping string literals; npos when unterminated.
size_t FindTagEnd(const std::string& src, size_t pos, const std::string& close) {
  char quote = 0;
  for (size_t i = pos; i < src.size(); ++i) {
    const char c = src[i];
    if (quote) {
      if (c == '\\') {
        ++i;
      } else if (c == quote) {
        quote = 0;
      }
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
    } else if (src.compare(i, close.size(), close) == 0) {
      return i;
    }
  }
  return std::string::npos;
}

absl::StatusOr<std::vector<Chunk>> SplitTemplate(const std::string& src) {
  std::vector<Chunk> chunks;
  size_t pos = 0;
  bool strip_next_leading = false;  // `-%}` / `-}}` on the previous tag
  bool trim_next_newline = false;   // trim_blocks after `%}` / `#}`
  // As jinja2's lexer: the template start, or the previous tag's match ended with a newline.
  bool line_starting = true;
  std::string text;
  auto flush_text = [&]() {
    if (!text.empty()) chunks.push_back({Chunk::Kind::kText, text});
    text.clear();
  };
  while (pos <= src.size()) {
    size_t open = src.find('{', pos);
    while (open != std::string::npos && open + 1 < src.size() && src[open + 1] != '{' &&
           src[open + 1] != '%' && src[open + 1] != '#') {
      open = src.find('{', open + 1);
    }
    if (open + 1 >= src.size()) open = std::string::npos;
    std::string piece = src.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
    if (strip_next_leading) {
      size_t k = 0;
      while (k < piece.size() && std::isspace(static_cast<unsigned char>(piece[k]))) ++k;
      line_starting = k > 0 && piece[k - 1] == '\n';
      piece.erase(0, k);
    } else if (trim_next_newline) {
      line_starting = false;
      if (piece.rfind("\r\n", 0) == 0) {
        piece.erase(0, 2);
        line_starting = true;
      } else if (!piece.empty() && piece[0] == '\n') {
        piece.erase(0, 1);
        line_starting = true;
      }
    } else if (pos > 0) {
      line_starting = false;
    }
    strip_next_leading = trim_next_newline = false;
    if (open == std::string::npos) {
      text += piece;
      break;
    }
    const char kind = src[open + 1];
    const char modifier = open + 2 < src.size() ? src[open + 2] : 0;
    if (modifier == '-') {
      size_t end = piece.size();
      while (end > 0 && std::isspace(static_cast<unsigned char>(piece[end - 1]))) --end;
      piece.erase(end);
    } else if (kind != '{' && modifier != '+') {
      // lstrip_blocks: drop spaces and tabs between the line start and a block or comment tag.
      size_t k = piece.size();
      while (k > 0 && (piece[k - 1] == ' ' || piece[k - 1] == '\t')) --k;
      const bool at_line_start = k == 0 ? line_starting : piece[k - 1] == '\n';
      if (at_line_start) piece.erase(k);
    }
    text += piece;
    const size_t body = open + 2 + ((modifier == '-' || modifier == '+') ? 1 : 0);
    const std::string close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t end = kind == '#' ? src.find(close, body) : FindTagEnd(src, body, close);
    if (end == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("tag opened at offset ", open, " with '{",
                                                     std::string(1, kind), "' is never closed"));
    }
    size_t body_end = end;
    if (end > body && src[end - 1] == '-') {
      strip_next_leading = true;
      --body_end;
    } else if (end > body && src[end - 1] == '+') {
      --body_end;
    } else if (kind != '{') {
      trim_next_newline = true;
    }
    const std::string inner = src.substr(body, body_end - body);
    if (kind == '{') {
      flush_text();
      chunks.push_back({Chunk::Kind::kExpression, inner});
    } else if (kind == '%') {
      // {% raw %}...{% endraw %} is copied verbatim.
      std::string keyword = inner;
      keyword.erase(0, keyword.find_first_not_of(" \t\n\r"));
      keyword.erase(keyword.find_last_not_of(" \t\n\r") + 1);
      if (keyword == "raw") {
        const size_t raw_end = src.find("endraw", end);
        const size_t raw_tag = raw_end == std::string::npos ? raw_end : src.rfind("{%", raw_end);
        if (raw_tag == std::string::npos)
          return absl::InvalidArgumentError("{% raw %} without {% endraw %}");
        text += src.substr(end + 2, raw_tag - end - 2);
        const size_t raw_close = src.find("%}", raw_end);
        if (raw_close == std::string::npos)
          return absl::InvalidArgumentError("unterminated {% endraw %}");
        pos = raw_close + 2;
        continue;
      }
      flush_text();
      chunks.push_back({Chunk::Kind::kStatement, inner});
    }
    pos = end + 2;
  }
  flush_text();
  return chunks;
}

// ------------------------------------------------------------------------------------ syntax tree

struct Expr;
using ExprPtr = std::shared_ptr<const Expr>;

struct Expr {
  enum class Kind {
    kLiteral,
    kName,
    kAttr,
    kItem,
    kSlice,
    kCall,
    kFilter,
    kTest,
    kUnary,
    kBinary,
    kTernary,
    kList,
    kDict
  } kind;
  Value literal;
  std::string name;  // name, attribute, filter, test, operator
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;  // `is not`
};

struct Node;
using Body = std::vector<std::shared_ptr<const Node>>;

struct Node {
  enum class Kind { kText, kOutput, kIf, kFor, kSet, kBreak, kContinue } kind;
  std::string text;
  ExprPtr expr;                                    // output, set value, for iterable
  std::vector<std::pair<ExprPtr, Body>> branches;  // if/elif
  Body body, else_body;                            // for body / else
  std::vector<std::string> targets;                // for variables, or set target
  std::string attribute;                           // set ns.attribute
  ExprPtr filter;                                  // for ... if cond
};

const std::set<std::string>& KnownFilters() {
  static const auto* filters = new std::set<std::string>{
      "trim",       "length", "count", "tojson", "default", "d",      "upper",      "lower",
      "first",      "last",   "join",  "string", "int",     "float",  "list",       "replace",
      "capitalize", "title",  "safe",  "items",  "reverse", "abs",    "selectattr", "rejectattr",
      "map",        "unique", "round", "e",      "escape",  "indent", "wordcount",  "sort",
      "dictsort",   "min",    "max",   "sum",    "batch"};
  return *filters;
}
const std::set<std::string>& KnownTests() {
  static const auto* tests = new std::set<std::string>{
      "defined",  "undefined", "none",    "string", "number", "integer",    "float", "mapping",
      "iterable", "sequence",  "boolean", "true",   "false",  "odd",        "even",  "equalto",
      "eq",       "ne",        "lower",   "upper",  "in",     "divisibleby"};
  return *tests;
}
const std::set<std::string>& KnownMethods() {
  static const auto* methods = new std::set<std::string>{
      "strip", "lstrip",     "rstrip",  "startswith", "endswith", "split",   "upper",   "lower",
      "title", "capitalize", "replace", "items",      "keys",     "values",  "get",     "find",
      "count", "join",       "rsplit",  "splitlines", "isdigit",  "isspace", "isalpha", "format"};
  return *methods;
}

constexpr int kMaxNesting = 200;

class ExpressionParser {
 public:
  explicit ExpressionParser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  absl::StatusOr<ExprPtr> ParseAll() {
    auto expr = ParseExpression();
    if (!expr.ok()) return expr;
    if (Peek().kind != Token::Kind::kEnd) return Unexpected();
    return expr;
  }
  absl::StatusOr<ExprPtr> ParseExpression() {
    if (++depth_ > kMaxNesting) return absl::InvalidArgumentError("expression nested too deeply");
    auto result = ParseTernary();
    --depth_;
    return result;
  }
  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
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
  absl::Status ExpectOp(const char* op) {
    if (AcceptOp(op)) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("expected '", op, "' but found '", Peek().text, "'"));
  }
  absl::Status Unexpected() const {
    return absl::InvalidArgumentError(absl::StrCat("unexpected '", Peek().text, "' in expression"));
  }
  size_t position() const { return pos_; }
  void Advance() { ++pos_; }

 private:
  static ExprPtr Binary(std::string op, ExprPtr left, ExprPtr right) {
    auto e = std::make_shared<Expr>();
    e->kind = Expr::Kind::kBinary;
    e->name = std::move(op);
    e->args = {std::move(left), std::move(right)};
    return e;
  }

  absl::StatusOr<ExprPtr> ParseTernary() {
    auto value = ParseOr();
    if (!value.ok()) return value;
    if (!AcceptName("if")) return value;
    auto condition = ParseOr();
    if (!condition.ok()) return condition;
    ExprPtr otherwise;
    if (AcceptName("else")) {
      auto parsed = ParseTernary();
      if (!parsed.ok()) return parsed;
      otherwise = *parsed;
    } else {
      auto undefined = std::make_shared<Expr>();
      undefined->kind = Expr::Kind::kLiteral;
      otherwise = undefined;
    }
    auto e = std::make_shared<Expr>();
    e->kind = Expr::Kind::kTernary;
    e->args = {*condition, *value, otherwise};
    return ExprPtr(e);
  }
  absl::StatusOr<ExprPtr> ParseOr() {
    auto left = ParseAnd();
    while (left.ok() && AcceptName("or")) {
      auto right = ParseAnd();
      if (!right.ok()) return right;
      left = Binary("or", *left, *right);
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseAnd() {
    auto left = ParseNot();
    while (left.ok() && AcceptName("and")) {
      auto right = ParseNot();
      if (!right.ok()) return right;
      left = Binary("and", *left, *right);
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseNot() {
    if (AcceptName("not")) {
      if (++depth_ > kMaxNesting) return absl::InvalidArgumentError("expression nested too deeply");
      auto operand = ParseNot();
      --depth_;
      if (!operand.ok()) return operand;
      auto e = std::make_shared<Expr>();
      e->kind = Expr::Kind::kUnary;
      e->name = "not";
      e->args = {*operand};
      return ExprPtr(e);
    }
    return ParseCompare();
  }
  absl::StatusOr<ExprPtr> ParseCompare() {
    auto left = ParseMath1();
    while (left.ok()) {
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
      auto right = ParseMath1();
      if (!right.ok()) return right;
      left = Binary(op, *left, *right);
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseMath1() {
    auto left = ParseConcat();
    while (left.ok() && (IsOp("+") || IsOp("-"))) {
      const std::string op = Peek().text;
      Advance();
      auto right = ParseConcat();
      if (!right.ok()) return right;
      left = Binary(op, *left, *right);
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseConcat() {
    auto left = ParseMath2();
    while (left.ok() && AcceptOp("~")) {
      auto right = ParseMath2();
      if (!right.ok()) return right;
      left = Binary("~", *left, *right);
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseMath2() {
    auto left = ParseUnary();
    while (left.ok() && (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%") || IsOp("**"))) {
      const std::string op = Peek().text;
      Advance();
      auto right = ParseUnary();
      if (!right.ok()) return right;
      left = Binary(op, *left, *right);
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseUnary() {
    if (IsOp("-") || IsOp("+")) {
      const std::string op = Peek().text;
      Advance();
      if (++depth_ > kMaxNesting) return absl::InvalidArgumentError("expression nested too deeply");
      auto operand = ParseUnary();
      --depth_;
      if (!operand.ok()) return operand;
      auto e = std::make_shared<Expr>();
      e->kind = Expr::Kind::kUnary;
      e->name = op;
      e->args = {*operand};
      return ExprPtr(e);
    }
    auto primary = ParsePrimary();
    if (!primary.ok()) return primary;
    return ParsePostfix(*primary);
  }

  absl::Status ParseCallArgs(Expr* call) {
    // Called after '('. args[0] already holds the callee or the filtered value.
    size_t given = 0;
    while (!AcceptOp(")")) {
      if (given++ > 0) {
        absl::Status status = ExpectOp(",");
        if (!status.ok()) return status;
        if (AcceptOp(")")) break;
      }
      if (Peek().kind == Token::Kind::kName && IsOp("=", 1)) {
        const std::string key = Peek().text;
        Advance();
        Advance();
        auto value = ParseExpression();
        if (!value.ok()) return value.status();
        call->kwargs.emplace_back(key, *value);
      } else {
        auto value = ParseExpression();
        if (!value.ok()) return value.status();
        call->args.push_back(*value);
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr expr) {
    while (true) {
      if (AcceptOp(".")) {
        if (Peek().kind != Token::Kind::kName && Peek().kind != Token::Kind::kInt)
          return Unexpected();
        auto e = std::make_shared<Expr>();
        e->kind = Peek().kind == Token::Kind::kInt ? Expr::Kind::kItem : Expr::Kind::kAttr;
        if (e->kind == Expr::Kind::kItem) {
          auto index = std::make_shared<Expr>();
          index->kind = Expr::Kind::kLiteral;
          index->literal = Value::Int(Peek().integer);
          e->args = {expr, index};
        } else {
          e->name = Peek().text;
          e->args = {expr};
        }
        Advance();
        expr = e;
      } else if (AcceptOp("[")) {
        // Subscript or slice.
        std::vector<ExprPtr> parts(3);
        bool is_slice = false;
        for (int part = 0; part < 3; ++part) {
          if (!IsOp(":") && !IsOp("]")) {
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
        absl::Status status = ExpectOp("]");
        if (!status.ok()) return status;
        auto e = std::make_shared<Expr>();
        if (is_slice) {
          e->kind = Expr::Kind::kSlice;
          e->args = {expr, parts[0], parts[1], parts[2]};
        } else {
          if (!parts[0]) return Unexpected();
          e->kind = Expr::Kind::kItem;
          e->args = {expr, parts[0]};
        }
        expr = e;
      } else if (AcceptOp("(")) {
        auto e = std::make_shared<Expr>();
        e->kind = Expr::Kind::kCall;
        e->args = {expr};
        if (expr->kind == Expr::Kind::kAttr && !KnownMethods().count(expr->name)) {
          return absl::InvalidArgumentError(
              absl::StrCat("unsupported method '.", expr->name, "()'"));
        }
        absl::Status status = ParseCallArgs(e.get());
        if (!status.ok()) return status;
        expr = e;
      } else if (AcceptOp("|")) {
        if (Peek().kind != Token::Kind::kName) return Unexpected();
        auto e = std::make_shared<Expr>();
        e->kind = Expr::Kind::kFilter;
        e->name = Peek().text;
        if (!KnownFilters().count(e->name)) {
          return absl::InvalidArgumentError(absl::StrCat("unsupported filter '", e->name, "'"));
        }
        Advance();
        e->args = {expr};
        if (AcceptOp("(")) {
          absl::Status status = ParseCallArgs(e.get());
          if (!status.ok()) return status;
        }
        expr = e;
      } else if (IsName("is")) {
        Advance();
        auto e = std::make_shared<Expr>();
        e->kind = Expr::Kind::kTest;
        e->negated = AcceptName("not");
        if (Peek().kind != Token::Kind::kName) return Unexpected();
        e->name = Peek().text;
        if (!KnownTests().count(e->name)) {
          return absl::InvalidArgumentError(absl::StrCat("unsupported test 'is ", e->name, "'"));
        }
        Advance();
        e->args = {expr};
        if (AcceptOp("(")) {
          absl::Status status = ParseCallArgs(e.get());
          if (!status.ok()) return status;
        } else if (Peek().kind == Token::Kind::kString || Peek().kind == Token::Kind::kInt ||
                   (Peek().kind == Token::Kind::kName && !IsName("and") && !IsName("or") &&
                    !IsName("else") && !IsName("if"))) {
          auto arg = ParsePrimary();
          if (!arg.ok()) return arg;
          e->args.push_back(*arg);
        }
        expr = e;
      } else {
        return expr;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    if (++depth_ > kMaxNesting) return absl::InvalidArgumentError("expression nested too deeply");
    auto result = ParsePrimaryInner();
    --depth_;
    return result;
  }
  absl::StatusOr<ExprPtr> ParsePrimaryInner() {
    const Token token = Peek();
    auto e = std::make_shared<Expr>();
    e->kind = Expr::Kind::kLiteral;
    switch (token.kind) {
      case Token::Kind::kString: {
        Advance();
        std::string text = token.text;
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
      case Token::Kind::kOp:
        if (AcceptOp("(")) {
          auto inner = ParseExpression();
          if (!inner.ok()) return inner;
          if (IsOp(",")) return absl::InvalidArgumentError("unsupported construct: tuple literal");
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
        return absl::InvalidArgumentError("expression ends early");
    }
    return Unexpected();
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
};

absl::StatusOr<ExprPtr> ParseExpressionText(const std::string& text) {
  auto tokens = LexExpression(text);
  if (!tokens.ok()) return tokens.status();
  ExpressionParser parser(std::move(*tokens));
  return parser.ParseAll();
}

class TemplateParser {
 public:
  explicit TemplateParser(std::vector<Chunk> chunks) : chunks_(std::move(chunks)) {}

  absl::StatusOr<Body> ParseTop() {
    Body body;
    std::string end_tag;
    absl::Status status = ParseBody({}, &body, &end_tag);
    if (!status.ok()) return status;
    return body;
  }

 private:
  static std::string FirstWord(const std::string& statement) {
    size_t b = statement.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return "";
    size_t e = b;
    while (e < statement.size() &&
           (std::isalnum(static_cast<unsigned char>(statement[e])) || statement[e] == '_')) {
      ++e;
    }
    return statement.substr(b, e - b);
  }
  static std::string Rest(const std::string& statement, const std::string& word) {
    const size_t at = statement.find(word);
    return statement.substr(at + word.size());
  }

  // Parses nodes until one of `terminators` (its statement text goes to *terminator).
  absl::Status ParseBody(const std::set<std::string>& terminators, Body* body,
                         std::string* terminator) {
    if (++depth_ > kMaxNesting) return absl::InvalidArgumentError("blocks nested too deeply");
    while (pos_ < chunks_.size()) {
      const Chunk& chunk = chunks_[pos_++];
      auto node = std::make_shared<Node>();
      if (chunk.kind == Chunk::Kind::kText) {
        node->kind = Node::Kind::kText;
        node->text = chunk.text;
        body->push_back(node);
        continue;
      }
      if (chunk.kind == Chunk::Kind::kExpression) {
        auto expr = ParseExpressionText(chunk.text);
        if (!expr.ok()) return Context(expr.status(), "{{" + chunk.text + "}}");
        node->kind = Node::Kind::kOutput;
        node->expr = *expr;
        body->push_back(node);
        continue;
      }
      const std::string word = FirstWord(chunk.text);
      if (terminators.count(word)) {
        *terminator = chunk.text;
        --depth_;
        return absl::OkStatus();
      }
      absl::Status status;
      if (word == "if") {
        status = ParseIf(chunk.text, node.get());
      } else if (word == "for") {
        status = ParseFor(chunk.text, node.get());
      } else if (word == "set") {
        status = ParseSet(chunk.text, node.get());
      } else if (word == "break" || word == "continue") {
        node->kind = word == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      } else if (word == "elif" || word == "else" || word == "endif" || word == "endfor") {
        return absl::InvalidArgumentError(
            absl::StrCat("'{% ", word, " %}' without a matching block"));
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("unsupported construct '{% ", word.empty() ? chunk.text : word, " %}'"));
      }
      if (!status.ok()) return Context(status, "{%" + chunk.text + "%}");
      body->push_back(node);
    }
    if (!terminators.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "template ends inside a block (expected one of: ", absl::StrJoin(terminators, ", "),
          ")"));
    }
    --depth_;
    return absl::OkStatus();
  }

  static absl::Status Context(const absl::Status& status, const std::string& where) {
    if (absl::StrContains(status.message(), " in '")) return status;
    return absl::Status(status.code(), absl::StrCat(status.message(), " in '", where, "'"));
  }

  absl::Status ParseIf(const std::string& statement, Node* node) {
    node->kind = Node::Kind::kIf;
    std::string condition_text = Rest(statement, "if");
    while (true) {
      auto condition = ParseExpressionText(condition_text);
      if (!condition.ok()) return condition.status();
      Body body;
      std::string terminator;
      absl::Status status = ParseBody({"elif", "else", "endif"}, &body, &terminator);
      if (!status.ok()) return status;
      node->branches.emplace_back(*condition, std::move(body));
      const std::string word = FirstWord(terminator);
      if (word == "endif") return absl::OkStatus();
      if (word == "elif") {
        condition_text = Rest(terminator, "elif");
        continue;
      }
      std::string end;
      status = ParseBody({"endif"}, &node->else_body, &end);
      return status;
    }
  }

  absl::Status ParseFor(const std::string& statement, Node* node) {
    node->kind = Node::Kind::kFor;
    auto tokens = LexExpression(Rest(statement, "for"));
    if (!tokens.ok()) return tokens.status();
    ExpressionParser parser(std::move(*tokens));
    while (true) {
      if (parser.Peek().kind != Token::Kind::kName)
        return absl::InvalidArgumentError("bad for target");
      node->targets.push_back(parser.Peek().text);
      parser.Advance();
      if (!parser.AcceptOp(",")) break;
    }
    if (!parser.AcceptName("in")) return absl::InvalidArgumentError("expected 'in' in for loop");
    // The iterable stops before a trailing `if` filter, which the ternary parser would take.
    auto iterable = parser.ParseExpression();
    if (!iterable.ok()) return iterable.status();
    node->expr = *iterable;
    if (node->expr->kind == Expr::Kind::kTernary &&
        node->expr->args[2]->kind == Expr::Kind::kLiteral &&
        node->expr->args[2]->literal.kind == Value::Kind::kUndefined) {
      node->filter = node->expr->args[0];
      node->expr = node->expr->args[1];
    }
    if (parser.IsName("recursive"))
      return absl::InvalidArgumentError("unsupported construct 'recursive' loop");
    if (parser.Peek().kind != Token::Kind::kEnd) return parser.Unexpected();
    std::string terminator;
    absl::Status status = ParseBody({"else", "endfor"}, &node->body, &terminator);
    if (!status.ok()) return status;
    if (FirstWord(terminator) == "else") {
      std::string end;
      status = ParseBody({"endfor"}, &node->else_body, &end);
    }
    return status;
  }

  absl::Status ParseSet(const std::string& statement, Node* node) {
    node->kind = Node::Kind::kSet;
    auto tokens = LexExpression(Rest(statement, "set"));
    if (!tokens.ok()) return tokens.status();
    ExpressionParser parser(std::move(*tokens));
    if (parser.Peek().kind != Token::Kind::kName)
      return absl::InvalidArgumentError("bad set target");
    node->targets.push_back(parser.Peek().text);
    parser.Advance();
    if (parser.AcceptOp(".")) {
      if (parser.Peek().kind != Token::Kind::kName)
        return absl::InvalidArgumentError("bad set target");
      node->attribute = parser.Peek().text;
      parser.Advance();
    }
    if (parser.IsOp(","))
      return absl::InvalidArgumentError("unsupported construct: tuple assignment in set");
    if (!parser.AcceptOp("=")) {
      return absl::InvalidArgumentError("unsupported construct '{% set %}...{% endset %}' block");
    }
    auto value = parser.ParseAll();
    if (!value.ok()) return value.status();
    node->expr = *value;
    return absl::OkStatus();
  }

  std::vector<Chunk> chunks_;
  size_t pos_ = 0;
  int depth_ = 0;
};

// ------------------------------------------------------------------------------------ rendering

constexpr size_t kMaxOutputBytes = 64 << 20;
constexpr int64_t kMaxLoopIterations = 1 << 22;

class Renderer {
 public:
  explicit Renderer(std::map<std::string, Value> globals) { scopes_.push_back(std::move(globals)); }

  enum class Flow { kNormal, kBreak, kContinue };

  absl::Status RenderBody(const Body& body, Flow* flow, std::string* out) {
    for (const auto& node : body) {
      absl::Status status = RenderNode(*node, flow, out);
      if (!status.ok()) return status;
      if (*flow != Flow::kNormal) return absl::OkStatus();
      if (out->size() > kMaxOutputBytes) {
        return absl::ResourceExhaustedError(
            absl::StrCat("chat template output exceeds ", kMaxOutputBytes, " bytes"));
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::Status RenderNode(const Node& node, Flow* flow, std::string* out) {
    switch (node.kind) {
      case Node::Kind::kText:
        *out += node.text;
        return absl::OkStatus();
      case Node::Kind::kOutput: {
        auto value = Eval(*node.expr);
        if (!value.ok()) return value.status();
        *out += ToText(*value);
        return absl::OkStatus();
      }
      case Node::Kind::kIf:
        for (const auto& [condition, body] : node.branches) {
          auto value = Eval(*condition);
          if (!value.ok()) return value.status();
          if (value->Truthy()) return RenderBody(body, flow, out);
        }
        return RenderBody(node.else_body, flow, out);
      case Node::Kind::kSet: {
        auto value = Eval(*node.expr);
        if (!value.ok()) return value.status();
        if (node.attribute.empty()) {
          scopes_.back()[node.targets[0]] = *value;
          return absl::OkStatus();
        }
        const Value target = Lookup(node.targets[0]);
        if (target.kind != Value::Kind::kDict || !target.is_namespace) {
          return absl::InvalidArgumentError(absl::StrCat("cannot set attribute '", node.attribute,
                                                         "' of '", node.targets[0],
                                                         "': it is not a namespace()"));
        }
        target.dict->Set(node.attribute, *value);
        return absl::OkStatus();
      }
      case Node::Kind::kBreak:
        *flow = Flow::kBreak;
        return absl::OkStatus();
      case Node::Kind::kContinue:
        *flow = Flow::kContinue;
        return absl::OkStatus();
      case Node::Kind::kFor:
        return RenderFor(node, out);
    }
    return absl::OkStatus();
  }

  absl::Status RenderFor(const Node& node, std::string* out) {
    auto iterable = Eval(*node.expr);
    if (!iterable.ok()) return iterable.status();
    std::vector<Value> items;
    if (iterable->kind == Value::Kind::kList) {
      items = *iterable->list;
    } else if (iterable->kind == Value::Kind::kDict) {
      for (const auto& [key, value] : iterable->dict->items) items.push_back(Value::Str(key));
    } else if (iterable->kind == Value::Kind::kString) {
      for (char c : iterable->string) items.push_back(Value::Str(std::string(1, c)));
    } else if (iterable->kind == Value::Kind::kUndefined || iterable->kind == Value::Kind::kNone) {
      if (iterable->kind == Value::Kind::kNone) {
        return absl::InvalidArgumentError("for loop over None");
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("cannot iterate over ", ToText(*iterable)));
    }
    if (node.filter) {
      std::vector<Value> kept;
      for (const Value& item : items) {
        scopes_.emplace_back();
        BindTargets(node, item);
        auto keep = Eval(*node.filter);
        scopes_.pop_back();
        if (!keep.ok()) return keep.status();
        if (keep->Truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      Flow flow = Flow::kNormal;
      return RenderBody(node.else_body, &flow, out);
    }
    const int64_t length = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < length; ++i) {
      if (++iterations_ > kMaxLoopIterations) {
        return absl::ResourceExhaustedError("chat template loops run too long");
      }
      scopes_.emplace_back();
      Value loop = Value::MakeDict();
      loop.dict->Set("index", Value::Int(i + 1));
      loop.dict->Set("index0", Value::Int(i));
      loop.dict->Set("revindex", Value::Int(length - i));
      loop.dict->Set("revindex0", Value::Int(length - i - 1));
      loop.dict->Set("first", Value::Bool(i == 0));
      loop.dict->Set("last", Value::Bool(i == length - 1));
      loop.dict->Set("length", Value::Int(length));
      loop.dict->Set("previtem", i > 0 ? items[i - 1] : Value());
      loop.dict->Set("nextitem", i + 1 < length ? items[i + 1] : Value());
      scopes_.back()["loop"] = loop;
      BindTargets(node, items[i]);
      Flow flow = Flow::kNormal;
      absl::Status status = RenderBody(node.body, &flow, out);
      scopes_.pop_back();
      if (!status.ok()) return status;
      if (flow == Flow::kBreak) break;
    }
    return absl::OkStatus();
  }

  void BindTargets(const Node& node, const Value& item) {
    if (node.targets.size() == 1) {
      scopes_.back()[node.targets[0]] = item;
      return;
    }
    for (size_t k = 0; k < node.targets.size(); ++k) {
      Value part;
      if (item.kind == Value::Kind::kList && k < item.list->size()) part = (*item.list)[k];
      scopes_.back()[node.targets[k]] = part;
    }
  }

  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return Value();
  }

  static absl::Status TypeError(const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("chat template type error: ", what));
  }

  absl::StatusOr<std::vector<Value>> EvalArgs(const Expr& e, size_t first) {
    std::vector<Value> values;
    for (size_t k = first; k < e.args.size(); ++k) {
      auto v = Eval(*e.args[k]);
      if (!v.ok()) return v.status();
      values.push_back(std::move(*v));
    }
    return values;
  }
  absl::StatusOr<std::map<std::string, Value>> EvalKwargs(const Expr& e) {
    std::map<std::string, Value> values;
    for (const auto& [key, expr] : e.kwargs) {
      auto v = Eval(*expr);
      if (!v.ok()) return v.status();
      values[key] = std::move(*v);
    }
    return values;
  }

  absl::StatusOr<Value> Eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.literal;
      case Expr::Kind::kName:
        return Lookup(e.name);
      case Expr::Kind::kList: {
        auto items = EvalArgs(e, 0);
        if (!items.ok()) return items.status();
        return Value::MakeList(std::move(*items));
      }
      case Expr::Kind::kDict: {
        auto items = EvalArgs(e, 0);
        if (!items.ok()) return items.status();
        Value dict = Value::MakeDict();
        for (size_t k = 0; k + 1 < items->size(); k += 2)
          dict.dict->Set(ToText((*items)[k]), (*items)[k + 1]);
        return dict;
      }
      case Expr::Kind::kAttr: {
        auto object = Eval(*e.args[0]);
        if (!object.ok()) return object;
        return GetAttr(*object, e.name);
      }
      case Expr::Kind::kItem: {
        auto object = Eval(*e.args[0]);
        if (!object.ok()) return object;
        auto index = Eval(*e.args[1]);
        if (!index.ok()) return index;
        return GetItem(*object, *index);
      }
      case Expr::Kind::kSlice:
        return EvalSlice(e);
      case Expr::Kind::kCall:
        return EvalCall(e);
      case Expr::Kind::kFilter:
        return EvalFilter(e);
      case Expr::Kind::kTest: {
        auto result = EvalTest(e);
        if (!result.ok()) return result.status();
        return Value::Bool(*result != e.negated);
      }
      case Expr::Kind::kUnary: {
        auto operand = Eval(*e.args[0]);
        if (!operand.ok()) return operand;
        if (e.name == "not") return Value::Bool(!operand->Truthy());
        if (operand->kind == Value::Kind::kInt) {
          return Value::Int(e.name == "-" ? -operand->integer : operand->integer);
        }
        if (operand->kind == Value::Kind::kFloat) {
          return Value::Float(e.name == "-" ? -operand->real : operand->real);
        }
        return TypeError(
            absl::StrCat("bad operand for unary ", e.name, ": ", PythonRepr(*operand)));
      }
      case Expr::Kind::kTernary: {
        auto condition = Eval(*e.args[0]);
        if (!condition.ok()) return condition;
        return Eval(*e.args[condition->Truthy() ? 1 : 2]);
      }
      case Expr::Kind::kBinary:
        return EvalBinary(e);
    }
    return absl::InternalError("unknown expression");
  }

  static Value GetAttr(const Value& object, const std::string& name) {
    if (object.kind == Value::Kind::kDict) {
      const Value* found = object.dict->Find(name);
      return found ? *found : Value();
    }
    return Value();
  }

  static Value GetItem(const Value& object, const Value& index) {
    if (object.kind == Value::Kind::kDict) {
      const Value* found = object.dict->Find(ToText(index));
      return found ? *found : Value();
    }
    if ((object.kind == Value::Kind::kList || object.kind == Value::Kind::kString) &&
        index.kind == Value::Kind::kInt) {
      const int64_t size = object.kind == Value::Kind::kList
                               ? static_cast<int64_t>(object.list->size())
                               : static_cast<int64_t>(object.string.size());
      int64_t i = index.integer < 0 ? index.integer + size : index.integer;
      if (i < 0 || i >= size) return Value();
      if (object.kind == Value::Kind::kList) return (*object.list)[i];
      return Value::Str(std::string(1, object.string[i]));
    }
    return Value();
  }

  absl::StatusOr<Value> EvalSlice(const Expr& e) {
    auto object = Eval(*e.args[0]);
    if (!object.ok()) return object;
    int64_t bounds[3] = {0, 0, 1};
    bool given[3] = {false, false, false};
    for (int k = 0; k < 3; ++k) {
      if (!e.args[k + 1]) continue;
      auto v = Eval(*e.args[k + 1]);
      if (!v.ok()) return v;
      if (v->kind == Value::Kind::kNone) continue;
      if (v->kind != Value::Kind::kInt) return TypeError("slice indices must be integers");
      bounds[k] = v->integer;
      given[k] = true;
    }
    const int64_t step = bounds[2];
    if (step == 0) return TypeError("slice step cannot be zero");
    std::vector<Value> items;
    if (object->kind == Value::Kind::kList) {
      items = *object->list;
    } else if (object->kind == Value::Kind::kString) {
      for (char c : object->string) items.push_back(Value::Str(std::string(1, c)));
    } else {
      return TypeError(absl::StrCat("cannot slice ", PythonRepr(*object)));
    }
    const int64_t n = static_cast<int64_t>(items.size());
    auto clamp = [&](int64_t v, bool is_given, int64_t fallback) {
      if (!is_given) return fallback;
      if (v < 0) v += n;
      if (step > 0) return std::clamp<int64_t>(v, 0, n);
      return std::clamp<int64_t>(v, -1, n - 1);
    };
    const int64_t start = clamp(bounds[0], given[0], step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(bounds[1], given[1], step > 0 ? n : -1);
    std::vector<Value> sliced;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) sliced.push_back(items[i]);
    if (object->kind == Value::Kind::kString) {
      std::string s;
      for (const Value& v : sliced) s += v.string;
      return Value::Str(s);
    }
    return Value::MakeList(std::move(sliced));
  }

  absl::StatusOr<Value> EvalBinary(const Expr& e) {
    const std::string& op = e.name;
    auto left = Eval(*e.args[0]);
    if (!left.ok()) return left;
    if (op == "and") return left->Truthy() ? Eval(*e.args[1]) : left;
    if (op == "or") return left->Truthy() ? left : Eval(*e.args[1]);
    auto right = Eval(*e.args[1]);
    if (!right.ok()) return right;
    const Value& a = *left;
    const Value& b = *right;
    if (op == "~") return Value::Str(ToText(a) + ToText(b));
    if (op == "==") return Value::Bool(Equal(a, b));
    if (op == "!=") return Value::Bool(!Equal(a, b));
    if (op == "in" || op == "not in") {
      bool found = false;
      if (b.kind == Value::Kind::kString && a.kind == Value::Kind::kString) {
        found = b.string.find(a.string) != std::string::npos;
      } else if (b.kind == Value::Kind::kList) {
        for (const Value& item : *b.list) found = found || Equal(item, a);
      } else if (b.kind == Value::Kind::kDict) {
        found = b.dict->Find(ToText(a)) != nullptr;
      } else if (b.kind != Value::Kind::kUndefined) {
        return TypeError(absl::StrCat("'in' needs a string, list or dict, not ", PythonRepr(b)));
      }
      return Value::Bool(op == "in" ? found : !found);
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int order;
      if (a.IsNumber() && b.IsNumber()) {
        order = a.AsDouble() < b.AsDouble() ? -1 : a.AsDouble() > b.AsDouble() ? 1 : 0;
      } else if (a.kind == Value::Kind::kString && b.kind == Value::Kind::kString) {
        order = a.string.compare(b.string);
      } else {
        return TypeError(
            absl::StrCat("cannot compare ", PythonRepr(a), " ", op, " ", PythonRepr(b)));
      }
      if (op == "<") return Value::Bool(order < 0);
      if (op == ">") return Value::Bool(order > 0);
      if (op == "<=") return Value::Bool(order <= 0);
      return Value::Bool(order >= 0);
    }
    if (op == "+") {
      if (a.kind == Value::Kind::kString && b.kind == Value::Kind::kString) {
        return Value::Str(a.string + b.string);
      }
      if (a.kind == Value::Kind::kList && b.kind == Value::Kind::kList) {
        List joined = *a.list;
        joined.insert(joined.end(), b.list->begin(), b.list->end());
        return Value::MakeList(std::move(joined));
      }
    }
    if (op == "*" && a.kind == Value::Kind::kString && b.kind == Value::Kind::kInt) {
      if (b.integer * static_cast<int64_t>(a.string.size()) >
          static_cast<int64_t>(kMaxOutputBytes)) {
        return absl::ResourceExhaustedError("string repetition too large");
      }
      std::string s;
      for (int64_t k = 0; k < b.integer; ++k) s += a.string;
      return Value::Str(s);
    }
    if (a.IsNumber() && b.IsNumber()) {
      const bool integers = a.kind != Value::Kind::kFloat && b.kind != Value::Kind::kFloat;
      const int64_t x = a.kind == Value::Kind::kBool ? a.boolean : a.integer;
      const int64_t y = b.kind == Value::Kind::kBool ? b.boolean : b.integer;
      if (op == "+")
        return integers ? Value::Int(x + y) : Value::Float(a.AsDouble() + b.AsDouble());
      if (op == "-")
        return integers ? Value::Int(x - y) : Value::Float(a.AsDouble() - b.AsDouble());
      if (op == "*")
        return integers ? Value::Int(x * y) : Value::Float(a.AsDouble() * b.AsDouble());
      if (op == "/") {
        if (b.AsDouble() == 0) return TypeError("division by zero");
        return Value::Float(a.AsDouble() / b.AsDouble());
      }
      if (op == "//" || op == "%") {
        if (b.AsDouble() == 0) return TypeError("division by zero");
        if (integers) {
          int64_t q = x / y, r = x % y;
          if (r != 0 && ((r < 0) != (y < 0))) {
            --q;
            r += y;
          }
          return Value::Int(op == "//" ? q : r);
        }
        const double q = std::floor(a.AsDouble() / b.AsDouble());
        return Value::Float(op == "//" ? q : a.AsDouble() - q * b.AsDouble());
      }
      if (op == "**")
        return integers && y >= 0 ? Value::Int(static_cast<int64_t>(std::pow(x, y)))
                                  : Value::Float(std::pow(a.AsDouble(), b.AsDouble()));
    }
    return TypeError(absl::StrCat("unsupported operand types for ", op, ": ", PythonRepr(a),
                                  " and ", PythonRepr(b)));
  }

  absl::StatusOr<bool> EvalTest(const Expr& e) {
    auto subject = Eval(*e.args[0]);
    if (!subject.ok()) return subject.status();
    auto args = EvalArgs(e, 1);
    if (!args.ok()) return args.status();
    const Value& v = *subject;
    const std::string& name = e.name;
    using K = Value::Kind;
    if (name == "defined") return v.kind != K::kUndefined;
    if (name == "undefined") return v.kind == K::kUndefined;
    if (name == "none") return v.kind == K::kNone;
    if (name == "string") return v.kind == K::kString;
    if (name == "number") return v.kind == K::kInt || v.kind == K::kFloat;
    if (name == "integer") return v.kind == K::kInt;
    if (name == "float") return v.kind == K::kFloat;
    if (name == "boolean") return v.kind == K::kBool;
    if (name == "true") return v.kind == K::kBool && v.boolean;
    if (name == "false") return v.kind == K::kBool && !v.boolean;
    if (name == "mapping") return v.kind == K::kDict;
    if (name == "iterable") return v.kind == K::kList || v.kind == K::kDict || v.kind == K::kString;
    if (name == "sequence") return v.kind == K::kList || v.kind == K::kString || v.kind == K::kDict;
    if (name == "lower" || name == "upper") {
      if (v.kind != K::kString) return false;
      for (char c : v.string) {
        if (name == "lower" ? std::isupper(static_cast<unsigned char>(c))
                            : std::islower(static_cast<unsigned char>(c)))
          return false;
      }
      return true;
    }
    if (name == "odd" || name == "even" || name == "divisibleby") {
      if (v.kind != K::kInt) return TypeError(absl::StrCat("'is ", name, "' needs an integer"));
      if (name == "divisibleby") {
        if (args->empty() || (*args)[0].kind != K::kInt || (*args)[0].integer == 0) {
          return TypeError("'is divisibleby' needs a non-zero integer");
        }
        return v.integer % (*args)[0].integer == 0;
      }
      return (v.integer % 2 != 0) == (name == "odd");
    }
    if (args->empty()) return TypeError(absl::StrCat("'is ", name, "' needs an argument"));
    if (name == "equalto" || name == "eq") return Equal(v, (*args)[0]);
    if (name == "ne") return !Equal(v, (*args)[0]);
    if (name == "in") {
      const Value& container = (*args)[0];
      if (container.kind == K::kList) {
        for (const Value& item : *container.list) {
          if (Equal(item, v)) return true;
        }
        return false;
      }
      if (container.kind == K::kString && v.kind == K::kString)
        return container.string.find(v.string) != std::string::npos;
      if (container.kind == K::kDict) return container.dict->Find(ToText(v)) != nullptr;
      return false;
    }
    return TypeError(absl::StrCat("unknown test ", name));
  }

  static std::string Strip(const std::string& s, const std::string& chars, bool left, bool right) {
    const auto strip_char = [&](char c) {
      return chars.empty() ? std::isspace(static_cast<unsigned char>(c)) != 0
                           : chars.find(c) != std::string::npos;
    };
    size_t b = 0, e = s.size();
    if (left) {
      while (b < e && strip_char(s[b])) ++b;
    }
    if (right) {
      while (e > b && strip_char(s[e - 1])) --e;
    }
    return s.substr(b, e - b);
  }
  static std::string Upper(std::string s) {
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
  }
  static std::string Lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
  static std::string Title(const std::string& s) {
    std::string out = s;
    bool start = true;
    for (char& c : out) {
      const unsigned char u = static_cast<unsigned char>(c);
      if (std::isalpha(u)) {
        c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
        start = false;
      } else {
        start = true;
      }
    }
    return out;
  }
  static std::string Capitalize(const std::string& s) {
    std::string out = Lower(s);
    if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
    return out;
  }
  static std::string Replace(const std::string& s, const std::string& from, const std::string& to) {
    if (from.empty()) return s;
    std::string out;
    size_t pos = 0;
    while (true) {
      const size_t at = s.find(from, pos);
      if (at == std::string::npos) break;
      out += s.substr(pos, at - pos) + to;
      pos = at + from.size();
    }
    return out + s.substr(pos);
  }
  static Value Split(const std::string& s, const Value* separator) {
    List parts;
    if (separator == nullptr || separator->kind != Value::Kind::kString) {
      std::istringstream in(s);
      std::string word;
      while (in >> word) parts.push_back(Value::Str(word));
      return Value::MakeList(std::move(parts));
    }
    const std::string& sep = separator->string;
    if (sep.empty()) return Value::MakeList({Value::Str(s)});
    size_t pos = 0;
    while (true) {
      const size_t at = s.find(sep, pos);
      if (at == std::string::npos) break;
      parts.push_back(Value::Str(s.substr(pos, at - pos)));
      pos = at + sep.size();
    }
    parts.push_back(Value::Str(s.substr(pos)));
    return Value::MakeList(std::move(parts));
  }
  static std::optional<int64_t> Length(const Value& v) {
    switch (v.kind) {
      case Value::Kind::kString: {
        int64_t n = 0;  // characters, not bytes
        for (unsigned char c : v.string) n += (c & 0xC0) != 0x80;
        return n;
      }
      case Value::Kind::kList:
        return static_cast<int64_t>(v.list->size());
      case Value::Kind::kDict:
        return static_cast<int64_t>(v.dict->items.size());
      case Value::Kind::kUndefined:
        return 0;
      default:
        return std::nullopt;
    }
  }

  absl::StatusOr<Value> EvalCall(const Expr& e) {
    const Expr& callee = *e.args[0];
    auto args = EvalArgs(e, 1);
    if (!args.ok()) return args.status();
    auto kwargs = EvalKwargs(e);
    if (!kwargs.ok()) return kwargs.status();
    const auto arg = [&](size_t k) -> const Value* {
      return k < args->size() ? &(*args)[k] : nullptr;
    };
    const auto arg_string = [&](size_t k) {
      return arg(k) && arg(k)->kind == Value::Kind::kString ? arg(k)->string : std::string();
    };
    if (callee.kind == Expr::Kind::kName) {
      if (callee.name == "raise_exception") {
        return absl::FailedPreconditionError(
            absl::StrCat("chat template raised: ", arg(0) ? ToText(*arg(0)) : ""));
      }
      if (callee.name == "namespace") {
        Value ns = Value::MakeDict();
        ns.is_namespace = true;
        for (auto& [key, value] : *kwargs) ns.dict->Set(key, value);
        return ns;
      }
      if (callee.name == "range") {
        int64_t start = 0, stop = 0, step = 1;
        for (size_t k = 0; k < args->size(); ++k) {
          if ((*args)[k].kind != Value::Kind::kInt) return TypeError("range() needs integers");
        }
        if (args->size() == 1) {
          stop = (*args)[0].integer;
        } else if (args->size() >= 2) {
          start = (*args)[0].integer;
          stop = (*args)[1].integer;
          if (args->size() >= 3) step = (*args)[2].integer;
        }
        if (step == 0) return TypeError("range() step cannot be zero");
        List items;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
          if (static_cast<int64_t>(items.size()) >= kMaxLoopIterations) {
            return absl::ResourceExhaustedError("range() too long");
          }
          items.push_back(Value::Int(i));
        }
        return Value::MakeList(std::move(items));
      }
      return absl::InvalidArgumentError(absl::StrCat("unsupported function '", callee.name, "()'"));
    }
    if (callee.kind != Expr::Kind::kAttr) return TypeError("call of a non-function");
    auto object = Eval(*callee.args[0]);
    if (!object.ok()) return object;
    const std::string& method = callee.name;
    const Value& self = *object;
    if (self.kind == Value::Kind::kString) {
      const std::string& s = self.string;
      if (method == "strip") return Value::Str(Strip(s, arg_string(0), true, true));
      if (method == "lstrip") return Value::Str(Strip(s, arg_string(0), true, false));
      if (method == "rstrip") return Value::Str(Strip(s, arg_string(0), false, true));
      if (method == "startswith") return Value::Bool(s.rfind(arg_string(0), 0) == 0);
      if (method == "endswith") {
        const std::string suffix = arg_string(0);
        return Value::Bool(s.size() >= suffix.size() &&
                           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0);
      }
      if (method == "upper") return Value::Str(Upper(s));
      if (method == "lower") return Value::Str(Lower(s));
      if (method == "title") return Value::Str(Title(s));
      if (method == "capitalize") return Value::Str(Capitalize(s));
      if (method == "replace") return Value::Str(Replace(s, arg_string(0), arg_string(1)));
      if (method == "split") return Split(s, arg(0));
      if (method == "find") {
        const size_t at = s.find(arg_string(0));
        return Value::Int(at == std::string::npos ? -1 : static_cast<int64_t>(at));
      }
      if (method == "count") {
        const std::string needle = arg_string(0);
        int64_t n = 0;
        for (size_t at = s.find(needle); !needle.empty() && at != std::string::npos;
             at = s.find(needle, at + needle.size()))
          ++n;
        return Value::Int(n);
      }
      if (method == "splitlines") {
        Value lines = Split(s, nullptr);
        List items;
        std::istringstream in(s);
        std::string line;
        while (std::getline(in, line)) items.push_back(Value::Str(line));
        return Value::MakeList(std::move(items));
      }
      if (method == "isdigit" || method == "isspace" || method == "isalpha") {
        if (s.empty()) return Value::Bool(false);
        for (unsigned char c : s) {
          const bool ok = method == "isdigit"   ? std::isdigit(c)
                          : method == "isspace" ? std::isspace(c)
                                                : std::isalpha(c);
          if (!ok) return Value::Bool(false);
        }
        return Value::Bool(true);
      }
      if (method == "join" && arg(0) && arg(0)->kind == Value::Kind::kList) {
        std::string out;
        for (size_t k = 0; k < arg(0)->list->size(); ++k) {
          if (k) out += s;
          out += ToText((*arg(0)->list)[k]);
        }
        return Value::Str(out);
      }
    }
    if (self.kind == Value::Kind::kDict) {
      if (method == "items" || method == "keys" || method == "values") {
        List items;
        for (const auto& [key, value] : self.dict->items) {
          if (method == "items") {
            items.push_back(Value::MakeList({Value::Str(key), value}));
          } else {
            items.push_back(method == "keys" ? Value::Str(key) : value);
          }
        }
        return Value::MakeList(std::move(items));
      }
      if (method == "get") {
        const Value* found = self.dict->Find(arg(0) ? ToText(*arg(0)) : "");
        if (found) return *found;
        return arg(1) ? *arg(1) : Value::None();
      }
    }
    if (self.kind == Value::Kind::kUndefined) {
      return TypeError(absl::StrCat("method '", method, "()' called on an undefined value"));
    }
    return TypeError(absl::StrCat("no method '", method, "()' on ", PythonRepr(self)));
  }

  // selectattr/rejectattr(attribute[, test[, value]]).
  absl::StatusOr<bool> AttributeTest(const Value& item, const std::vector<Value>& args) {
    const Value attribute = args.empty() ? Value() : GetAttr(item, ToText(args[0]));
    if (args.size() < 2) return attribute.Truthy();
    const std::string test = ToText(args[1]);
    if (test == "defined") return attribute.kind != Value::Kind::kUndefined;
    if (test == "undefined") return attribute.kind == Value::Kind::kUndefined;
    if (test == "none") return attribute.kind == Value::Kind::kNone;
    if (test == "string") return attribute.kind == Value::Kind::kString;
    if (args.size() >= 3) {
      if (test == "equalto" || test == "eq" || test == "==") return Equal(attribute, args[2]);
      if (test == "ne" || test == "!=") return !Equal(attribute, args[2]);
      if (test == "in" && args[2].kind == Value::Kind::kList) {
        for (const Value& v : *args[2].list) {
          if (Equal(v, attribute)) return true;
        }
        return false;
      }
    }
    return absl::InvalidArgumentError(absl::StrCat("unsupported test '", test, "' in selectattr"));
  }

  absl::StatusOr<Value> EvalFilter(const Expr& e) {
    auto subject = Eval(*e.args[0]);
    if (!subject.ok()) return subject;
    auto args = EvalArgs(e, 1);
    if (!args.ok()) return args.status();
    auto kwargs = EvalKwargs(e);
    if (!kwargs.ok()) return kwargs.status();
    const Value& v = *subject;
    const std::string& name = e.name;
    using K = Value::Kind;
    if (name == "trim")
      return Value::Str(Strip(ToText(v), args->empty() ? "" : ToText((*args)[0]), true, true));
    if (name == "length" || name == "count" || name == "wordcount") {
      if (name == "wordcount")
        return Value::Int(static_cast<int64_t>(Split(ToText(v), nullptr).list->size()));
      auto n = Length(v);
      if (!n) return TypeError(absl::StrCat("object of type ", PythonRepr(v), " has no length"));
      return Value::Int(*n);
    }
    if (name == "tojson") {
      int indent = -1;
      auto it = kwargs->find("indent");
      if (it != kwargs->end() && it->second.kind == K::kInt)
        indent = static_cast<int>(std::clamp<int64_t>(it->second.integer, 0, 64));
      if (!args->empty() && (*args)[0].kind == K::kInt)
        indent = static_cast<int>(std::clamp<int64_t>((*args)[0].integer, 0, 64));
      std::string out;
      ToJson(v, indent, 0, &out);
      return Value::Str(out);
    }
    if (name == "default" || name == "d") {
      const bool boolean = args->size() >= 2 && (*args)[1].Truthy();
      const bool use_default = boolean ? !v.Truthy() : v.kind == K::kUndefined;
      if (use_default) return args->empty() ? Value::Str("") : (*args)[0];
      return v;
    }
    if (name == "upper") return Value::Str(Upper(ToText(v)));
    if (name == "lower") return Value::Str(Lower(ToText(v)));
    if (name == "capitalize") return Value::Str(Capitalize(ToText(v)));
    if (name == "title") return Value::Str(Title(ToText(v)));
    if (name == "string") return Value::Str(ToText(v));
    if (name == "safe" || name == "e" || name == "escape") return v;
    if (name == "replace") {
      if (args->size() < 2) return TypeError("replace needs two arguments");
      return Value::Str(Replace(ToText(v), ToText((*args)[0]), ToText((*args)[1])));
    }
    if (name == "int") {
      if (v.kind == K::kInt) return v;
      if (v.kind == K::kFloat) return Value::Int(static_cast<int64_t>(v.real));
      if (v.kind == K::kBool) return Value::Int(v.boolean);
      try {
        return Value::Int(std::stoll(ToText(v)));
      } catch (const std::exception&) {
        return Value::Int(0);
      }
    }
    if (name == "float") {
      if (v.IsNumber()) return Value::Float(v.AsDouble());
      try {
        return Value::Float(std::stod(ToText(v)));
      } catch (const std::exception&) {
        return Value::Float(0);
      }
    }
    if (name == "abs") {
      if (v.kind == K::kInt) return Value::Int(v.integer < 0 ? -v.integer : v.integer);
      if (v.kind == K::kFloat) return Value::Float(std::fabs(v.real));
      return TypeError("abs of a non-number");
    }
    if (name == "round") {
      if (!v.IsNumber()) return TypeError("round of a non-number");
      return Value::Float(std::round(v.AsDouble()));
    }
    if (name == "indent") {
      const int width = args->empty() || (*args)[0].kind != K::kInt
                            ? 4
                            : static_cast<int>(std::clamp<int64_t>((*args)[0].integer, 0, 64));
      const std::string pad(width, ' ');
      std::string out;
      for (char c : ToText(v)) {
        out.push_back(c);
        if (c == '\n') out += pad;
      }
      return Value::Str(out);
    }
    // Filters over sequences.
    List items;
    if (v.kind == K::kList) {
      items = *v.list;
    } else if (v.kind == K::kString) {
      for (char c : v.string) items.push_back(Value::Str(std::string(1, c)));
    } else if (v.kind == K::kDict) {
      for (const auto& [key, value] : v.dict->items) {
        items.push_back(name == "items" || name == "dictsort"
                            ? Value::MakeList({Value::Str(key), value})
                            : Value::Str(key));
      }
    } else if (v.kind != K::kUndefined) {
      return TypeError(absl::StrCat("filter '", name, "' needs a sequence, not ", PythonRepr(v)));
    }
    if (name == "first") return items.empty() ? Value() : items.front();
    if (name == "last") return items.empty() ? Value() : items.back();
    if (name == "list" || name == "items" || name == "dictsort")
      return Value::MakeList(std::move(items));
    if (name == "reverse") {
      if (v.kind == K::kString) return Value::Str(std::string(v.string.rbegin(), v.string.rend()));
      std::reverse(items.begin(), items.end());
      return Value::MakeList(std::move(items));
    }
    if (name == "join") {
      const std::string separator = args->empty() ? "" : ToText((*args)[0]);
      std::string out;
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += separator;
        out += ToText(items[k]);
      }
      return Value::Str(out);
    }
    if (name == "selectattr" || name == "rejectattr") {
      List kept;
      for (const Value& item : items) {
        auto pass = AttributeTest(item, *args);
        if (!pass.ok()) return pass.status();
        if (*pass == (name == "selectattr")) kept.push_back(item);
      }
      return Value::MakeList(std::move(kept));
    }
    if (name == "map") {
      auto attribute = kwargs->find("attribute");
      List mapped;
      for (const Value& item : items) {
        if (attribute != kwargs->end()) {
          mapped.push_back(GetAttr(item, ToText(attribute->second)));
        } else if (!args->empty() && ToText((*args)[0]) == "string") {
          mapped.push_back(Value::Str(ToText(item)));
        } else if (!args->empty() && (ToText((*args)[0]) == "trim")) {
          mapped.push_back(Value::Str(Strip(ToText(item), "", true, true)));
        } else {
          return absl::InvalidArgumentError(
              "unsupported map() form (attribute=, 'string', 'trim')");
        }
      }
      return Value::MakeList(std::move(mapped));
    }
    if (name == "unique") {
      List kept;
      for (const Value& item : items) {
        bool seen = false;
        for (const Value& k : kept) seen = seen || Equal(k, item);
        if (!seen) kept.push_back(item);
      }
      return Value::MakeList(std::move(kept));
    }
    if (name == "sum") {
      Value total = Value::Int(0);
      for (const Value& item : items) {
        if (!item.IsNumber()) return TypeError("sum of non-numbers");
        total = total.kind == K::kInt && item.kind != K::kFloat
                    ? Value::Int(total.integer + item.integer)
                    : Value::Float(total.AsDouble() + item.AsDouble());
      }
      return total;
    }
    return absl::InvalidArgumentError(absl::StrCat("unsupported filter '", name, "' here"));
  }

  std::vector<std::map<std::string, Value>> scopes_;
  int64_t iterations_ = 0;
};

}  // namespace

struct ChatTemplateProgram {
  Body body;
};

absl::StatusOr<ChatTemplate> ChatTemplate::Compile(const std::string& source) {
  auto chunks = SplitTemplate(source);
  if (!chunks.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("chat template: ", chunks.status().message()));
  }
  TemplateParser parser(std::move(*chunks));
  auto body = parser.ParseTop();
  if (!body.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("chat template: ", body.status().message()));
  }
  ChatTemplate compiled;
  compiled.source_ = source;
  auto program = std::make_shared<ChatTemplateProgram>();
  program->body = std::move(*body);
  compiled.program_ = std::move(program);
  return compiled;
}

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 bool add_generation_prompt,
                                                 const std::string& bos_token,
                                                 const std::string& eos_token) const {
  if (!program_) return absl::FailedPreconditionError("chat template was never compiled");
  List message_values;
  for (const ChatMessage& message : messages) {
    Value m = Value::MakeDict();
    m.dict->Set("role", Value::Str(message.role));
    m.dict->Set("content", Value::Str(message.content));
    message_values.push_back(m);
  }
  std::map<std::string, Value> globals;
  globals["messages"] = Value::MakeList(std::move(message_values));
  globals["add_generation_prompt"] = Value::Bool(add_generation_prompt);
  globals["bos_token"] = Value::Str(bos_token);
  globals["eos_token"] = Value::Str(eos_token);
  Renderer renderer(std::move(globals));
  std::string out;
  Renderer::Flow flow = Renderer::Flow::kNormal;
  absl::Status status = renderer.RenderBody(program_->body, &flow, &out);
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<ChatTemplateConfig> LoadChatTemplateConfig(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  ChatTemplateConfig config;
  try {
    const nlohmann::json root = nlohmann::json::parse(buffer.str());
    const auto special = [&](const char* key) -> std::string {
      if (!root.contains(key)) return "";
      const auto& value = root[key];
      if (value.is_string()) return value.get<std::string>();
      if (value.is_object() && value.contains("content") && value["content"].is_string()) {
        return value["content"].get<std::string>();
      }
      return "";
    };
    config.bos_token = special("bos_token");
    config.eos_token = special("eos_token");
    if (root.contains("chat_template") && !root["chat_template"].is_null()) {
      const auto& field = root["chat_template"];
      std::optional<std::string> source;
      if (field.is_string()) {
        source = field.get<std::string>();
      } else if (field.is_array()) {
        for (const auto& entry : field) {
          if (entry.value("name", "") == "default") source = entry.value("template", "");
        }
        if (!source) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": chat_template is a list without a 'default' entry"));
        }
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": chat_template must be a string or a list, not ", field.type_name()));
      }
      auto compiled = ChatTemplate::Compile(*source);
      if (!compiled.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", compiled.status().message()));
      }
      config.chat_template = std::move(*compiled);
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad JSON: ", e.what()));
  }
  return config;
}

}  // namespace attnscope
