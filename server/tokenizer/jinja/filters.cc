// Jinja2's builtin filters (jinja2/filters.py) and transformers' tojson, one table entry each.
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

bool Flag(const Value* v, bool fallback = false) { return v ? v->Truthy() : fallback; }

// Jinja2's soft_str: what string filters see.
std::string Text(const Value& v) { return ToText(v); }

absl::StatusOr<int64_t> Length(const Value& v) {
  if (v.is_string()) return static_cast<int64_t>(CodePointCount(v.str()));
  if (v.is_list() && !v.is_generator()) return static_cast<int64_t>(v.list().size());
  if (v.is_dict() && !v.dict().is_namespace) return static_cast<int64_t>(v.dict().items.size());
  if (v.is_undefined()) return 0;
  return TypeError(absl::StrCat("object of type '", v.TypeName(), "' has no len()"));
}

// Jinja2's make_attrgetter: "a.b.0" looks up each part with getitem.
absl::StatusOr<Value> AttrPath(Renderer& r, const Value& item, const Value& attribute,
                               const Value* fallback = nullptr) {
  Value current = item;
  std::vector<Value> parts;
  if (attribute.is_string()) {
    size_t start = 0;
    const std::string& path = attribute.str();
    while (true) {
      const size_t dot = path.find('.', start);
      std::string part = path.substr(start, dot == std::string::npos ? dot : dot - start);
      const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
      parts.push_back(digits ? Value::Int(std::strtoll(part.c_str(), nullptr, 10))
                             : Value::Str(part));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
  } else {
    parts.push_back(attribute);
  }
  for (const Value& part : parts) {
    auto next = r.GetItem(current, part);
    if (!next.ok()) return next;
    current = *next;
    if (current.is_undefined() && fallback) return *fallback;
  }
  return current;
}

// For sort/unique/min/max: strings compared case-insensitively unless case_sensitive.
Value SortKey(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::Str(PyLower(v.str()));
  return v;
}

absl::Status SortValues(List* items, const std::vector<Value>& keys, bool reverse) {
  std::vector<size_t> order(items->size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  absl::Status status;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (!status.ok()) return false;
    auto c = Compare(keys[a], keys[b]);
    if (!c.ok()) {
      status = c.status();
      return false;
    }
    return reverse ? *c > 0 : *c < 0;
  });
  if (!status.ok()) return status;
  List sorted;
  for (size_t k : order) sorted.push_back((*items)[k]);
  *items = std::move(sorted);
  return absl::OkStatus();
}

// select/reject/selectattr/rejectattr share Jinja2's select_or_reject.
Result SelectOrReject(Renderer& r, const Value& v, CallArgs& args, bool attribute, bool keep) {
  if (!v.Truthy()) return Value::MakeGenerator({});
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  size_t off = 0;
  Value attr;
  if (attribute) {
    if (args.positional.empty()) return TypeError("selectattr/rejectattr need an attribute");
    attr = args.positional[0];
    off = 1;
  }
  std::string test;
  CallArgs test_args;
  if (args.positional.size() > off) {
    test = ToText(args.positional[off]);
    test_args.positional.assign(args.positional.begin() + off + 1, args.positional.end());
    test_args.keyword = args.keyword;
  }
  List kept;
  for (const Value& item : *items) {
    Value subject = item;
    if (attribute) {
      auto looked_up = AttrPath(r, item, attr);
      if (!looked_up.ok()) return looked_up.status();
      subject = *looked_up;
    }
    bool pass;
    if (test.empty()) {
      pass = subject.Truthy();
    } else {
      auto result = r.ApplyTest(test, subject, test_args);
      if (!result.ok()) return result.status();
      pass = *result;
    }
    if (pass == keep) kept.push_back(item);
  }
  return Value::MakeGenerator(std::move(kept));
}

Result Select(Renderer& r, const Value& v, CallArgs& a) {
  return SelectOrReject(r, v, a, false, true);
}
Result Reject(Renderer& r, const Value& v, CallArgs& a) {
  return SelectOrReject(r, v, a, false, false);
}
Result SelectAttr(Renderer& r, const Value& v, CallArgs& a) {
  return SelectOrReject(r, v, a, true, true);
}
Result RejectAttr(Renderer& r, const Value& v, CallArgs& a) {
  return SelectOrReject(r, v, a, true, false);
}

