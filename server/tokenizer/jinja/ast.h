// The syntax tree of a parsed template: expressions and statements, as Jinja2's nodes.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "server/tokenizer/jinja/value.h"

namespace attnscope::jinja {

struct Expr;
using ExprPtr = std::shared_ptr<const Expr>;

struct Expr {
  enum class Kind {
    kLiteral,  // literal
    kName,     // name
    kAttr,     // args[0].name
    kItem,     // args[0][args[1]]
    kSlice,    // args[0][args[1]:args[2]:args[3]] (null parts omitted)
    kCall,     // args[0](args[1:], kwargs)
    kFilter,   // args[0] | name(args[1:], kwargs)
    kTest,     // args[0] is [not] name(args[1:], kwargs)
    kUnary,    // name in {not, -, +}
    kBinary,   // args[0] name args[1]; name in {and, or, +, -, *, /, //, %, **, ~}
    kCompare,  // args[0] ops[0] args[1] ops[1] args[2] ... (Python chains them)
    kTernary,  // args[1] if args[0] else args[2] (args[2] null: undefined)
    kList,
    kTuple,
    kDict  // args alternate key, value
  } kind;
  Value literal;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // kCompare
  bool negated = false;          // `is not`
};

// Left side of `set`, `for` and `with`: a name, `ns.attr`, or a tuple of targets.
struct Target {
  std::string name;
  std::string attribute;  // set ns.attribute
  std::vector<Target> items;
  bool is_tuple = false;
};

struct Node;
using NodePtr = std::shared_ptr<const Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    kText,
    kOutput,
    kIf,
    kFor,
    kSet,    // target = expr, or target from the rendered body (| filter)
    kMacro,  // name(params) body
    kBreak,
    kContinue,
    kFilter,  // {% filter f %}body{% endfilter %}: expr is the filter chain over null
    kWith,    // {% with a = x %}body{% endwith %}
    kScope    // body in its own scope-less block ({% generation %})
  } kind;
  std::string text;
  ExprPtr expr;                                    // output / set value / for iterable
  std::vector<std::pair<ExprPtr, Body>> branches;  // if/elif
  Body body, else_body;
  Target target;
  ExprPtr condition;                                    // for ... if condition
  std::string name;                                     // macro name
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro params / with assignments
  std::vector<Target> with_targets;
  bool set_block = false;  // {% set x %}...{% endset %}
};

}  // namespace attnscope::jinja
