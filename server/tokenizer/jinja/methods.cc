// The Python methods templates call on str, dict and list values (the sandbox's safe ones:
// nothing that mutates).
#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "server/tokenizer/jinja/builtins.h"

namespace attnscope::jinja {

namespace {

using Result = absl::StatusOr<Value>;
using Method = Result (*)(Renderer&, const Value&, CallArgs&);

std::string StrArg(CallArgs& args, size_t index, const char* name) {
  const Value* v = args.Get(index, name);
  return v ? ToText(*v) : "";
}
int64_t IntArg(CallArgs& args, size_t index, const char* name, int64_t fallback) {
  const Value* v = args.Get(index, name);
  return v && v->IsInteger() ? v->integer() : fallback;
}

// startswith/endswith take a str or a tuple of str.
absl::StatusOr<bool> AffixMatch(const std::string& s, const Value* affix, bool prefix) {
  if (!affix) return TypeError("startswith/endswith need an argument");
  std::vector<std::string> options;
  if (affix->is_string()) {
    options.push_back(affix->str());
  } else if (affix->is_tuple()) {
    for (const Value& v : affix->list()) {
      if (!v.is_string()) return TypeError("tuple for startswith must only contain str");
      options.push_back(v.str());
    }
  } else {
    return TypeError(absl::StrCat("startswith first arg must be str or a tuple of str, not ",
                                  affix->TypeName()));
  }
  for (const std::string& o : options) {
    if (o.size() > s.size()) continue;
    if (prefix ? s.compare(0, o.size(), o) == 0
               : s.compare(s.size() - o.size(), o.size(), o) == 0) {
      return true;
    }
  }
  return false;
}

Result Strip(Renderer&, const Value& self, CallArgs& a) {
  const Value* chars = a.Get(0, "chars");
  return Value::Str(PyStrip(self.str(), chars && !chars->is_none() ? chars : nullptr, true, true));
}
Result LStrip(Renderer&, const Value& self, CallArgs& a) {
  const Value* chars = a.Get(0, "chars");
  return Value::Str(PyStrip(self.str(), chars && !chars->is_none() ? chars : nullptr, true, false));
}
Result RStrip(Renderer&, const Value& self, CallArgs& a) {
  const Value* chars = a.Get(0, "chars");
  return Value::Str(PyStrip(self.str(), chars && !chars->is_none() ? chars : nullptr, false, true));
}
Result Split(Renderer& r, const Value& self, CallArgs& a) {
  const Value* sep = a.Get(0, "sep");
  return PySplit(r, self.str(), sep, IntArg(a, 1, "maxsplit", -1), false);
}
Result RSplit(Renderer& r, const Value& self, CallArgs& a) {
  const Value* sep = a.Get(0, "sep");
  return PySplit(r, self.str(), sep, IntArg(a, 1, "maxsplit", -1), true);
}
Result SplitLines(Renderer& r, const Value& self, CallArgs& a) {
  const bool keepends = a.Get(0, "keepends") && a.Get(0, "keepends")->Truthy();
  List lines;
  const std::string& s = self.str();
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\n' || c == '\r' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e)) {
      size_t end = i;
      if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      lines.push_back(Value::Str(s.substr(start, (keepends ? i + 1 : end) - start)));
      start = i + 1;
    }
  }
  if (start < s.size()) lines.push_back(Value::Str(s.substr(start)));
  absl::Status status = r.CheckList(lines.size());
  if (!status.ok()) return status;
  return Value::MakeList(std::move(lines));
}
Result StartsWith(Renderer&, const Value& self, CallArgs& a) {
  auto m = AffixMatch(self.str(), a.Get(0, "prefix"), true);
  if (!m.ok()) return m.status();
  return Value::Bool(*m);
}
Result EndsWith(Renderer&, const Value& self, CallArgs& a) {
  auto m = AffixMatch(self.str(), a.Get(0, "suffix"), false);
  if (!m.ok()) return m.status();
  return Value::Bool(*m);
}
Result Upper(Renderer&, const Value& self, CallArgs&) { return Value::Str(PyUpper(self.str())); }
Result Lower(Renderer&, const Value& self, CallArgs&) { return Value::Str(PyLower(self.str())); }
Result Title(Renderer&, const Value& self, CallArgs&) { return Value::Str(PyTitle(self.str())); }
Result Capitalize(Renderer&, const Value& self, CallArgs&) {
  return Value::Str(PyCapitalize(self.str()));
}
Result Replace(Renderer& r, const Value& self, CallArgs& a) {
  auto out =
      PyReplace(r, self.str(), StrArg(a, 0, "old"), StrArg(a, 1, "new"), IntArg(a, 2, "count", -1));
  if (!out.ok()) return out.status();
  return Value::Str(std::move(*out));
}
int64_t CodePointIndex(const std::string& s, size_t byte_offset) {
  return static_cast<int64_t>(CodePointCount(s.substr(0, byte_offset)));
}
Result Find(Renderer&, const Value& self, CallArgs& a) {
  const size_t at = self.str().find(StrArg(a, 0, "sub"));
  return Value::Int(at == std::string::npos ? -1 : CodePointIndex(self.str(), at));
}
Result RFind(Renderer&, const Value& self, CallArgs& a) {
  const size_t at = self.str().rfind(StrArg(a, 0, "sub"));
  return Value::Int(at == std::string::npos ? -1 : CodePointIndex(self.str(), at));
}
Result Index(Renderer&, const Value& self, CallArgs& a) {
  const size_t at = self.str().find(StrArg(a, 0, "sub"));
  if (at == std::string::npos)
    return absl::InvalidArgumentError("chat template value error: substring not found");
  return Value::Int(CodePointIndex(self.str(), at));
}
Result Count(Renderer&, const Value& self, CallArgs& a) {
  const std::string needle = StrArg(a, 0, "sub");
  const std::string& s = self.str();
  if (needle.empty()) return Value::Int(static_cast<int64_t>(CodePointCount(s)) + 1);
  int64_t n = 0;
  for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + needle.size()))
    ++n;
  return Value::Int(n);
}
Result Join(Renderer& r, const Value& self, CallArgs& a) {
  const Value* items = a.Get(0, "iterable");
  if (!items) return TypeError("join() takes exactly one argument");
  auto list = r.Iterate(*items);
  if (!list.ok()) return list.status();
  std::string out;
  for (size_t k = 0; k < list->size(); ++k) {
    if (!(*list)[k].is_string()) {
      return TypeError(absl::StrCat("sequence item ", k, ": expected str instance, ",
                                    (*list)[k].TypeName(), " found"));
    }
    if (k) out += self.str();
    out += (*list)[k].str();
    absl::Status status = r.CheckString(out.size());
    if (!status.ok()) return status;
  }
  return Value::Str(std::move(out));
}
Result FormatMethod(Renderer& r, const Value& self, CallArgs& a) {
  auto out = BraceFormat(r, self.str(), a);
  if (!out.ok()) return out.status();
  return Value::Str(std::move(*out));
}
template <int (*Pred)(int)>
Result CharClass(Renderer&, const Value& self, CallArgs&) {
  if (self.str().empty()) return Value::Bool(false);
  for (unsigned char c : self.str()) {
    if (c >= 0x80 || !Pred(c)) return Value::Bool(false);
  }
  return Value::Bool(true);
}
Result IsLower(Renderer&, const Value& self, CallArgs&) {
  bool cased = false;
  for (unsigned char c : self.str()) {
    if (std::isupper(c)) return Value::Bool(false);
    cased = cased || std::islower(c);
  }
  return Value::Bool(cased);
}
Result IsUpper(Renderer&, const Value& self, CallArgs&) {
  bool cased = false;
  for (unsigned char c : self.str()) {
    if (std::islower(c)) return Value::Bool(false);
    cased = cased || std::isupper(c);
  }
  return Value::Bool(cased);
}
Result ZFill(Renderer& r, const Value& self, CallArgs& a) {
  const int64_t width = IntArg(a, 0, "width", 0);
  const std::string& s = self.str();
  const int64_t n = static_cast<int64_t>(CodePointCount(s));
  if (width <= n) return self;
  absl::Status status = r.CheckString(static_cast<size_t>(width));
  if (!status.ok()) return status;
  const size_t sign = !s.empty() && (s[0] == '-' || s[0] == '+') ? 1 : 0;
  return Value::Str(s.substr(0, sign) + std::string(static_cast<size_t>(width - n), '0') +
                    s.substr(sign));
}
Result RemovePrefix(Renderer&, const Value& self, CallArgs& a) {
  const std::string p = StrArg(a, 0, "prefix");
  const std::string& s = self.str();
  return Value::Str(s.compare(0, p.size(), p) == 0 ? s.substr(p.size()) : s);
}
Result RemoveSuffix(Renderer&, const Value& self, CallArgs& a) {
  const std::string p = StrArg(a, 0, "suffix");
  const std::string& s = self.str();
  if (!p.empty() && s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0) {
    return Value::Str(s.substr(0, s.size() - p.size()));
  }
  return self;
}

