// A parsed Jinja template. Parse() fails only on syntax errors; unknown names, filters and
// tests fail when a render evaluates them, as in Jinja2.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer/jinja/ast.h"
#include "server/tokenizer/jinja/renderer.h"

namespace attnscope::jinja {

class Template {
 public:
  static absl::StatusOr<Template> Parse(const std::string& source);
  absl::StatusOr<std::string> Render(std::vector<std::pair<std::string, Value>> globals,
                                     const RenderOptions& options) const;

 private:
  std::shared_ptr<const Body> body_;
};

}  // namespace attnscope::jinja
