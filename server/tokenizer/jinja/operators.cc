// Python's operators, attribute and item access as Jinja2's sandboxed environment applies them.
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "server/tokenizer/jinja/builtins.h"
#include "server/tokenizer/jinja/renderer.h"

namespace attnscope::jinja {

namespace {

absl::Status Overflow(const std::string& op) {
  return absl::InvalidArgumentError(
      absl::StrCat("chat template error: integer overflow in '", op, "' (64-bit integers only)"));
}

absl::Status ZeroDivision(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("chat template error: ", what));
}

absl::StatusOr<Value> Repeat(Renderer& r, const Value& seq, int64_t times) {
  if (times <= 0) return seq.is_string() ? Value::Str("") : Value::MakeList({}, seq.is_tuple());
  const size_t unit = seq.is_string() ? seq.str().size() : seq.list().size();
  const size_t limit = seq.is_string() ? kMaxStringBytes : kMaxListItems;
  if (unit != 0 && static_cast<uint64_t>(times) > limit / unit) {
    return SizeError(seq.is_string() ? "a repeated string's bytes" : "a repeated list's length",
                     static_cast<uint64_t>(times) > SIZE_MAX / unit
                         ? SIZE_MAX
                         : unit * static_cast<size_t>(times),
                     limit);
  }
  const size_t n = unit * static_cast<size_t>(times);
  if (seq.is_string()) {
    absl::Status status = r.CheckString(n);
    if (!status.ok()) return status;
    std::string out;
    out.reserve(n);
    for (int64_t k = 0; k < times; ++k) out += seq.str();
    return Value::Str(std::move(out));
  }
  absl::Status status = r.CheckList(n);
  if (!status.ok()) return status;
  List out;
  out.reserve(n);
  for (int64_t k = 0; k < times; ++k) out.insert(out.end(), seq.list().begin(), seq.list().end());
  return Value::MakeList(std::move(out), seq.is_tuple());
}

absl::StatusOr<Value> IntPower(int64_t base, int64_t exponent) {
  int64_t result = 1;
  while (exponent > 0) {
    if (exponent & 1) {
      if (__builtin_mul_overflow(result, base, &result)) return Overflow("**");
    }
    exponent >>= 1;
    if (exponent > 0 && __builtin_mul_overflow(base, base, &base)) return Overflow("**");
  }
  return Value::Int(result);
}

}  // namespace