Result Map(Renderer& r, const Value& v, CallArgs& args) {
  if (!v.Truthy()) return Value::MakeGenerator({});
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  const Value* attribute = args.Get(999, "attribute");
  List mapped;
  if (args.positional.empty() && attribute) {
    const Value* fallback = args.Get(999, "default");
    for (const Value& item : *items) {
      auto value = AttrPath(r, item, *attribute, fallback);
      if (!value.ok()) return value.status();
      mapped.push_back(*value);
    }
    return Value::MakeGenerator(std::move(mapped));
  }
  if (args.positional.empty()) return TypeError("map requires a filter argument");
  const std::string filter = ToText(args.positional[0]);
  for (const Value& item : *items) {
    CallArgs filter_args;
    filter_args.positional.assign(args.positional.begin() + 1, args.positional.end());
    filter_args.keyword = args.keyword;
    auto value = r.ApplyFilter(filter, item, std::move(filter_args));
    if (!value.ok()) return value.status();
    mapped.push_back(*value);
  }
  return Value::MakeGenerator(std::move(mapped));
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

Result ListFilter(Renderer& r, const Value& v, CallArgs&) {
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  return Value::MakeList(std::move(*items));
}

Result First(Renderer& r, const Value& v, CallArgs&) {
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  if (items->empty()) return Value::Undefined("No first item, sequence was empty.");
  return items->front();
}

Result Last(Renderer& r, const Value& v, CallArgs&) {
  if (v.is_generator()) return TypeError("'generator' object is not reversible");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  if (items->empty()) return Value::Undefined("No last item, sequence was empty.");
  return items->back();
}

Result Reverse(Renderer& r, const Value& v, CallArgs&) {
  if (v.is_string()) {
    std::vector<std::string> chars = CodePoints(v.str());
    std::string out;
    for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
    return Value::Str(std::move(out));
  }
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  std::reverse(items->begin(), items->end());
  if (v.is_generator()) return Value::MakeList(std::move(*items));
  return Value::MakeGenerator(std::move(*items));  // reversed(): an iterator
}

Result Join(Renderer& r, const Value& v, CallArgs& args) {
  const Value* separator = args.Get(0, "d");
  const Value* attribute = args.Get(1, "attribute");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  const std::string sep = separator ? ToText(*separator) : "";
  std::string out;
  for (size_t k = 0; k < items->size(); ++k) {
    Value item = (*items)[k];
    if (attribute && !attribute->is_none()) {
      auto looked_up = AttrPath(r, item, *attribute);
      if (!looked_up.ok()) return looked_up.status();
      item = *looked_up;
    }
    if (k) out += sep;
    out += ToText(item);
    absl::Status status = r.CheckString(out.size());
    if (!status.ok()) return status;
  }
  return Value::Str(std::move(out));
}

Result Items(Renderer&, const Value& v, CallArgs&) {
  if (v.is_undefined()) return Value::MakeGenerator({});
  if (!v.is_dict() || v.dict().is_namespace) {
    return TypeError("Can only get item pairs from a mapping.");
  }
  List pairs;
  for (const auto& [key, item] : v.dict().items)
    pairs.push_back(Value::MakeList({Value::Str(key), item}, true));
  return Value::MakeGenerator(std::move(pairs));
}

Result DictSort(Renderer& r, const Value& v, CallArgs& args) {
  const bool case_sensitive = Flag(args.Get(0, "case_sensitive"));
  const Value* by = args.Get(1, "by");
  const bool reverse = Flag(args.Get(2, "reverse"));
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.is_dict())
    return TypeError(absl::StrCat("'", v.TypeName(), "' object has no attribute 'items'"));
  const bool by_value = by && ToText(*by) == "value";
  List pairs;
  std::vector<Value> keys;
  for (const auto& [key, item] : v.dict().items) {
    pairs.push_back(Value::MakeList({Value::Str(key), item}, true));
    keys.push_back(SortKey(by_value ? item : Value::Str(key), case_sensitive));
  }
  absl::Status status = SortValues(&pairs, keys, reverse);
  if (!status.ok()) return status;
  (void)r;
  return Value::MakeList(std::move(pairs));
}

Result Sort(Renderer& r, const Value& v, CallArgs& args) {
  const bool reverse = Flag(args.Get(0, "reverse"));
  const bool case_sensitive = Flag(args.Get(1, "case_sensitive"));
  const Value* attribute = args.Get(2, "attribute");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  std::vector<Value> keys;
  for (const Value& item : *items) {
    Value key = item;
    if (attribute && !attribute->is_none()) {
      auto looked_up = AttrPath(r, item, *attribute);
      if (!looked_up.ok()) return looked_up.status();
      key = *looked_up;
    }
    keys.push_back(SortKey(key, case_sensitive));
  }
  absl::Status status = SortValues(&*items, keys, reverse);
  if (!status.ok()) return status;
  return Value::MakeList(std::move(*items));
}

