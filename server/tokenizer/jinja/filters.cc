// Jinja2's builtin filters (jinja2/filters.py) and transformers' tojson, one table entry each;
// those over sequences and mappings are in sequence_filters.cc.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "absl/strings/str_cat.h"
#include "server/tokenizer/jinja/builtins.h"
#include "server/tokenizer/jinja/json.h"

namespace attnscope::jinja {

namespace {

using Result = absl::StatusOr<Value>;

// Jinja2's soft_str: what string filters see.
std::string Text(const Value& v) { return ToText(v); }

absl::StatusOr<int64_t> Length(const Value& v) {
  if (v.is_string()) return static_cast<int64_t>(CodePointCount(v.str()));
  if (v.is_list() && !v.is_generator()) return static_cast<int64_t>(v.list().size());
  if (v.is_dict() && !v.dict().is_namespace) return static_cast<int64_t>(v.dict().items.size());
  if (v.is_undefined()) return 0;
  return TypeError(absl::StrCat("object of type '", v.TypeName(), "' has no len()"));
}

Result Default(Renderer&, const Value& v, CallArgs& args) {
  const Value* fallback = args.Get(0, "default_value");
  const bool boolean = Flag(args.Get(1, "boolean"));
  if (v.is_undefined() || (boolean && !v.Truthy())) return fallback ? *fallback : Value::Str("");
  return v;
}

Result Length(Renderer&, const Value& v, CallArgs&) {
  auto n = Length(v);
  if (!n.ok()) return n.status();
  return Value::Int(*n);
}

Result ToJsonFilter(Renderer& r, const Value& v, CallArgs& args) {
  JsonOptions options;
  options.ensure_ascii = Flag(args.Get(0, "ensure_ascii"));
  const Value* indent = args.Get(1, "indent");
  const Value* separators = args.Get(2, "separators");
  options.sort_keys = Flag(args.Get(3, "sort_keys"));
  if (indent && !indent->is_none()) {
    options.has_indent = true;
    if (indent->is_string()) {
      options.indent = indent->str();
    } else if (indent->IsInteger()) {
      options.indent =
          std::string(static_cast<size_t>(std::clamp<int64_t>(indent->integer(), 0, 64)), ' ');
    } else {
      return TypeError("tojson indent must be an integer or a string");
    }
    options.item_separator = ",";
  }
  if (separators && !separators->is_none()) {
    if (!separators->is_list() || separators->list().size() != 2) {
      return TypeError("tojson separators must be a pair of strings");
    }
    options.item_separator = ToText(separators->list()[0]);
    options.key_separator = ToText(separators->list()[1]);
  }
  auto out = ToJson(r, v, options);
  if (!out.ok()) return out.status();
  return Value::Str(std::move(*out));
}

Result FromJsonFilter(Renderer& r, const Value& v, CallArgs&) {
  auto value = ValueFromJsonText(Text(v), "from_json");
  if (!value.ok()) return value.status();
  (void)r;
  return *value;
}

Result Upper(Renderer&, const Value& v, CallArgs&) { return Value::Str(PyUpper(Text(v))); }
Result Lower(Renderer&, const Value& v, CallArgs&) { return Value::Str(PyLower(Text(v))); }
Result Capitalize(Renderer&, const Value& v, CallArgs&) {
  return Value::Str(PyCapitalize(Text(v)));
}
Result StringFilter(Renderer&, const Value& v, CallArgs&) { return Value::Str(Text(v)); }
Result Safe(Renderer&, const Value& v, CallArgs&) { return v; }

Result Title(Renderer&, const Value& v, CallArgs&) {
  // Jinja2's do_title: words begin after '-', whitespace, '(', '{', '[' or '<'.
  const std::string s = Text(v);
  std::string out;
  bool start = true;
  for (const std::string& c : CodePoints(s)) {
    const bool separator = c.size() == 1 && (std::isspace(static_cast<unsigned char>(c[0])) ||
                                             std::strchr("-({[<", c[0]) != nullptr);
    if (separator) {
      out += c;
      start = true;
    } else {
      out += start ? PyUpper(c) : PyLower(c);
      start = false;
    }
  }
  return Value::Str(std::move(out));
}

Result Escape(Renderer& r, const Value& v, CallArgs&) {
  std::string out;
  for (char c : Text(v)) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  absl::Status status = r.CheckString(out.size());
  if (!status.ok()) return status;
  return Value::Str(std::move(out));
}

Result Trim(Renderer&, const Value& v, CallArgs& args) {
  const Value* chars = args.Get(0, "chars");
  return Value::Str(PyStrip(Text(v), chars && !chars->is_none() ? chars : nullptr, true, true));
}

Result Replace(Renderer& r, const Value& v, CallArgs& args) {
  const Value* old = args.Get(0, "old");
  const Value* replacement = args.Get(1, "new");
  const Value* count = args.Get(2, "count");
  if (!old || !replacement) return TypeError("replace() needs old and new");
  auto out = PyReplace(r, Text(v), ToText(*old), ToText(*replacement),
                       count && count->IsInteger() ? count->integer() : -1);
  if (!out.ok()) return out.status();
  return Value::Str(std::move(*out));
}

Result Int(Renderer&, const Value& v, CallArgs& args) {
  const Value* fallback = args.Get(0, "default");
  const Value* base_arg = args.Get(1, "base");
  const int base = base_arg && base_arg->IsInteger() ? static_cast<int>(base_arg->integer()) : 10;
  if (v.is_undefined()) return UndefinedError(v);
  if (v.IsInteger()) return Value::Int(v.integer());
  if (v.is_float() && std::isfinite(v.real()) && std::fabs(v.real()) < 9.2e18) {
    return Value::Int(static_cast<int64_t>(v.real()));
  }
  if (v.is_string()) {
    std::string s = PyStrip(v.str(), nullptr, true, true);
    std::string digits;
    for (size_t k = 0; k < s.size(); ++k) {
      if (s[k] == '_' && k > 0 && k + 1 < s.size() &&
          std::isalnum(static_cast<unsigned char>(s[k - 1])) &&
          std::isalnum(static_cast<unsigned char>(s[k + 1]))) {
        continue;
      }
      digits.push_back(s[k]);
    }
    if (!digits.empty()) {
      char* end = nullptr;
      errno = 0;
      const long long parsed = std::strtoll(digits.c_str(), &end, base);
      if (*end == '\0' && errno == 0 && !std::isspace(static_cast<unsigned char>(digits[0]))) {
        return Value::Int(parsed);
      }
      const double real = std::strtod(digits.c_str(), &end);
      if (*end == '\0' && std::isfinite(real) && std::fabs(real) < 9.2e18) {
        return Value::Int(static_cast<int64_t>(real));
      }
    }
  }
  return fallback ? *fallback : Value::Int(0);
}

Result Float(Renderer&, const Value& v, CallArgs& args) {
  const Value* fallback = args.Get(0, "default");
  if (v.is_undefined()) return UndefinedError(v);
  if (v.IsNumber()) return Value::Float(v.real());
  if (v.is_string()) {
    const std::string s = PyStrip(v.str(), nullptr, true, true);
    char* end = nullptr;
    const double real = std::strtod(s.c_str(), &end);
    if (!s.empty() && *end == '\0' && s.find_first_of("xXpP") == std::string::npos) {
      return Value::Float(real);
    }
  }
  return fallback ? *fallback : Value::Float(0);
}

Result Abs(Renderer&, const Value& v, CallArgs&) {
  if (v.IsInteger()) {
    if (v.integer() == INT64_MIN) return TypeError("integer overflow in abs");
    return Value::Int(std::llabs(v.integer()));
  }
  if (v.is_float()) return Value::Float(std::fabs(v.real()));
  if (v.is_undefined()) return UndefinedError(v);
  return TypeError(absl::StrCat("bad operand type for abs(): '", v.TypeName(), "'"));
}

Result Round(Renderer&, const Value& v, CallArgs& args) {
  const Value* precision_arg = args.Get(0, "precision");
  const Value* method_arg = args.Get(1, "method");
  const int64_t precision =
      precision_arg && precision_arg->IsInteger() ? precision_arg->integer() : 0;
  const std::string method = method_arg ? ToText(*method_arg) : "common";
  if (method != "common" && method != "ceil" && method != "floor") {
    return TypeError("method must be common, ceil or floor");
  }
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.IsNumber())
    return TypeError(absl::StrCat("type ", v.TypeName(), " doesn't define __round__ method"));
  if (method == "common" && v.IsInteger()) return Value::Int(v.integer());
  const int p = static_cast<int>(std::clamp<int64_t>(precision, -300, 300));
  const double x = v.real();
  if (method == "common") {
    if (p >= 0) {
      char buffer[512];
      std::snprintf(buffer, sizeof(buffer), "%.*f", std::min(p, 200), x);
      return Value::Float(std::strtod(buffer, nullptr));
    }
    const double scale = std::pow(10.0, -p);
    return Value::Float(std::nearbyint(x / scale) * scale);
  }
  const double scale = std::pow(10.0, p);
  return Value::Float((method == "ceil" ? std::ceil(x * scale) : std::floor(x * scale)) / scale);
}

Result Indent(Renderer& r, const Value& v, CallArgs& args) {
  const Value* width = args.Get(0, "width");
  const bool first = Flag(args.Get(1, "first"));
  const bool blank = Flag(args.Get(2, "blank"));
  std::string indention;
  if (width && width->is_string()) {
    indention = width->str();
  } else {
    indention = std::string(
        static_cast<size_t>(std::clamp<int64_t>(width ? width->integer() : 4, 0, 256)), ' ');
  }
  std::string s = Text(v) + "\n";
  std::vector<std::string> lines;
  {
    size_t start = 0;
    for (size_t k = 0; k < s.size(); ++k) {
      if (s[k] == '\n') {
        lines.push_back(s.substr(start, k - start));
        start = k + 1;
      }
    }
  }
  std::string out;
  for (size_t k = 0; k < lines.size(); ++k) {
    if (k > 0) {
      out += "\n";
      if (blank || !lines[k].empty()) out += indention;
    }
    out += lines[k];
    absl::Status status = r.CheckString(out.size());
    if (!status.ok()) return status;
  }
  if (first) out = indention + out;
  return Value::Str(std::move(out));
}

Result Center(Renderer& r, const Value& v, CallArgs& args) {
  const Value* width = args.Get(0, "width");
  const std::string s = Text(v);
  const int64_t w = width && width->IsInteger() ? width->integer() : 80;
  const int64_t n = static_cast<int64_t>(CodePointCount(s));
  if (w <= n) return Value::Str(s);
  absl::Status status = r.CheckString(static_cast<size_t>(w));
  if (!status.ok()) return status;
  const int64_t total = w - n;
  const int64_t left = total / 2 + (total & w & 1);
  return Value::Str(std::string(static_cast<size_t>(left), ' ') + s +
                    std::string(static_cast<size_t>(total - left), ' '));
}

Result Format(Renderer& r, const Value& v, CallArgs& args) {
  if (!args.keyword.empty() && !args.positional.empty()) {
    return TypeError("can't handle positional and keyword arguments at the same time");
  }
  std::vector<Value> values = args.positional;
  if (!args.keyword.empty()) {
    auto dict = Value::MakeDict();
    for (auto& [k, value] : args.keyword) dict.dict().Set(k, value);
    values = {dict};
  }
  auto out = PercentFormat(r, Text(v), values);
  if (!out.ok()) return out.status();
  return Value::Str(std::move(*out));
}

Result Attr(Renderer& r, const Value& v, CallArgs& args) {
  const Value* name = args.Get(0, "name");
  if (!name) return TypeError("attr() needs a name");
  return r.GetAttr(v, ToText(*name));
}

Result WordCount(Renderer&, const Value& v, CallArgs&) {
  int64_t words = 0;
  bool in_word = false;
  for (unsigned char c : Text(v)) {
    const bool word = std::isalnum(c) || c == '_' || c >= 0x80;
    if (word && !in_word) ++words;
    in_word = word;
  }
  return Value::Int(words);
}

struct FilterEntry {
  const char* name;
  FilterFunction function;
};

constexpr FilterEntry kFilters[] = {
    {"abs", Abs},
    {"attr", Attr},
    {"capitalize", Capitalize},
    {"center", Center},
    {"count", Length},
    {"d", Default},
    {"default", Default},
    {"e", Escape},
    {"escape", Escape},
    {"float", Float},
    {"forceescape", Escape},
    {"format", Format},
    {"from_json", FromJsonFilter},
    {"indent", Indent},
    {"int", Int},
    {"length", Length},
    {"lower", Lower},
    {"replace", Replace},
    {"round", Round},
    {"safe", Safe},
    {"string", StringFilter},
    {"title", Title},
    {"tojson", ToJsonFilter},
    {"trim", Trim},
    {"upper", Upper},
    {"wordcount", WordCount},
};

}  // namespace

FilterFunction FindFilter(const std::string& name) {
  for (const FilterEntry& entry : kFilters) {
    if (name == entry.name) return entry.function;
  }
  return FindSequenceFilter(name);
}

}  // namespace attnscope::jinja
