// Values of the Jinja template language as Python gives them to Jinja2: undefined, None, bool,
// int, float, str, list/tuple, dict, and callables (macros, loop.cycle, globals). Strings and
// containers are shared and immutable once built (the sandbox transformers uses forbids
// mutation), except namespace() objects, which `{% set ns.attr %}` writes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attnscope::jinja {

// Bounds on every value a template builds (the rendered output has its own cap).
inline constexpr size_t kMaxStringBytes = 64u << 20;
inline constexpr size_t kMaxListItems = 1u << 20;
// Bytes of strings and list cells one render may create in total (copies are shared, so this
// bounds both memory and work).
inline constexpr size_t kMaxRenderAllocation = size_t{1} << 30;

class Value;
using List = std::vector<Value>;
struct Dict;
class Renderer;
struct CallArgs;

using NativeFunction = std::function<absl::StatusOr<Value>(Renderer&, CallArgs&)>;

struct Callable {
  std::string name;
  NativeFunction call;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kCallable };

  Value() = default;  // undefined
  static Value Undefined(std::string hint);
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double d);
  static Value Str(std::string s);
  static Value MakeList(List items, bool tuple = false);
  // What Jinja2's select/map/unique/items/reverse return: a one-pass iterator. It is always
  // true, has no len(), and cannot be subscripted or reversed; |list turns it into a list.
  static Value MakeGenerator(List items);
  static Value MakeDict(std::shared_ptr<Dict> dict);
  static Value MakeDict();
  static Value Function(std::string name, NativeFunction fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_callable() const { return kind_ == Kind::kCallable; }
  bool is_tuple() const { return kind_ == Kind::kList && tuple_; }
  bool is_generator() const { return kind_ == Kind::kList && generator_; }
  // Python numbers: bool is an int subclass.
  bool IsNumber() const {
    return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool;
  }
  bool IsInteger() const { return kind_ == Kind::kInt || kind_ == Kind::kBool; }

  bool boolean() const { return boolean_; }
  int64_t integer() const { return kind_ == Kind::kBool ? (boolean_ ? 1 : 0) : integer_; }
  double real() const { return kind_ == Kind::kFloat ? real_ : static_cast<double>(integer()); }
  const std::string& str() const;  // kString text; for undefined, the hint
  const List& list() const;
  Dict& dict() const { return *dict_; }
  const std::shared_ptr<Dict>& dict_ptr() const { return dict_; }
  const Callable& callable() const { return *callable_; }

  bool Truthy() const;
  // Python's type name, as error messages say it ("str", "dict", "NoneType").
  std::string TypeName() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool boolean_ = false;
  bool tuple_ = false;
  bool generator_ = false;
  int64_t integer_ = 0;
  double real_ = 0;
  std::shared_ptr<const std::string> text_;
  std::shared_ptr<const List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<const Callable> callable_;
};

// A Python dict with string keys in insertion order.
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;  // namespace(): `{% set ns.attr = ... %}` may write it
  const Value* Find(const std::string& key) const;
  void Set(const std::string& key, Value value);
};

// Arguments of a call: positional, then keyword, in source order.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // The argument named `name` (keyword) or at `index` (positional); nullptr if absent. Marks
  // it used, so Unused() can name an argument the callee does not take.
  const Value* Get(size_t index, const char* name);
  std::string Unused() const;
  std::vector<bool> used_positional, used_keyword;
};

// Python's str(value), as {{ value }} prints it.
std::string ToText(const Value& v);
// Python's repr(value).
std::string Repr(const Value& v);
// Python's repr of a float: shortest round-trip digits ("0.1", "1e+20", "5e-324").
std::string FloatRepr(double d);
// Python's ==.
bool Equal(const Value& a, const Value& b);
// Python's <, as sort() uses it: -1, 0, 1, or TypeError for unorderable types.
absl::StatusOr<int> Compare(const Value& a, const Value& b);
// Code points of a UTF-8 string (Python's len of a str).
size_t CodePointCount(const std::string& s);
// The code points of s as separate UTF-8 strings.
std::vector<std::string> CodePoints(const std::string& s);

// Errors as Jinja2 raises them; the message names the Python exception type.
absl::Status TypeError(const std::string& what);
absl::Status UndefinedError(const Value& undefined);
absl::Status SizeError(const std::string& what, size_t size, size_t limit);

}  // namespace attnscope::jinja
