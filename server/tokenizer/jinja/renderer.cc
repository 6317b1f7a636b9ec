#include "server/tokenizer/jinja/renderer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/tokenizer/jinja/builtins.h"

namespace attnscope::jinja {

Renderer::Renderer(std::vector<std::pair<std::string, Value>> globals, RenderOptions options)
    : options_(options) {
  frames_.emplace_back();
  for (auto& [name, value] : Globals()) frames_[0][name] = value;
  for (auto& [name, value] : globals) frames_[0][name] = std::move(value);
}

absl::Status Renderer::Charge(size_t bytes) {
  if (bytes > kMaxRenderAllocation - std::min(allocated_, kMaxRenderAllocation)) {
    return SizeError("memory the template builds in one render", allocated_ + bytes,
                     kMaxRenderAllocation);
  }
  allocated_ += bytes;
  return absl::OkStatus();
}

absl::Status Renderer::CheckString(size_t bytes) {
  if (bytes > kMaxStringBytes) return SizeError("a string", bytes, kMaxStringBytes);
  return Charge(bytes);
}

absl::Status Renderer::CheckList(size_t items) {
  if (items > kMaxListItems) return SizeError("a list's length", items, kMaxListItems);
  return Charge(items * sizeof(Value));
}

absl::StatusOr<std::string> Renderer::Render(const Body& body) {
  std::string out;
  Flow flow = Flow::kNormal;
  absl::Status status = RenderBody(body, &flow, &out);
  if (!status.ok()) return status;
  return out;
}

absl::Status Renderer::RenderBody(const Body& body, Flow* flow, std::string* out) {
  for (const auto& node : body) {
    absl::Status status = RenderNode(*node, flow, out);
    if (!status.ok()) return status;
    if (out->size() > options_.max_output_bytes) {
      return SizeError("the chat template output", out->size(), options_.max_output_bytes);
    }
    if (*flow != Flow::kNormal) return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Renderer::RenderNode(const Node& node, Flow* flow, std::string* out) {
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
      if (!node.set_block) {
        auto value = Eval(*node.expr);
        if (!value.ok()) return value.status();
        return Assign(node.target, *value);
      }
      std::string captured;
      Flow inner = Flow::kNormal;
      frames_.emplace_back();  // assignments inside the block stay inside it, as in Jinja2
      absl::Status status = RenderBody(node.body, &inner, &captured);
      frames_.pop_back();
      if (!status.ok()) return status;
      Value value = Value::Str(std::move(captured));
      if (node.expr) {  // {% set x | filter %}
        auto filtered = ApplyChain(*node.expr, value);
        if (!filtered.ok()) return filtered.status();
        value = *filtered;
      }
      return Assign(node.target, value);
    }
    case Node::Kind::kMacro: {
      // The node lives as long as the template; macros are called during this render only.
      NodePtr self(std::shared_ptr<const Node>(), &node);
      frames_.back()[node.name] = DefineMacro(self);
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
    case Node::Kind::kFilter: {
      std::string captured;
      Flow inner = Flow::kNormal;
      frames_.emplace_back();  // assignments inside the block stay inside it, as in Jinja2
      absl::Status status = RenderBody(node.body, &inner, &captured);
      frames_.pop_back();
      if (!status.ok()) return status;
      auto filtered = ApplyChain(*node.expr, Value::Str(std::move(captured)));
      if (!filtered.ok()) return filtered.status();
      *out += ToText(*filtered);
      return absl::OkStatus();
    }
    case Node::Kind::kWith: {
      std::vector<Value> values;
      for (const auto& [name, expr] : node.params) {
        auto value = Eval(*expr);
        if (!value.ok()) return value.status();
        values.push_back(*value);
      }
      frames_.emplace_back();
      for (size_t k = 0; k < values.size(); ++k) frames_.back()[node.params[k].first] = values[k];
      absl::Status status = RenderBody(node.body, flow, out);
      frames_.pop_back();
      return status;
    }
    case Node::Kind::kScope:
      return RenderBody(node.body, flow, out);
  }
  return absl::OkStatus();
}

absl::Status Renderer::Assign(const Target& target, const Value& value) {
  if (!target.attribute.empty()) {
    const Value object = Lookup(target.name);
    if (!object.is_dict() || !object.dict().is_namespace) {
      return absl::InvalidArgumentError(
          absl::StrCat("chat template error: cannot assign attribute on non-namespace object '",
                       target.name, "'"));
    }
    object.dict().Set(target.attribute, value);
    return absl::OkStatus();
  }
  if (!target.is_tuple) {
    frames_.back()[target.name] = value;
    return absl::OkStatus();
  }
  auto items = Iterate(value);
  if (!items.ok()) return items.status();
  if (items->size() != target.items.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chat template value error: ",
        items->size() < target.items.size() ? "not enough" : "too many",
        " values to unpack (expected ", target.items.size(), ", got ", items->size(), ")"));
  }
  for (size_t k = 0; k < items->size(); ++k) {
    absl::Status status = Assign(target.items[k], (*items)[k]);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<List> Renderer::Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kList:
      return v.list();
    case Value::Kind::kDict: {
      if (v.dict().is_namespace) return TypeError("'Namespace' object is not iterable");
      List keys;
      for (const auto& [key, item] : v.dict().items) keys.push_back(Value::Str(key));
      return keys;
    }
    case Value::Kind::kString: {
      List chars;
      for (auto& c : CodePoints(v.str())) chars.push_back(Value::Str(std::move(c)));
      absl::Status status = CheckList(chars.size());
      if (!status.ok()) return status;
      return chars;
    }
    case Value::Kind::kUndefined:
      return List();
    default:
      return TypeError(absl::StrCat("'", v.TypeName(), "' object is not iterable"));
  }
}

