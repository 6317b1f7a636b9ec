#include "server/tokenizer/jinja/template.h"

#include "server/tokenizer/jinja/parser.h"

namespace attnscope::jinja {

absl::StatusOr<Template> Template::Parse(const std::string& source) {
  auto body = ParseTemplate(source);
  if (!body.ok()) return body.status();
  Template parsed;
  parsed.body_ = std::make_shared<const Body>(std::move(*body));
  return parsed;
}

absl::StatusOr<std::string> Template::Render(std::vector<std::pair<std::string, Value>> globals,
                                             const RenderOptions& options) const {
  Renderer renderer(std::move(globals), options);
  return renderer.Render(*body_);
}

}  // namespace attnscope::jinja
