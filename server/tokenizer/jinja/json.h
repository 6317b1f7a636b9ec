// JSON in and out of template values: json.dumps as transformers' tojson calls it, and JSON
// documents (messages, tools, extra arguments) as the Python objects transformers would pass.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "server/tokenizer/jinja/value.h"

namespace attnscope::jinja {

class Renderer;

// json.dumps(value, ensure_ascii, indent, separators, sort_keys).
struct JsonOptions {
  bool ensure_ascii = false;
  bool has_indent = false;
  std::string indent;  // per level, when has_indent
  std::string item_separator = ", ", key_separator = ": ";
  bool sort_keys = false;
};
absl::StatusOr<std::string> ToJson(Renderer& r, const Value& v, const JsonOptions& options);

// Nesting deeper than this is refused (stack and cost bound).
inline constexpr int kMaxJsonDepth = 64;

// Parses JSON text into a value; `what` names the input in error messages. Integers beyond 64
// bits are refused; the text's size is the caller's to bound.
absl::StatusOr<Value> ValueFromJsonText(const std::string& text, const std::string& what);

}  // namespace attnscope::jinja
