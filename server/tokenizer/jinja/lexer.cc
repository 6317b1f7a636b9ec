#include "server/tokenizer/jinja/lexer.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/tokenizer/utf8_util.h"

namespace attnscope::jinja {

namespace {

bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// Jinja2: every \r\n, \r and \n becomes \n; with keep_trailing_newline=False one trailing
// newline is dropped.
std::string NormaliseNewlines(const std::string& src) {
  std::string out;
  out.reserve(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
    } else {
      out.push_back(src[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// End of a tag body starting at `pos`: the first `close` outside string literals and outside
// brackets opened in the tag (Jinja2's lexer balances them, so `{{ {'a': {}} }}` works).
size_t FindTagEnd(const std::string& src, size_t pos, const std::string& close) {
  char quote = 0;
  int depth = 0;
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
      continue;
    }
    if (depth == 0) {
      // The end marker may carry a whitespace-control sign: `-%}`, `+}}`.
      if (src.compare(i, close.size(), close) == 0) return i;
    }
    if (c == '(' || c == '[' || c == '{') {
      ++depth;
    } else if ((c == ')' || c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return std::string::npos;
}

// Python's unicode-escape decoding of a string literal body, as Jinja2 applies it.
absl::StatusOr<std::string> Unescape(const std::string& body) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c != '\\' || i + 1 >= body.size()) {
      out.push_back(c);
      continue;
    }
    const char e = body[++i];
    switch (e) {
      case '\n':
        break;
      case '\\':
      case '\'':
      case '"':
        out.push_back(e);
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 'a':
        out.push_back('\a');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case 'x':
      case 'u':
      case 'U': {
        const size_t width = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        if (i + width >= body.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("truncated \\", std::string(1, e), " escape in a string literal"));
        }
        uint32_t cp = 0;
        for (size_t k = 1; k <= width; ++k) {
          const char h = body[i + k];
          if (!std::isxdigit(static_cast<unsigned char>(h))) {
            return absl::InvalidArgumentError(
                absl::StrCat("bad \\", std::string(1, e), " escape in a string literal"));
          }
          cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h))
                                                   ? h - '0'
                                                   : std::tolower(h) - 'a' + 10);
        }
        if (cp > 0x10FFFF) return absl::InvalidArgumentError("escape beyond U+10FFFF");
        utf8::AppendCodePoint(static_cast<int32_t>(cp), &out);
        i += width;
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          uint32_t cp = static_cast<uint32_t>(e - '0');
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7';
               ++k) {
            cp = cp * 8 + static_cast<uint32_t>(body[++i] - '0');
          }
          utf8::AppendCodePoint(static_cast<int32_t>(cp), &out);
        } else {
          out.push_back('\\');
          out.push_back(e);
        }
    }
  }
  return out;
}

// A number literal at src[i]: Jinja2's integer (decimal, 0b, 0o, 0x, with `_`) or float
// (fraction and/or exponent) grammar. Sets *end past it.
absl::StatusOr<Token> LexNumber(const std::string& src, size_t i, size_t* end) {
  const auto digits_run = [&](size_t j, auto is_digit) {
    // (digit+ '_')* digit+ : underscores only between digits.
    size_t k = j;
    while (k < src.size() && (is_digit(src[k]) || (src[k] == '_' && k > j && k + 1 < src.size() &&
                                                   is_digit(src[k + 1])))) {
      ++k;
    }
    return k;
  };
  const auto dec = [](char c) { return IsDigit(c); };
  std::string clean;
  if (src[i] == '0' && i + 1 < src.size() && std::strchr("bBoOxX", src[i + 1]) != nullptr) {
    const char base_char = static_cast<char>(std::tolower(src[i + 1]));
    const int base = base_char == 'b' ? 2 : base_char == 'o' ? 8 : 16;
    size_t j = i + 2;
    while (j < src.size() &&
           (src[j] == '_' || (base == 16 ? std::isxdigit(static_cast<unsigned char>(src[j]))
                                         : src[j] >= '0' && src[j] < '0' + base))) {
      if (src[j] != '_') clean.push_back(src[j]);
      ++j;
    }
    if (clean.empty()) return absl::InvalidArgumentError("bad number literal");
    errno = 0;
    const long long value = std::strtoll(clean.c_str(), nullptr, base);
    if (errno == ERANGE) {
      return absl::InvalidArgumentError(
          absl::StrCat("integer literal '", src.substr(i, j - i), "' is out of range"));
    }
    *end = j;
    Token token{Token::Kind::kInt, src.substr(i, j - i)};
    token.integer = value;
    return token;
  }
  size_t j = digits_run(i, dec);
  bool is_float = false;
  if (j + 1 < src.size() && src[j] == '.' && IsDigit(src[j + 1])) {
    is_float = true;
    j = digits_run(j + 1, dec);
  }
  if (j < src.size() && (src[j] == 'e' || src[j] == 'E')) {
    size_t k = j + 1;
    if (k < src.size() && (src[k] == '+' || src[k] == '-')) ++k;
    if (k < src.size() && IsDigit(src[k])) {
      is_float = true;
      j = digits_run(k, dec);
    }
  }
  for (size_t k = i; k < j; ++k) {
    if (src[k] != '_') clean.push_back(src[k]);
  }
  *end = j;
  Token token{is_float ? Token::Kind::kFloat : Token::Kind::kInt, clean};
  errno = 0;
  if (is_float) {
    token.real = std::strtod(clean.c_str(), nullptr);  // overflow gives inf, as Python's float()
  } else {
    token.integer = std::strtoll(clean.c_str(), nullptr, 10);
    if (errno == ERANGE) {
      return absl::InvalidArgumentError(
          absl::StrCat("integer literal '", clean, "' is out of the 64-bit range"));
    }
  }
  return token;
}

}  // namespace

