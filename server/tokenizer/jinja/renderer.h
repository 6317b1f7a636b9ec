// Renders a parsed template with Jinja2's semantics: scopes (for and macro bodies are their own
// scope; if is not), the loop object, macros, namespaces, undefined values that raise where
// Jinja2's do, and bounds on time (loop iterations, call depth) and memory (every string and
// list a template builds, and the output).
#pragma once

#include <ctime>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer/jinja/ast.h"

namespace attnscope::jinja {

struct RenderOptions {
  size_t max_output_bytes = 64u << 20;
  int64_t max_loop_iterations = 1 << 22;
  int max_call_depth = 100;
  std::tm now{};               // what strftime_now() formats (transformers: the local clock)
  bool* clock_read = nullptr;  // set to true when the template calls strftime_now()
};

class Renderer {
 public:
  // `globals`: the template's arguments (messages, tools, add_generation_prompt, ...). The
  // builtin globals (range, dict, namespace, raise_exception, strftime_now) come underneath.
  Renderer(std::vector<std::pair<std::string, Value>> globals, RenderOptions options);

  absl::StatusOr<std::string> Render(const Body& body);

  // Accounts for `bytes` of newly built strings or list cells; ResourceExhausted past the
  // per-render budget or when one string is over kMaxStringBytes.
  absl::Status Charge(size_t bytes);
  absl::Status CheckString(size_t bytes);
  absl::Status CheckList(size_t items);

  absl::StatusOr<Value> Call(const Value& callee, CallArgs args);
  absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& subject, CallArgs args);
  absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& subject, CallArgs args);
  absl::StatusOr<Value> GetAttr(const Value& object, const std::string& name);
  absl::StatusOr<Value> GetItem(const Value& object, const Value& key);
  // The items a for loop visits: list/tuple items, dict keys, string characters; undefined is
  // empty. TypeError for anything else.
  absl::StatusOr<List> Iterate(const Value& v);
  const RenderOptions& options() const { return options_; }
  bool HasTest(const std::string& name) const;

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  using Frame = std::unordered_map<std::string, Value>;

  absl::Status RenderBody(const Body& body, Flow* flow, std::string* out);
  absl::Status RenderNode(const Node& node, Flow* flow, std::string* out);
  absl::Status RenderFor(const Node& node, std::string* out);
  absl::Status Assign(const Target& target, const Value& value);
  Value DefineMacro(const NodePtr& node);
  absl::StatusOr<Value> CallMacro(const Node& macro, CallArgs& args);

  Value Lookup(const std::string& name) const;
  absl::StatusOr<Value> Eval(const Expr& e);
  absl::StatusOr<CallArgs> EvalArgs(const Expr& e, size_t first);
  absl::StatusOr<Value> EvalBinary(const Expr& e);
  // A {% filter %} / {% set x | f %} chain (innermost subject null) applied to `subject`.
  absl::StatusOr<Value> ApplyChain(const Expr& chain, const Value& subject);
  absl::StatusOr<Value> EvalCompare(const Expr& e);
  absl::StatusOr<Value> EvalSlice(const Expr& e);

  std::vector<Frame> frames_;  // [0]: globals and top-level sets; then for/macro/with scopes
  RenderOptions options_;
  size_t allocated_ = 0;
  int64_t iterations_ = 0;
  int call_depth_ = 0;
  size_t output_bytes_ = 0;
};

// Python binary operators (+ - * / // % ** ~) and `in`, with Python's semantics, 64-bit
// integers whose overflow is refused, and size limits charged to the renderer.
absl::StatusOr<Value> BinaryOp(Renderer& r, const std::string& op, const Value& a, const Value& b);
absl::StatusOr<bool> Contains(const Value& container, const Value& item);

}  // namespace attnscope::jinja