Result Unique(Renderer& r, const Value& v, CallArgs& args) {
  const bool case_sensitive = Flag(args.Get(0, "case_sensitive"));
  const Value* attribute = args.Get(1, "attribute");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  List kept;
  std::vector<Value> seen;
  for (const Value& item : *items) {
    Value key = item;
    if (attribute && !attribute->is_none()) {
      auto looked_up = AttrPath(r, item, *attribute);
      if (!looked_up.ok()) return looked_up.status();
      key = *looked_up;
    }
    key = SortKey(key, case_sensitive);
    bool duplicate = false;
    for (const Value& s : seen) duplicate = duplicate || Equal(s, key);
    if (duplicate) continue;
    seen.push_back(key);
    kept.push_back(item);
  }
  return Value::MakeGenerator(std::move(kept));
}

Result MinMax(Renderer& r, const Value& v, CallArgs& args, bool want_max) {
  const bool case_sensitive = Flag(args.Get(0, "case_sensitive"));
  const Value* attribute = args.Get(1, "attribute");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  if (items->empty())
    return Value::Undefined(absl::StrCat("No aggregated item, sequence was empty."));
  size_t best = 0;
  Value best_key;
  for (size_t k = 0; k < items->size(); ++k) {
    Value key = (*items)[k];
    if (attribute && !attribute->is_none()) {
      auto looked_up = AttrPath(r, key, *attribute);
      if (!looked_up.ok()) return looked_up.status();
      key = *looked_up;
    }
    key = SortKey(key, case_sensitive);
    if (k > 0) {
      auto c = Compare(key, best_key);
      if (!c.ok()) return c.status();
      if (want_max ? *c <= 0 : *c >= 0) continue;
    }
    best = k;
    best_key = key;
  }
  return (*items)[best];
}
Result Min(Renderer& r, const Value& v, CallArgs& a) { return MinMax(r, v, a, false); }
Result Max(Renderer& r, const Value& v, CallArgs& a) { return MinMax(r, v, a, true); }

Result Sum(Renderer& r, const Value& v, CallArgs& args) {
  const Value* attribute = args.Get(0, "attribute");
  const Value* start = args.Get(1, "start");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  Value total = start ? *start : Value::Int(0);
  for (const Value& item : *items) {
    Value term = item;
    if (attribute && !attribute->is_none()) {
      auto looked_up = AttrPath(r, item, *attribute);
      if (!looked_up.ok()) return looked_up.status();
      term = *looked_up;
    }
    auto next = BinaryOp(r, "+", total, term);
    if (!next.ok()) return next;
    total = *next;
  }
  return total;
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

Result Batch(Renderer& r, const Value& v, CallArgs& args) {
  const Value* count = args.Get(0, "linecount");
  const Value* fill = args.Get(1, "fill_with");
  if (!count || !count->IsInteger() || count->integer() <= 0)
    return TypeError("batch needs a positive count");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  List batches, current;
  for (const Value& item : *items) {
    current.push_back(item);
    if (static_cast<int64_t>(current.size()) == count->integer()) {
      batches.push_back(Value::MakeList(std::move(current)));
      current.clear();
    }
  }
  if (!current.empty()) {
    while (fill && !fill->is_none() && static_cast<int64_t>(current.size()) < count->integer()) {
      current.push_back(*fill);
    }
    batches.push_back(Value::MakeList(std::move(current)));
  }
  return Value::MakeGenerator(std::move(batches));
}

struct FilterEntry {
  const char* name;
  FilterFunction function;
};

constexpr FilterEntry kFilters[] = {
    {"abs", Abs},
    {"attr", Attr},
    {"batch", Batch},
    {"capitalize", Capitalize},
    {"center", Center},
    {"count", Length},
    {"d", Default},
    {"default", Default},
    {"dictsort", DictSort},
    {"e", Escape},
    {"escape", Escape},
    {"first", First},
    {"float", Float},
    {"forceescape", Escape},
    {"format", Format},
    {"from_json", FromJsonFilter},
    {"indent", Indent},
    {"int", Int},
    {"items", Items},
    {"join", Join},
    {"last", Last},
    {"length", Length},
    {"list", ListFilter},
    {"lower", Lower},
    {"map", Map},
    {"max", Max},
    {"min", Min},
    {"reject", Reject},
    {"rejectattr", RejectAttr},
    {"replace", Replace},
    {"reverse", Reverse},
    {"round", Round},
    {"safe", Safe},
    {"select", Select},
    {"selectattr", SelectAttr},
    {"sort", Sort},
    {"string", StringFilter},
    {"sum", Sum},
    {"title", Title},
    {"tojson", ToJsonFilter},
    {"trim", Trim},
    {"unique", Unique},
    {"upper", Upper},
    {"wordcount", WordCount},
};

}  // namespace

FilterFunction FindFilter(const std::string& name) {
  for (const FilterEntry& entry : kFilters) {
    if (name == entry.name) return entry.function;
  }
  return nullptr;
}

}  // namespace attnscope::jinja