Result DictItems(Renderer& r, const Value& self, CallArgs&) {
  List pairs;
  for (const auto& [key, item] : self.dict().items) {
    pairs.push_back(Value::MakeList({Value::Str(key), item}, true));
  }
  absl::Status status = r.CheckList(pairs.size());
  if (!status.ok()) return status;
  return Value::MakeList(std::move(pairs));
}
Result DictKeys(Renderer&, const Value& self, CallArgs&) {
  List keys;
  for (const auto& [key, item] : self.dict().items) keys.push_back(Value::Str(key));
  return Value::MakeList(std::move(keys));
}
Result DictValues(Renderer&, const Value& self, CallArgs&) {
  List values;
  for (const auto& [key, item] : self.dict().items) values.push_back(item);
  return Value::MakeList(std::move(values));
}
Result DictGet(Renderer&, const Value& self, CallArgs& a) {
  const Value* key = a.Get(0, "key");
  const Value* fallback = a.Get(1, "default");
  if (key && key->is_string()) {
    const Value* found = self.dict().Find(key->str());
    if (found) return *found;
  }
  return fallback ? *fallback : Value::None();
}
Result ListIndex(Renderer&, const Value& self, CallArgs& a) {
  const Value* x = a.Get(0, "value");
  for (size_t k = 0; x && k < self.list().size(); ++k) {
    if (Equal(self.list()[k], *x)) return Value::Int(static_cast<int64_t>(k));
  }
  return absl::InvalidArgumentError("chat template value error: value is not in list");
}
Result ListCount(Renderer&, const Value& self, CallArgs& a) {
  const Value* x = a.Get(0, "value");
  int64_t n = 0;
  for (const Value& v : self.list()) n += x && Equal(v, *x);
  return Value::Int(n);
}

