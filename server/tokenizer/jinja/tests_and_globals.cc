// Jinja2's builtin tests (jinja2/tests.py) and the globals a chat template can call:
// Jinja2's range/dict/namespace/joiner and transformers' raise_exception/strftime_now.
#include <cmath>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "server/tokenizer/jinja/builtins.h"

namespace attnscope::jinja {

namespace {

using Result = absl::StatusOr<bool>;

const Value* Arg(CallArgs& a) { return a.Get(0, nullptr); }

Result Defined(Renderer&, const Value& v, CallArgs&) { return !v.is_undefined(); }
Result Undefined(Renderer&, const Value& v, CallArgs&) { return v.is_undefined(); }
Result None(Renderer&, const Value& v, CallArgs&) { return v.is_none(); }
Result Boolean(Renderer&, const Value& v, CallArgs&) { return v.is_bool(); }
Result True(Renderer&, const Value& v, CallArgs&) { return v.is_bool() && v.boolean(); }
Result False(Renderer&, const Value& v, CallArgs&) { return v.is_bool() && !v.boolean(); }
Result Integer(Renderer&, const Value& v, CallArgs&) { return v.is_int(); }
Result FloatTest(Renderer&, const Value& v, CallArgs&) { return v.is_float(); }
Result Number(Renderer&, const Value& v, CallArgs&) { return v.IsNumber(); }
Result String(Renderer&, const Value& v, CallArgs&) { return v.is_string(); }
Result Mapping(Renderer&, const Value& v, CallArgs&) {
  return v.is_dict() && !v.dict().is_namespace;
}
Result Callable(Renderer&, const Value& v, CallArgs&) { return v.is_callable(); }
// Anything with len() and [] (Undefined has both); generators have neither.
Result Sequence(Renderer&, const Value& v, CallArgs&) {
  return v.is_string() || (v.is_list() && !v.is_generator()) ||
         (v.is_dict() && !v.dict().is_namespace) || v.is_undefined();
}
Result Iterable(Renderer&, const Value& v, CallArgs&) {
  return v.is_string() || v.is_list() || (v.is_dict() && !v.dict().is_namespace) ||
         v.is_undefined();
}
absl::StatusOr<int64_t> IntegerOf(const Value& v, const char* test) {
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.IsInteger())
    return TypeError(absl::StrCat("'is ", test, "' needs an integer, not ", v.TypeName()));
  return v.integer();
}
// Jinja2 computes `value % 2`: for a string that is %-formatting, which either fails or gives a
// string that never equals the number.
absl::StatusOr<bool> StringModulo(Renderer& r, const Value& v, const Value& divisor) {
  auto formatted = PercentFormat(r, v.str(), {divisor});
  if (!formatted.ok()) return formatted.status();
  return false;
}
Result Odd(Renderer& r, const Value& v, CallArgs&) {
  if (v.is_string()) return StringModulo(r, v, Value::Int(2));
  if (v.is_float()) return std::fmod(std::fabs(v.real()), 2.0) == 1.0;
  auto n = IntegerOf(v, "odd");
  if (!n.ok()) return n.status();
  return *n % 2 != 0;
}
Result Even(Renderer& r, const Value& v, CallArgs&) {
  if (v.is_string()) return StringModulo(r, v, Value::Int(2));
  if (v.is_float()) return std::fmod(v.real(), 2.0) == 0.0;
  auto n = IntegerOf(v, "even");
  if (!n.ok()) return n.status();
  return *n % 2 == 0;
}
Result DivisibleBy(Renderer& r, const Value& v, CallArgs& a) {
  const Value* d = a.Get(0, "num");
  if (v.is_string() && d) return StringModulo(r, v, *d);
  auto n = IntegerOf(v, "divisibleby");
  if (!n.ok()) return n.status();
  if (!d || !d->IsInteger()) return TypeError("'is divisibleby' needs an integer");
  if (d->integer() == 0)
    return absl::InvalidArgumentError("chat template error: integer modulo by zero");
  if (d->integer() == -1) return true;
  return *n % d->integer() == 0;
}
Result Lower(Renderer&, const Value& v, CallArgs&) {
  const std::string s = ToText(v);
  bool cased = false;
  for (unsigned char c : s) {
    if (std::isupper(c)) return false;
    cased = cased || std::islower(c);
  }
  return cased;
}
Result Upper(Renderer&, const Value& v, CallArgs&) {
  const std::string s = ToText(v);
  bool cased = false;
  for (unsigned char c : s) {
    if (std::islower(c)) return false;
    cased = cased || std::isupper(c);
  }
  return cased;
}
Result Eq(Renderer&, const Value& v, CallArgs& a) { return Arg(a) && Equal(v, *Arg(a)); }
Result Ne(Renderer&, const Value& v, CallArgs& a) { return !Arg(a) || !Equal(v, *Arg(a)); }
Result SameAs(Renderer&, const Value& v, CallArgs& a) {
  if (!Arg(a)) return false;
  const Value& o = *Arg(a);
  if (v.kind() != o.kind()) return false;
  if (v.is_dict()) return v.dict_ptr() == o.dict_ptr();
  if (v.is_list()) return &v.list() == &o.list();
  return v.is_none() || v.is_undefined() || (v.is_bool() && v.boolean() == o.boolean());
}
absl::StatusOr<int> Order(const Value& v, CallArgs& a) {
  if (!Arg(a)) return TypeError("comparison test needs an argument");
  return Compare(v, *Arg(a));
}
Result Gt(Renderer&, const Value& v, CallArgs& a) {
  auto c = Order(v, a);
  if (!c.ok()) return c.status();
  return *c > 0;
}
Result Ge(Renderer&, const Value& v, CallArgs& a) {
  auto c = Order(v, a);
  if (!c.ok()) return c.status();
  return *c >= 0;
}
Result Lt(Renderer&, const Value& v, CallArgs& a) {
  auto c = Order(v, a);
  if (!c.ok()) return c.status();
  return *c < 0;
}
Result Le(Renderer&, const Value& v, CallArgs& a) {
  auto c = Order(v, a);
  if (!c.ok()) return c.status();
  return *c <= 0;
}
Result In(Renderer&, const Value& v, CallArgs& a) {
  if (!Arg(a)) return TypeError("'is in' needs a container");
  return Contains(*Arg(a), v);
}
Result Escaped(Renderer&, const Value&, CallArgs&) { return false; }
Result FilterTest(Renderer&, const Value& v, CallArgs&) {
  return v.is_string() && FindFilter(v.str()) != nullptr;
}
Result TestTest(Renderer&, const Value& v, CallArgs&) {
  return v.is_string() && FindTest(v.str()) != nullptr;
}

struct TestEntry {
  const char* name;
  TestFunction function;
};

constexpr TestEntry kTests[] = {
    {"!=", Ne},
    {"<", Lt},
    {"<=", Le},
    {"==", Eq},
    {">", Gt},
    {">=", Ge},
    {"boolean", Boolean},
    {"callable", Callable},
    {"defined", Defined},
    {"divisibleby", DivisibleBy},
    {"eq", Eq},
    {"equalto", Eq},
    {"escaped", Escaped},
    {"even", Even},
    {"false", False},
    {"filter", FilterTest},
    {"float", FloatTest},
    {"ge", Ge},
    {"greaterthan", Gt},
    {"gt", Gt},
    {"in", In},
    {"integer", Integer},
    {"iterable", Iterable},
    {"le", Le},
    {"lessthan", Lt},
    {"lower", Lower},
    {"lt", Lt},
    {"mapping", Mapping},
    {"ne", Ne},
    {"none", None},
    {"number", Number},
    {"odd", Odd},
    {"sameas", SameAs},
    {"sequence", Sequence},
    {"string", String},
    {"test", TestTest},
    {"true", True},
    {"undefined", Undefined},
    {"upper", Upper},
};

// The sandbox refuses ranges longer than this (jinja2.sandbox.MAX_RANGE).
constexpr int64_t kMaxRange = 100000;

absl::StatusOr<Value> Range(Renderer& r, CallArgs& a) {
  for (const Value& v : a.positional) {
    if (!v.IsInteger()) {
      return TypeError(
          absl::StrCat("'", v.TypeName(), "' object cannot be interpreted as an integer"));
    }
  }
  int64_t start = 0, stop = 0, step = 1;
  if (a.positional.size() == 1) {
    stop = a.positional[0].integer();
  } else if (a.positional.size() == 2 || a.positional.size() == 3) {
    start = a.positional[0].integer();
    stop = a.positional[1].integer();
    if (a.positional.size() == 3) step = a.positional[2].integer();
  } else {
    return TypeError(absl::StrCat("range expected 1 to 3 arguments, got ", a.positional.size()));
  }
  if (step == 0)
    return absl::InvalidArgumentError("chat template value error: range() arg 3 must not be zero");
  const long double count = step > 0 ? (static_cast<long double>(stop) - start) / step
                                     : (static_cast<long double>(start) - stop) / -step;
  if (count > kMaxRange) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "chat template: range too big; the sandbox blocks ranges larger than ", kMaxRange));
  }
  List items;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) items.push_back(Value::Int(i));
  absl::Status status = r.CheckList(items.size());
  if (!status.ok()) return status;
  return Value::MakeList(std::move(items));
}