absl::Status Renderer::RenderFor(const Node& node, std::string* out) {
  auto iterable = Eval(*node.expr);
  if (!iterable.ok()) return iterable.status();
  auto all = Iterate(*iterable);
  if (!all.ok()) return all.status();
  List items;
  if (node.condition) {
    for (const Value& item : *all) {
      frames_.emplace_back();
      absl::Status status = Assign(node.target, item);
      auto keep = status.ok() ? Eval(*node.condition) : absl::StatusOr<Value>(status);
      frames_.pop_back();
      if (!keep.ok()) return keep.status();
      if (keep->Truthy()) items.push_back(item);
    }
  } else {
    items = std::move(*all);
  }
  if (items.empty()) {
    Flow flow = Flow::kNormal;
    return RenderBody(node.else_body, &flow, out);
  }
  const int64_t length = static_cast<int64_t>(items.size());
  auto last_changed = std::make_shared<std::optional<List>>();
  for (int64_t i = 0; i < length; ++i) {
    if (++iterations_ > options_.max_loop_iterations) {
      return SizeError("loop iterations in one render", static_cast<size_t>(iterations_),
                       static_cast<size_t>(options_.max_loop_iterations));
    }
    frames_.emplace_back();
    auto loop = std::make_shared<Dict>();
    loop->Set("index", Value::Int(i + 1));
    loop->Set("index0", Value::Int(i));
    loop->Set("revindex", Value::Int(length - i));
    loop->Set("revindex0", Value::Int(length - i - 1));
    loop->Set("first", Value::Bool(i == 0));
    loop->Set("last", Value::Bool(i == length - 1));
    loop->Set("length", Value::Int(length));
    loop->Set("depth", Value::Int(1));
    loop->Set("depth0", Value::Int(0));
    loop->Set("previtem", i > 0 ? items[i - 1] : Value::Undefined("there is no previous item"));
    loop->Set("nextitem",
              i + 1 < length ? items[i + 1] : Value::Undefined("there is no next item"));
    loop->Set("cycle", Value::Function("loop.cycle", [i](Renderer&, CallArgs& args) {
                if (args.positional.empty()) {
                  return absl::StatusOr<Value>(TypeError("no items for cycling given"));
                }
                return absl::StatusOr<Value>(
                    args.positional[static_cast<size_t>(i) % args.positional.size()]);
              }));
    loop->Set("changed", Value::Function("loop.changed", [last_changed](Renderer&, CallArgs& args) {
                List now = args.positional;
                const bool changed = !last_changed->has_value() ||
                                     !Equal(Value::MakeList(**last_changed), Value::MakeList(now));
                *last_changed = now;
                return absl::StatusOr<Value>(Value::Bool(changed));
              }));
    frames_.back()["loop"] = Value::MakeDict(loop);
    absl::Status status = Assign(node.target, items[i]);
    Flow flow = Flow::kNormal;
    if (status.ok()) status = RenderBody(node.body, &flow, out);
    frames_.pop_back();
    if (!status.ok()) return status;
    if (flow == Flow::kBreak) break;
  }
  return absl::OkStatus();
}