struct MethodEntry {
  Value::Kind kind;
  const char* name;
  Method method;
};

constexpr MethodEntry kMethods[] = {
    {Value::Kind::kString, "strip", Strip},
    {Value::Kind::kString, "lstrip", LStrip},
    {Value::Kind::kString, "rstrip", RStrip},
    {Value::Kind::kString, "split", Split},
    {Value::Kind::kString, "rsplit", RSplit},
    {Value::Kind::kString, "splitlines", SplitLines},
    {Value::Kind::kString, "startswith", StartsWith},
    {Value::Kind::kString, "endswith", EndsWith},
    {Value::Kind::kString, "upper", Upper},
    {Value::Kind::kString, "lower", Lower},
    {Value::Kind::kString, "title", Title},
    {Value::Kind::kString, "capitalize", Capitalize},
    {Value::Kind::kString, "replace", Replace},
    {Value::Kind::kString, "find", Find},
    {Value::Kind::kString, "rfind", RFind},
    {Value::Kind::kString, "index", Index},
    {Value::Kind::kString, "count", Count},
    {Value::Kind::kString, "join", Join},
    {Value::Kind::kString, "format", FormatMethod},
    {Value::Kind::kString, "isdigit", CharClass<::isdigit>},
    {Value::Kind::kString, "isalpha", CharClass<::isalpha>},
    {Value::Kind::kString, "isalnum", CharClass<::isalnum>},
    {Value::Kind::kString, "isspace", CharClass<::isspace>},
    {Value::Kind::kString, "islower", IsLower},
    {Value::Kind::kString, "isupper", IsUpper},
    {Value::Kind::kString, "zfill", ZFill},
    {Value::Kind::kString, "removeprefix", RemovePrefix},
    {Value::Kind::kString, "removesuffix", RemoveSuffix},
    {Value::Kind::kDict, "items", DictItems},
    {Value::Kind::kDict, "keys", DictKeys},
    {Value::Kind::kDict, "values", DictValues},
    {Value::Kind::kDict, "get", DictGet},
    {Value::Kind::kList, "index", ListIndex},
    {Value::Kind::kList, "count", ListCount},
};

}  // namespace

std::optional<Value> BoundMethod(const Value& self, const std::string& name) {
  if (self.is_dict() && self.dict().is_namespace) return std::nullopt;
  if (self.is_generator()) return std::nullopt;
  for (const MethodEntry& entry : kMethods) {
    if (entry.kind == self.kind() && name == entry.name) {
      Method method = entry.method;
      return Value::Function(
          name, [method, self](Renderer& r, CallArgs& args) { return method(r, self, args); });
    }
  }
  return std::nullopt;
}

}  // namespace attnscope::jinja