absl::StatusOr<Value> MakeDictFrom(Renderer& r, CallArgs& a, bool as_namespace) {
  auto dict = std::make_shared<Dict>();
  dict->is_namespace = as_namespace;
  if (a.positional.size() > 1) return TypeError("dict expected at most 1 argument");
  if (!a.positional.empty()) {
    const Value& source = a.positional[0];
    if (source.is_dict()) {
      for (const auto& [k, v] : source.dict().items) dict->Set(k, v);
    } else {
      auto items = r.Iterate(source);
      if (!items.ok()) return items.status();
      for (const Value& pair : *items) {
        if (!pair.is_list() || pair.list().size() != 2) {
          return TypeError("dictionary update sequence element has the wrong length");
        }
        dict->Set(ToText(pair.list()[0]), pair.list()[1]);
      }
    }
  }
  for (auto& [k, v] : a.keyword) dict->Set(k, v);
  return Value::MakeDict(dict);
}

}  // namespace

TestFunction FindTest(const std::string& name) {
  for (const TestEntry& entry : kTests) {
    if (name == entry.name) return entry.function;
  }
  return nullptr;
}

std::vector<std::pair<std::string, Value>> Globals() {
  std::vector<std::pair<std::string, Value>> globals;
  globals.emplace_back("range", Value::Function("range", Range));
  globals.emplace_back("dict", Value::Function("dict", [](Renderer& r, CallArgs& a) {
                         return MakeDictFrom(r, a, false);
                       }));
  globals.emplace_back("namespace", Value::Function("namespace", [](Renderer& r, CallArgs& a) {
                         return MakeDictFrom(r, a, true);
                       }));
  globals.emplace_back(
      "raise_exception", Value::Function("raise_exception", [](Renderer&, CallArgs& a) {
        const Value* message = a.Get(0, "message");
        return absl::StatusOr<Value>(absl::FailedPreconditionError(
            absl::StrCat("chat template raised: ", message ? ToText(*message) : "")));
      }));
  globals.emplace_back(
      "strftime_now", Value::Function("strftime_now", [](Renderer& r, CallArgs& a) {
        const Value* format = a.Get(0, "format");
        if (!format || !format->is_string()) {
          return absl::StatusOr<Value>(TypeError("strftime_now needs a format string"));
        }
        char buffer[1024];
        const std::tm now = r.options().now;
        if (r.options().clock_read != nullptr) *r.options().clock_read = true;
        const size_t n = format->str().size() > 256
                             ? 0
                             : std::strftime(buffer, sizeof(buffer), format->str().c_str(), &now);
        if (n == 0 && !format->str().empty()) {
          return absl::StatusOr<Value>(TypeError("strftime_now: format too long"));
        }
        return absl::StatusOr<Value>(Value::Str(std::string(buffer, n)));
      }));
  globals.emplace_back("joiner", Value::Function("joiner", [](Renderer&, CallArgs& a) {
                         const Value* sep = a.Get(0, "sep");
                         const std::string separator = sep ? ToText(*sep) : ", ";
                         auto used = std::make_shared<bool>(false);
                         return absl::StatusOr<Value>(
                             Value::Function("joiner", [separator, used](Renderer&, CallArgs&) {
                               const bool first = !*used;
                               *used = true;
                               return absl::StatusOr<Value>(Value::Str(first ? "" : separator));
                             }));
                       }));
  return globals;
}

}  // namespace attnscope::jinja