Value Renderer::DefineMacro(const NodePtr& node) {
  return Value::Function(node->name,
                         [node](Renderer& r, CallArgs& args) { return r.CallMacro(*node, args); });
}

absl::StatusOr<Value> Renderer::CallMacro(const Node& macro, CallArgs& args) {
  if (call_depth_ >= options_.max_call_depth) {
    return SizeError("macro call depth", static_cast<size_t>(call_depth_) + 1,
                     static_cast<size_t>(options_.max_call_depth));
  }
  // A macro sees the template's globals and its own arguments, not the caller's locals.
  std::vector<Frame> saved(std::make_move_iterator(frames_.begin() + 1),
                           std::make_move_iterator(frames_.end()));
  frames_.resize(1);
  frames_.emplace_back();
  absl::Status status;
  List varargs;
  auto kwargs = std::make_shared<Dict>();
  std::vector<bool> bound(macro.params.size(), false);
  for (size_t k = 0; k < args.positional.size(); ++k) {
    if (k < macro.params.size()) {
      frames_.back()[macro.params[k].first] = args.positional[k];
      bound[k] = true;
    } else {
      varargs.push_back(args.positional[k]);
    }
  }
  for (auto& [key, value] : args.keyword) {
    bool matched = false;
    for (size_t k = 0; k < macro.params.size(); ++k) {
      if (macro.params[k].first != key) continue;
      if (bound[k]) {
        status = TypeError(
            absl::StrCat("macro '", macro.name, "' got multiple values for argument '", key, "'"));
      }
      frames_.back()[key] = value;
      bound[k] = matched = true;
    }
    if (!matched) kwargs->Set(key, value);
  }
  for (size_t k = 0; k < macro.params.size() && status.ok(); ++k) {
    if (bound[k]) continue;
    const auto& [name, default_value] = macro.params[k];
    if (!default_value) {
      frames_.back()[name] =
          Value::Undefined(absl::StrCat("parameter '", name, "' was not provided"));
      continue;
    }
    auto value = Eval(*default_value);
    if (!value.ok()) {
      status = value.status();
      break;
    }
    frames_.back()[name] = *value;
  }
  frames_.back()["varargs"] = Value::MakeList(std::move(varargs), true);
  frames_.back()["kwargs"] = Value::MakeDict(kwargs);
  std::string out;
  if (status.ok()) {
    ++call_depth_;
    Flow flow = Flow::kNormal;
    status = RenderBody(macro.body, &flow, &out);
    --call_depth_;
  }
  frames_.resize(1);
  for (auto& frame : saved) frames_.push_back(std::move(frame));
  if (!status.ok()) return status;
  return Value::Str(std::move(out));
}

Value Renderer::Lookup(const std::string& name) const {
  for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
    auto found = it->find(name);
    if (found != it->end()) return found->second;
  }
  return Value::Undefined(absl::StrCat("'", name, "' is undefined"));
}

absl::StatusOr<CallArgs> Renderer::EvalArgs(const Expr& e, size_t first) {
  CallArgs args;
  for (size_t k = first; k < e.args.size(); ++k) {
    auto v = Eval(*e.args[k]);
    if (!v.ok()) return v.status();
    args.positional.push_back(std::move(*v));
  }
  for (const auto& [key, expr] : e.kwargs) {
    auto v = Eval(*expr);
    if (!v.ok()) return v.status();
    args.keyword.emplace_back(key, std::move(*v));
  }
  return args;
}

