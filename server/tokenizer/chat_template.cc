#include "server/tokenizer/tokenizer.h"
namespace attnscope {
struct ChatTemplateProgram {};
absl::StatusOr<ChatTemplate> ChatTemplate::Compile(const std::string& source) {
  return absl::UnimplementedError("chat templates are not implemented yet");
}
absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>&, bool,
                                                 const std::string&, const std::string&) const {
  return absl::UnimplementedError("chat templates are not implemented yet");
}
absl::StatusOr<ChatTemplateConfig> LoadChatTemplateConfig(const std::string& dir) {
  return absl::UnimplementedError("chat templates are not implemented yet");
}
}  // namespace attnscope