absl::StatusOr<std::vector<Chunk>> SplitTemplate(const std::string& source) {
  const std::string src = NormaliseNewlines(source);
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
    if (open != std::string::npos && open + 1 >= src.size()) open = std::string::npos;
    std::string piece = src.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
    if (strip_next_leading) {
      size_t k = 0;
      while (k < piece.size() && IsSpace(piece[k])) ++k;
      line_starting = k > 0 && piece[k - 1] == '\n';
      piece.erase(0, k);
    } else if (trim_next_newline) {
      line_starting = false;
      if (!piece.empty() && piece[0] == '\n') {
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
      while (end > 0 && IsSpace(piece[end - 1])) --end;
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
    } else if (end > body && src[end - 1] == '+' && kind != '{') {
      --body_end;
    } else if (kind != '{') {
      trim_next_newline = true;
    }
    const std::string inner = src.substr(body, body_end - body);
    if (kind == '{') {
      flush_text();
      chunks.push_back({Chunk::Kind::kExpression, inner, open});
    } else if (kind == '%') {
      // {% raw %}...{% endraw %} is copied verbatim.
      std::string keyword = inner;
      keyword.erase(0, keyword.find_first_not_of(" \t\n\r"));
      keyword.erase(keyword.find_last_not_of(" \t\n\r") + 1);
      if (keyword == "raw") {
        const size_t raw_end = src.find("endraw", end);
        const size_t raw_tag = raw_end == std::string::npos ? raw_end : src.rfind("{%", raw_end);
        if (raw_tag == std::string::npos || raw_tag < end + 2) {
          return absl::InvalidArgumentError("{% raw %} without {% endraw %}");
        }
        std::string raw = src.substr(end + 2, raw_tag - end - 2);
        if (raw_tag + 2 < src.size() && src[raw_tag + 2] == '-') {
          while (!raw.empty() && IsSpace(raw.back())) raw.pop_back();
        }
        text += raw;
        const size_t raw_close = src.find("%}", raw_end);
        if (raw_close == std::string::npos) {
          return absl::InvalidArgumentError("unterminated {% endraw %}");
        }
        strip_next_leading = raw_close > 0 && src[raw_close - 1] == '-';
        trim_next_newline = !strip_next_leading;
        pos = raw_close + 2;
        continue;
      }
      flush_text();
      chunks.push_back({Chunk::Kind::kStatement, inner, open});
    }
    pos = end + 2;
  }
  flush_text();
  return chunks;
}

absl::StatusOr<std::vector<Token>> LexExpression(const std::string& src) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < src.size()) {
    const char c = src[i];
    if (IsSpace(c)) {
      ++i;
      continue;
    }
    if (IsNameStart(c)) {
      size_t j = i;
      while (j < src.size() && IsNameChar(src[j])) ++j;
      tokens.push_back({Token::Kind::kName, src.substr(i, j - i)});
      i = j;
      continue;
    }
    if (IsDigit(c)) {
      size_t end = i;
      auto token = LexNumber(src, i, &end);
      if (!token.ok()) return token.status();
      tokens.push_back(std::move(*token));
      i = end;
      continue;
    }
    if (c == '\'' || c == '"') {
      size_t j = i + 1;
      while (j < src.size() && src[j] != c) j += src[j] == '\\' ? 2 : 1;
      if (j >= src.size()) return absl::InvalidArgumentError("unterminated string literal");
      auto value = Unescape(src.substr(i + 1, j - i - 1));
      if (!value.ok()) return value.status();
      tokens.push_back({Token::Kind::kString, std::move(*value)});
      i = j + 1;
      continue;
    }
    static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                 "/",  "%",  "~",  "<",  ">",  "(",  ")", "[", "]",
                                 "{",  "}",  ",",  ":",  ".",  "|",  "=", ";"};
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

}  // namespace attnscope::jinja