absl::StatusOr<Value> Renderer::Call(const Value& callee, CallArgs args) {
  if (callee.is_undefined()) return UndefinedError(callee);
  if (!callee.is_callable()) {
    return TypeError(absl::StrCat("'", callee.TypeName(), "' object is not callable"));
  }
  return callee.callable().call(*this, args);
}

absl::StatusOr<Value> Renderer::Eval(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.literal;
    case Expr::Kind::kName:
      return Lookup(e.name);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      auto items = EvalArgs(e, 0);
      if (!items.ok()) return items.status();
      absl::Status status = CheckList(items->positional.size());
      if (!status.ok()) return status;
      return Value::MakeList(std::move(items->positional), e.kind == Expr::Kind::kTuple);
    }
    case Expr::Kind::kDict: {
      auto items = EvalArgs(e, 0);
      if (!items.ok()) return items.status();
      Value dict = Value::MakeDict();
      for (size_t k = 0; k + 1 < items->positional.size(); k += 2) {
        const Value& key = items->positional[k];
        if (key.is_list() && !key.is_tuple()) return TypeError("unhashable type: 'list'");
        if (key.is_dict()) return TypeError("unhashable type: 'dict'");
        dict.dict().Set(ToText(key), items->positional[k + 1]);
      }
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
      auto key = Eval(*e.args[1]);
      if (!key.ok()) return key;
      return GetItem(*object, *key);
    }
    case Expr::Kind::kSlice:
      return EvalSlice(e);
    case Expr::Kind::kCall: {
      auto callee = Eval(*e.args[0]);
      if (!callee.ok()) return callee;
      auto args = EvalArgs(e, 1);
      if (!args.ok()) return args.status();
      return Call(*callee, std::move(*args));
    }
    case Expr::Kind::kFilter: {
      auto subject = Eval(*e.args[0]);
      if (!subject.ok()) return subject;
      auto args = EvalArgs(e, 1);
      if (!args.ok()) return args.status();
      return ApplyFilter(e.name, *subject, std::move(*args));
    }
    case Expr::Kind::kTest: {
      if (!HasTest(e.name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("chat template error: no test named '", e.name, "'"));
      }
      auto subject = Eval(*e.args[0]);
      if (!subject.ok()) return subject;
      auto args = EvalArgs(e, 1);
      if (!args.ok()) return args.status();
      auto result = ApplyTest(e.name, *subject, std::move(*args));
      if (!result.ok()) return result.status();
      return Value::Bool(*result != e.negated);
    }
    case Expr::Kind::kUnary: {
      auto operand = Eval(*e.args[0]);
      if (!operand.ok()) return operand;
      if (e.name == "not") return Value::Bool(!operand->Truthy());
      if (operand->is_undefined()) return UndefinedError(*operand);
      if (operand->IsInteger()) {
        if (e.name == "+") return Value::Int(operand->integer());
        if (operand->integer() == INT64_MIN) return TypeError("integer overflow in unary -");
        return Value::Int(-operand->integer());
      }
      if (operand->is_float())
        return Value::Float(e.name == "-" ? -operand->real() : operand->real());
      return TypeError(
          absl::StrCat("bad operand type for unary ", e.name, ": '", operand->TypeName(), "'"));
    }
    case Expr::Kind::kTernary: {
      auto condition = Eval(*e.args[0]);
      if (!condition.ok()) return condition;
      if (condition->Truthy()) return Eval(*e.args[1]);
      if (!e.args[2]) return Value::Undefined("the inline if expression evaluated to false");
      return Eval(*e.args[2]);
    }
    case Expr::Kind::kBinary:
      return EvalBinary(e);
    case Expr::Kind::kCompare:
      return EvalCompare(e);
  }
  return absl::InternalError("unknown expression");
}

absl::StatusOr<Value> Renderer::ApplyChain(const Expr& chain, const Value& subject) {
  Value input = subject;
  if (chain.args[0]) {
    auto inner = ApplyChain(*chain.args[0], subject);
    if (!inner.ok()) return inner;
    input = *inner;
  }
  auto args = EvalArgs(chain, 1);
  if (!args.ok()) return args.status();
  return ApplyFilter(chain.name, input, std::move(*args));
}