absl::StatusOr<Value> BinaryOp(Renderer& r, const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {
    const std::string left = ToText(a), right = ToText(b);
    absl::Status status = r.CheckString(left.size() + right.size());
    if (!status.ok()) return status;
    return Value::Str(left + right);
  }
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      absl::Status status = r.CheckString(a.str().size() + b.str().size());
      if (!status.ok()) return status;
      return Value::Str(a.str() + b.str());
    }
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple() && !a.is_generator() &&
        !b.is_generator()) {
      absl::Status status = r.CheckList(a.list().size() + b.list().size());
      if (!status.ok()) return status;
      List joined = a.list();
      joined.insert(joined.end(), b.list().begin(), b.list().end());
      return Value::MakeList(std::move(joined), a.is_tuple());
    }
  }
  if (op == "*") {
    if ((a.is_string() || (a.is_list() && !a.is_generator())) && b.IsInteger()) {
      return Repeat(r, a, b.integer());
    }
    if (a.IsInteger() && (b.is_string() || (b.is_list() && !b.is_generator()))) {
      return Repeat(r, b, a.integer());
    }
  }
  if (op == "%" && a.is_string()) {
    auto formatted = PercentFormat(r, a.str(), b.is_tuple() ? b.list() : List{b});
    if (!formatted.ok()) return formatted.status();
    return Value::Str(std::move(*formatted));
  }
  if (!a.IsNumber() || !b.IsNumber()) {
    return TypeError(absl::StrCat("unsupported operand type(s) for ", op, ": '", a.TypeName(),
                                  "' and '", b.TypeName(), "'"));
  }
  if (a.IsInteger() && b.IsInteger()) {
    const int64_t x = a.integer(), y = b.integer();
    int64_t result;
    if (op == "+") {
      if (__builtin_add_overflow(x, y, &result)) return Overflow(op);
      return Value::Int(result);
    }
    if (op == "-") {
      if (__builtin_sub_overflow(x, y, &result)) return Overflow(op);
      return Value::Int(result);
    }
    if (op == "*") {
      if (__builtin_mul_overflow(x, y, &result)) return Overflow(op);
      return Value::Int(result);
    }
    if (op == "//" || op == "%") {
      if (y == 0) return ZeroDivision("integer division or modulo by zero");
      if (x == INT64_MIN && y == -1)
        return op == "%" ? Value::Int(0) : absl::StatusOr<Value>(Overflow(op));
      int64_t q = x / y, rem = x % y;
      if (rem != 0 && ((rem < 0) != (y < 0))) {
        --q;
        rem += y;
      }
      return Value::Int(op == "//" ? q : rem);
    }
    if (op == "**" && y >= 0) return IntPower(x, y);
  }
  const double x = a.real(), y = b.real();
  if (op == "+") return Value::Float(x + y);
  if (op == "-") return Value::Float(x - y);
  if (op == "*") return Value::Float(x * y);
  if (op == "/") {
    if (y == 0) return ZeroDivision("division by zero");
    return Value::Float(x / y);
  }
  if (op == "//" || op == "%") {
    if (y == 0) return ZeroDivision("float floor division or modulo by zero");
    // CPython's float_divmod.
    double mod = std::fmod(x, y);
    double div = (x - mod) / y;
    if (mod != 0) {
      if ((y < 0) != (mod < 0)) {
        mod += y;
        div -= 1.0;
      }
    } else {
      mod = std::copysign(0.0, y);
    }
    double floordiv;
    if (div != 0) {
      floordiv = std::floor(div);
      if (div - floordiv > 0.5) floordiv += 1.0;
    } else {
      floordiv = std::copysign(0.0, x / y);
    }
    return Value::Float(op == "%" ? mod : floordiv);
  }
  if (op == "**") {
    if (x == 0 && y < 0) return ZeroDivision("0.0 cannot be raised to a negative power");
    const double p = std::pow(x, y);
    if (std::isinf(p) && !std::isinf(x)) {
      return absl::InvalidArgumentError(
          "chat template error: (34, 'Numerical result out of range')");
    }
    return Value::Float(p);
  }
  return TypeError(absl::StrCat("unsupported operator ", op));
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kString:
      if (!item.is_string()) {
        if (item.is_undefined()) return UndefinedError(item);
        return TypeError(
            absl::StrCat("'in <string>' requires string as left operand, not ", item.TypeName()));
      }
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& v : container.list()) {
        if (Equal(v, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      if (item.is_list() && !item.is_tuple()) return TypeError("unhashable type: 'list'");
      if (item.is_dict()) return TypeError("unhashable type: 'dict'");
      return !container.dict().is_namespace && item.is_string() &&
             container.dict().Find(item.str()) != nullptr;
    case Value::Kind::kUndefined:
      return false;
    default:
      return TypeError(
          absl::StrCat("argument of type '", container.TypeName(), "' is not iterable"));
  }
}

absl::StatusOr<Value> Renderer::GetAttr(const Value& object, const std::string& name) {
  if (object.is_undefined()) return UndefinedError(object);
  // Jinja2's getattr: the Python attribute first (dict.items is the method), then the item.
  if (auto method = BoundMethod(object, name)) return *method;
  if (object.is_dict()) {
    const Value* found = object.dict().Find(name);
    if (found) return *found;
  }
  return Value::Undefined(absl::StrCat("'", object.is_dict() ? "dict" : object.TypeName(),
                                       " object' has no attribute '", name, "'"));
}

absl::StatusOr<Value> Renderer::GetItem(const Value& object, const Value& key) {
  if (object.is_undefined()) return UndefinedError(object);
  // Jinja2's getitem: the item first, then (for string keys) the attribute.
  if (object.is_dict() && !object.dict().is_namespace) {
    if (key.is_string() || key.IsNumber() || key.is_none()) {
      const Value* found = object.dict().Find(key.is_string() ? key.str() : ToText(key));
      if (found) return *found;
    }
  } else if (object.is_generator()) {
    // Jinja2's getitem turns a TypeError of the subscription into an undefined value.
    return Value::Undefined("'generator' object is not subscriptable");
  } else if ((object.is_list() || object.is_string()) && key.IsInteger()) {
    const std::vector<std::string> chars =
        object.is_string() ? CodePoints(object.str()) : std::vector<std::string>();
    const int64_t size = object.is_list() ? static_cast<int64_t>(object.list().size())
                                          : static_cast<int64_t>(chars.size());
    const int64_t i = key.integer() < 0 ? key.integer() + size : key.integer();
    if (i >= 0 && i < size) {
      if (object.is_list()) return object.list()[static_cast<size_t>(i)];
      return Value::Str(chars[static_cast<size_t>(i)]);
    }
    return Value::Undefined(
        absl::StrCat("'", object.TypeName(), " object' has no element ", key.integer()));
  }
  if (key.is_string()) {
    if (auto method = BoundMethod(object, key.str())) return *method;
    if (object.is_dict() && object.dict().is_namespace) {
      // Namespace objects are not subscriptable; Jinja2 falls back to the attribute.
      const Value* found = object.dict().Find(key.str());
      if (found) return *found;
    }
    return Value::Undefined(absl::StrCat("'", object.is_dict() ? "dict" : object.TypeName(),
                                         " object' has no attribute '", key.str(), "'"));
  }
  return Value::Undefined(
      absl::StrCat("'", object.TypeName(), " object' has no element ", Repr(key)));
}

bool Renderer::HasTest(const std::string& name) const { return FindTest(name) != nullptr; }

absl::StatusOr<Value> Renderer::ApplyFilter(const std::string& name, const Value& subject,
                                            CallArgs args) {
  FilterFunction filter = FindFilter(name);
  if (filter == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template error: no filter named '", name, "'"));
  }
  return filter(*this, subject, args);
}

absl::StatusOr<bool> Renderer::ApplyTest(const std::string& name, const Value& subject,
                                         CallArgs args) {
  TestFunction test = FindTest(name);
  if (test == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template error: no test named '", name, "'"));
  }
  return test(*this, subject, args);
}

}  // namespace attnscope::jinja