absl::StatusOr<Value> Renderer::EvalBinary(const Expr& e) {
  auto left = Eval(*e.args[0]);
  if (!left.ok()) return left;
  if (e.name == "and") return left->Truthy() ? Eval(*e.args[1]) : left;
  if (e.name == "or") return left->Truthy() ? left : Eval(*e.args[1]);
  auto right = Eval(*e.args[1]);
  if (!right.ok()) return right;
  return BinaryOp(*this, e.name, *left, *right);
}

absl::StatusOr<Value> Renderer::EvalCompare(const Expr& e) {
  auto left = Eval(*e.args[0]);
  if (!left.ok()) return left;
  Value a = *left;
  for (size_t k = 0; k < e.ops.size(); ++k) {
    auto right = Eval(*e.args[k + 1]);
    if (!right.ok()) return right;
    const std::string& op = e.ops[k];
    bool result;
    if (op == "==" || op == "!=") {
      result = Equal(a, *right) == (op == "==");
    } else if (op == "in" || op == "not in") {
      auto found = Contains(*right, a);
      if (!found.ok()) return found.status();
      result = *found == (op == "in");
    } else {
      auto order = Compare(a, *right);
      if (!order.ok()) {
        return TypeError(absl::StrCat("'", op, "' not supported between instances of '",
                                      a.TypeName(), "' and '", right->TypeName(), "'"));
      }
      result = op == "<"    ? *order < 0
               : op == ">"  ? *order > 0
               : op == "<=" ? *order <= 0
                            : *order >= 0;
    }
    if (!result) return Value::Bool(false);
    a = *right;
  }
  return Value::Bool(true);
}

absl::StatusOr<Value> Renderer::EvalSlice(const Expr& e) {
  auto object = Eval(*e.args[0]);
  if (!object.ok()) return object;
  int64_t bounds[3] = {0, 0, 1};
  bool given[3] = {false, false, false};
  for (int k = 0; k < 3; ++k) {
    if (!e.args[k + 1]) continue;
    auto v = Eval(*e.args[k + 1]);
    if (!v.ok()) return v;
    if (v->is_none()) continue;
    if (!v->IsInteger()) {
      return TypeError("slice indices must be integers or None or have an __index__ method");
    }
    bounds[k] = v->integer();
    given[k] = true;
  }
  const int64_t step = bounds[2];
  if (step == 0)
    return absl::InvalidArgumentError("chat template value error: slice step cannot be zero");
  if (object->is_undefined()) return UndefinedError(*object);
  std::vector<std::string> chars;
  const bool is_string = object->is_string();
  if (is_string) {
    chars = CodePoints(object->str());
  } else if (object->is_dict()) {
    return TypeError("unhashable type: 'slice'");
  } else if (!object->is_list() || object->is_generator()) {
    // Jinja2's getitem: a subscription that raises TypeError gives an undefined value.
    return Value::Undefined(absl::StrCat("'", object->TypeName(), "' object is not subscriptable"));
  }
  const int64_t n =
      is_string ? static_cast<int64_t>(chars.size()) : static_cast<int64_t>(object->list().size());
  auto clamp = [&](int64_t v, bool is_given, int64_t fallback) {
    if (!is_given) return fallback;
    if (v < 0) v = v < -n ? (step > 0 ? 0 : -1) : v + n;
    if (step > 0) return std::clamp<int64_t>(v, 0, n);
    return std::clamp<int64_t>(v, -1, n - 1);
  };
  const int64_t start = clamp(bounds[0], given[0], step > 0 ? 0 : n - 1);
  const int64_t stop = clamp(bounds[1], given[1], step > 0 ? n : -1);
  std::string text;
  List items;
  for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
    if (is_string) {
      text += chars[static_cast<size_t>(i)];
    } else {
      items.push_back(object->list()[static_cast<size_t>(i)]);
    }
    if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
    i += step;
  }
  if (is_string) return Value::Str(std::move(text));
  absl::Status status = CheckList(items.size());
  if (!status.ok()) return status;
  return Value::MakeList(std::move(items), object->is_tuple());
}

}  // namespace attnscope::jinja
